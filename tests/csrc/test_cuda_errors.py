"""fastdiff._C turns a bad argument into ValueError or an invalid-argument RuntimeError before any
launch, and a failed CUDA call into a RuntimeError naming the op and carrying CUDA's message.
Runs on any machine where the module was built; without a GPU every launch fails in CUDA."""
import pytest
import torch

C = pytest.importorskip("fastdiff._C")


def test_bad_dtype_code_is_a_value_error():
    with pytest.raises(ValueError, match=r"fastdiff._C.cfg_combine: dtype code must be 0 \(f16\), 1 \(bf16\) or 2"):
        C.cfg_combine(0, 0, 0, 16, 7, 1.0, 0)


@pytest.mark.parametrize("call, message", [
    (lambda: C.cfg_combine(0, 0, 0, -1, 0, 1.0, 0), "cfg_combine: invalid argument: n must be >= 0"),
    (lambda: C.sampler_step(0, 0, 0, 0, 0, 0, 0, -4, 0, (1.0,) * 6, 0, False, 0.0, 0),
     "sampler_step: invalid argument: n must be >= 0"),
    (lambda: C.group_norm(0, 0, 0, 0, 2, 30, 16, 4, 1e-5, True, False, 0, 0, 0, 0),
     "group_norm: invalid argument: expected .* groups dividing c"),
    (lambda: C.attention(0, 0, 0, 0, (1, 8, 64, 77, 200), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1.0, 0, 0),
     "attention: invalid argument: .*head_dim <= 160"),
    (lambda: C.attention(0, 0, 0, 0, (1, 8, 64, 77, 64), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1.0, 2, 0),
     "attention: invalid argument: dtype must be f16 or bf16"),
])
def test_invalid_arguments_are_named(call, message):
    with pytest.raises(RuntimeError, match="fastdiff." + message):
        call()


def test_empty_input_is_a_no_op():
    C.cfg_combine(0, 0, 0, 0, 0, 1.0, 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a launch without a usable GPU")
def test_cuda_failure_carries_the_cuda_message():
    with pytest.raises(RuntimeError, match=r"fastdiff.cfg_combine: CUDA error: \S") as err:
        C.cfg_combine(0, 0, 0, 16, 0, 1.0, 0)
    assert "invalid argument" not in str(err.value)
