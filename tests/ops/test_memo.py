"""The per-signature memo of op calls (fastdiff.ops._common): a repeated call skips the checks and
the backend choice, so whatever those read must be part of the signature."""
import math
import sys

import pytest
import torch

from fastdiff import backends, ops, reference
from fastdiff.ops import _common


def _group_norm_args():
    return torch.randn(2, 8, 4, 4), torch.randn(8), torch.randn(8)


def test_a_repeated_call_still_checks_what_changed():
    x, w, b = _group_norm_args()
    ops.group_norm(x, 4, w, b, 1e-5)
    ops.group_norm(x, 4, w, b, 1e-5)  # memoised
    with pytest.raises(TypeError, match="num_groups must be an int"):
        ops.group_norm(x, True, w, b, 1e-5)
    with pytest.raises(ValueError, match="eps must be finite"):
        ops.group_norm(x, 4, w, b, math.nan)
    with pytest.raises(ValueError, match=r"weight must have shape \(8,\)"):
        ops.group_norm(x, 4, torch.randn(4), b, 1e-5)
    with pytest.raises(ValueError, match="is on meta"):
        ops.group_norm(x, 4, w.to("meta"), b, 1e-5)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        ops.group_norm(x, 4, [1.0] * 8, b, 1e-5)
    q = torch.randn(1, 6, 2, 8)
    ops.attention(q, q, q)
    with pytest.raises(ValueError, match="unit stride"):
        ops.attention(q, q, torch.randn(1, 6, 2, 16)[..., ::2])


def test_grad_mode_and_requires_grad_are_part_of_the_signature():
    x, w, b = _group_norm_args()
    w.requires_grad_()
    with torch.no_grad():
        y = ops.group_norm(x, 4, w, b)
        assert y.grad_fn is None
    y = ops.group_norm(x, 4, w, b)  # the same tensors, now differentiable
    y.sum().backward()
    assert w.grad is not None


def test_the_requested_backend_is_part_of_the_signature(monkeypatch):
    monkeypatch.setattr(backends, "_triton_interpret", lambda: False)
    x, w, b = _group_norm_args()
    ops.group_norm(x, 4, w, b)
    with ops.use_backend("triton"), pytest.raises(backends.BackendUnavailable, match="not cuda"):
        ops.group_norm(x, 4, w, b)


def test_sampler_step_checks_every_new_set_of_coefficients():
    x, m = torch.randn(1, 4, 4, 4), torch.randn(2, 4, 4, 4)
    coeffs = (0.9, 0.1, 0.8, 0.2, 0.0, 0.0)
    ops.sampler_step(x, m, coeffs, guidance_scale=5.0)
    with pytest.raises(ValueError, match=r"coeffs\[2\] must be finite"):
        ops.sampler_step(x, m, (0.9, 0.1, math.inf, 0.2, 0.0, 0.0), guidance_scale=5.0)
    with pytest.raises(TypeError, match="must be a real number"):
        ops.sampler_step(x, m, (0.9, 0.1, True, 0.2, 0.0, 0.0), guidance_scale=5.0)
    ints = (1, 0, 1, 0, 0, 0)  # accepted, as floats
    got = ops.sampler_step(x, m, ints, guidance_scale=5.0)
    want = reference.sampler_step(x, m, ints, guidance_scale=5.0)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_a_tensor_subclass_takes_the_custom_op(monkeypatch):
    class Tagged(torch.Tensor):
        pass

    module = sys.modules["fastdiff.ops.group_norm"]
    calls = []
    monkeypatch.setattr(module, "_launch", lambda *args: calls.append(args) or reference.group_norm(*args[:5]))
    x, w, b = _group_norm_args()
    want = ops.group_norm(x, 4, w, b)  # plain tensors: the memoised launcher
    assert not calls
    got = ops.group_norm(x.as_subclass(Tagged), 4, w, b)
    assert len(calls) == 1 and type(got) is Tagged
    torch.testing.assert_close(got.as_subclass(torch.Tensor), want, rtol=0, atol=0)


def test_the_memo_stays_bounded(monkeypatch):
    monkeypatch.setattr(_common, "MEMO_SIZE", 3)
    memo = {}
    for i in range(10):
        _common.remember(memo, ("key", i), print, i)
        assert len(memo) <= 3
    assert memo[("key", 9)] == (print, 9)
    assert _common.call_state(torch.ones(1)) is not None
    assert _common.call_state([1.0]) is None  # not a tensor: the checks will say so
    assert _common.meta(None) is None and _common.meta([1.0]) is list


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_weights_with_new_strides_reuse_the_launcher_and_stay_right(backend):
    # Their strides are not part of the signature (aux_meta): the launcher must take any.
    x = torch.randn(2, 8, 4, 4)
    w, b = torch.randn(8, 2), torch.randn(8)
    with ops.use_backend(backend):
        for weight in (w[:, 0].contiguous(), w[:, 0]):  # the same signature, then a strided weight
            got = ops.group_norm(x, 4, weight, b, silu=True)
            want = reference.group_norm(x.double(), 4, weight.double(), b.double(), silu=True)
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert _common.aux_meta(w[:, 0]) == _common.aux_meta(w[:, 0].contiguous())
    assert _common.aux_meta(None) is None and _common.aux_meta([1.0]) is list


def test_qk_norm_rope_keys_q_and_k_without_strides():
    """A memoised qk_norm_rope call launches views of other strides (fused-QKV slices) correctly."""
    qkv = torch.randn(1, 6, 3, 2, 8)
    w, cos, sin = torch.randn(8), torch.randn(6, 8), torch.randn(6, 8)
    q, k = torch.randn(1, 6, 2, 8), torch.randn(1, 6, 2, 8)
    ops.qk_norm_rope(q, k, w, w, cos, sin)
    q, k = qkv[:, :, 0], qkv[:, :, 1]  # the same shapes, strided
    want = reference.qk_norm_rope(q.double(), k.double(), w.double(), w.double(), cos.double(), sin.double(), 1e-6)
    ops.qk_norm_rope(q, k, w, w, cos, sin)
    torch.testing.assert_close(qkv[:, :, 0].double(), want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(qkv[:, :, 1].double(), want[1], rtol=1e-5, atol=1e-5)
