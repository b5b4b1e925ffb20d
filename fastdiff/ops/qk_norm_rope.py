"""RMSNorm of each head of q and k, then the rotary position embedding, in place."""
from __future__ import annotations

from typing import Optional

import torch

from .. import backends, reference
from ._common import (OP_TAGS, call_state, check_float, check_match, aux_meta, check_tensor, eager, launcher,
                      needs_autograd, remember)

_memo: dict = {}  # call signature -> (launcher, eps) (fastdiff.ops._common)


def _describe(q: torch.Tensor, *args, **kwargs) -> backends.Inputs:
    return backends.Inputs(q.device, q.dtype, head_dim=q.shape[-1], numel=q.numel())


def _launch(q, k, q_weight, k_weight, cos, sin, eps):
    launcher("qk_norm_rope", _describe(q))(q, k, q_weight, k_weight, cos, sin, eps)


@torch.library.custom_op("fastdiff::qk_norm_rope", mutates_args=("q", "k"), tags=OP_TAGS)
def _qk_norm_rope_op(q: torch.Tensor, k: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor,
                     cos: Optional[torch.Tensor], sin: Optional[torch.Tensor], eps: float) -> None:
    _launch(q, k, q_weight, k_weight, cos, sin, eps)


@_qk_norm_rope_op.register_fake
def _(q, k, q_weight, k_weight, cos, sin, eps):
    return None


def _check(q, k, q_weight, k_weight, cos, sin, eps):
    op = "qk_norm_rope"
    check_tensor(op, "q", q, ndim=4)
    check_tensor(op, "k", k, ndim=4)
    check_match(op, "q", q, "k", k)
    _, s, _, d = q.shape
    for name, w in (("q_weight", q_weight), ("k_weight", k_weight)):
        check_tensor(op, name, w, ndim=1)
        check_match(op, "q", q, name, w, shape=False, dtype=False)
        if w.shape[0] != d:
            raise ValueError(f"fastdiff.qk_norm_rope: {name} must have shape ({d},) for the head dim of q "
                             f"{tuple(q.shape)}, got {tuple(w.shape)}")
    if (cos is None) != (sin is None):
        raise ValueError("fastdiff.qk_norm_rope: cos and sin go together; got only "
                         + ("sin" if cos is None else "cos"))
    if cos is not None:
        if d % 2:
            raise ValueError(f"fastdiff.qk_norm_rope: the rotary embedding rotates pairs, so the head dim must be "
                             f"even, got {d}")
        for name, t in (("cos", cos), ("sin", sin)):
            check_tensor(op, name, t, ndim=2)
            check_match(op, "q", q, name, t, shape=False, dtype=False)
            if tuple(t.shape) != (s, d):
                raise ValueError(f"fastdiff.qk_norm_rope: {name} must be (S, D) = {(s, d)} for q of shape "
                                 f"{tuple(q.shape)}, got {tuple(t.shape)}")
    eps = check_float(op, "eps", eps)
    if eps < 0:
        raise ValueError(f"fastdiff.qk_norm_rope: eps must be >= 0, got {eps}")
    return eps


def qk_norm_rope(q: torch.Tensor, k: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor,
                 cos: Optional[torch.Tensor] = None, sin: Optional[torch.Tensor] = None,
                 eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """In place: q <- rope(RMSNorm(q) * q_weight), k <- rope(RMSNorm(k) * k_weight), per head.

    q, k: (B, S, H, D), one dtype (fp16/bf16/fp32; fp64 on the torch backend), any strides, e.g.
    views of one fused QKV projection, which attention then reads with no copy.
    q_weight, k_weight: (D,), any float dtype.
    cos, sin: (S, D) or None (no rotation, as in SD3): the angles of each position in diffusers'
    layout, each repeated for the two members of a pair; pair (x[2i], x[2i+1]) becomes
    (x[2i] cos - x[2i+1] sin, x[2i+1] cos + x[2i] sin) (Flux's convention; D even).
    Statistics and arithmetic in fp32. Returns (q, k), the tensors passed in.
    """
    state = call_state(q)
    # Every launcher takes q and k at any strides, and neither the checks nor the choice read them.
    key = state and (state, aux_meta(q), aux_meta(k), aux_meta(q_weight), aux_meta(k_weight), aux_meta(cos),
                     aux_meta(sin), eps, type(eps))
    entry = _memo.get(key)
    if entry is None:
        eps = _check(q, k, q_weight, k_weight, cos, sin, eps)
        if needs_autograd(q, k, q_weight, k_weight, cos, sin):
            return reference.qk_norm_rope(q, k, q_weight, k_weight, cos, sin, eps)
        if not eager(q, k, q_weight, k_weight, cos, sin):
            _qk_norm_rope_op(q, k, q_weight, k_weight, cos, sin, eps)
            return q, k
        entry = remember(_memo, key, launcher("qk_norm_rope", _describe(q)), eps)
    launch, eps = entry
    launch(q, k, q_weight, k_weight, cos, sin, eps)
    return q, k


# The kernels have not been timed on a GPU: until fastdiff/measured.json records an order for the
# device, auto keeps the reference.
backends.register_op("qk_norm_rope", qk_norm_rope, _describe, reference.qk_norm_rope, auto_order=("torch",))
