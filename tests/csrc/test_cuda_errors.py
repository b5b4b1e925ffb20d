"""fastdiff._C turns a bad argument into ValueError or an invalid-argument RuntimeError before any
launch, and a failed CUDA call into a RuntimeError naming the op and carrying CUDA's message.
Runs on any machine where the module was built; without a GPU every launch fails in CUDA."""
import pytest
import torch

C = pytest.importorskip("fastdiff._C")


def test_bad_dtype_code_is_a_value_error():
    with pytest.raises(ValueError, match=r"fastdiff._C.cfg_combine: dtype code must be 0 \(f16\), 1 \(bf16\) or 2"):
        C.cfg_combine(0, 0, 0, 16, 7, 1.0, 0)
    with pytest.raises(ValueError, match=r"fastdiff._C.group_norm: dtype code must be"):
        C.group_norm(0, 0, 0, 0, 2, 32, 16, 4, 1e-5, True, False, 0, 5, 0, 0, 0)


@pytest.mark.parametrize("call, message", [
    (lambda: C.cfg_combine(0, 0, 0, -1, 0, 1.0, 0), "cfg_combine: invalid argument: n must be >= 0"),
    (lambda: C.sampler_step(0, 0, 0, 0, 0, 0, 0, -4, 0, (1.0,) * 6, 0, None, 0),
     "sampler_step: invalid argument: n must be >= 0"),
    (lambda: C.sampler_step(0, 0, 0, 0, 0, 0, 0, -4, 0, (1.0,) * 6, 0, 7.5, 0),
     "sampler_step: invalid argument: n must be >= 0"),
    (lambda: C.group_norm(0, 0, 0, 0, 2, 30, 16, 4, 1e-5, True, False, 0, 0, 0, 0, 0),
     "group_norm: invalid argument: expected .* groups dividing c"),
    # weight and bias are read in x's dtype or in fp32
    (lambda: C.group_norm(0, 0, 0, 0, 2, 32, 16, 4, 1e-5, True, False, 0, 1, 0, 0, 0),
     "group_norm: invalid argument: weight_dtype must be dtype or f32"),
    (lambda: C.group_norm(0, 0, 0, 0, 2, 32, 16, 4, 1e-5, True, False, 0, 0, 0, 64, 0),
     "group_norm: invalid argument: workspace is null"),
    (lambda: C.attention(0, 0, 0, 0, (1, 8, 64, 77, 200), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1.0, 0, 0),
     "attention: invalid argument: .*head_dim <= 160"),
    (lambda: C.attention(0, 0, 0, 0, (1, 8, 64, 0, 64), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1.0, 0, 0),
     "attention: invalid argument: expected seq_k >= 1"),
    (lambda: C.attention(0, 0, 0, 0, (1, 8, 64, 2 ** 31, 64), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1.0, 0, 0),
     "attention: invalid argument: sequences must be shorter than 2\\^31"),
    (lambda: C.attention(0, 0, 0, 0, (1, 8, 64, 77, 64), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1.0, 2, 0),
     "attention: invalid argument: dtype must be f16 or bf16"),
])
def test_invalid_arguments_are_named(call, message):
    with pytest.raises(RuntimeError, match="fastdiff." + message):
        call()


def test_empty_input_is_a_no_op():
    C.cfg_combine(0, 0, 0, 0, 0, 1.0, 0)
    C.group_norm(0, 0, 0, 0, 0, 32, 16, 4, 1e-5, True, False, 0, 2, 0, 0, 0)
    C.attention(0, 0, 0, 0, (0, 8, 64, 77, 64), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1.0, 0, 0)


def test_api_version_and_attention_limits():
    """The header's constants reach Python, and the cuda backend's SUPPORT is exactly them: head
    dims 1..160, any key count below 2^31, fp16 and bf16."""
    assert C.API_VERSION == 2
    assert C.ATTENTION_HEAD_DIMS == (1, 160)
    assert C.ATTENTION_MAX_SEQ_K == 2 ** 31 - 1
    assert C.ATTENTION_DTYPES == (0, 1)
    from fastdiff import cuda_ops

    support = cuda_ops.SUPPORT["attention"]
    assert support.dtypes == {torch.float16, torch.bfloat16}
    assert support.head_dims == (1, 160) and support.max_seq_k == 2 ** 31 - 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a launch without a usable GPU")
def test_cuda_failure_carries_the_cuda_message():
    with pytest.raises(RuntimeError, match=r"fastdiff.cfg_combine: CUDA error: \S") as err:
        C.cfg_combine(0, 0, 0, 16, 0, 1.0, 0)
    assert "invalid argument" not in str(err.value)
    for call in (lambda: C.group_norm(0, 0, 0, 0, 2, 32, 16, 4, 1e-5, True, False, 0, 2, 0, 0, 0),
                 lambda: C.attention(0, 0, 0, 0, (1, 8, 64, 77, 64), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1.0, 0, 0)):
        with pytest.raises(RuntimeError, match=r"CUDA error: \S") as err:
            call()
        assert "invalid argument" not in str(err.value)
