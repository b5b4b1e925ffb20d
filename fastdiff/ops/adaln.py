"""adaLN: LayerNorm without affine, then the per-sample shift and scale of a transformer block's
modulation, optionally after the block's gated residual add."""
from __future__ import annotations

from typing import Optional

import torch

from .. import backends, reference
from ._common import (OP_TAGS, call_state, check_float, check_match, aux_meta, check_tensor, eager, launcher, meta,
                      needs_autograd, remember)

_memo: dict = {}  # call signature -> (launcher, eps) (fastdiff.ops._common)


def _describe(x: torch.Tensor, *args, **kwargs) -> backends.Inputs:
    return backends.Inputs(x.device, x.dtype, numel=x.numel())


def _launch(x, shift, scale, gate, residual, eps):
    out = launcher("adaln", _describe(x))(x, shift, scale, eps, gate=gate, residual=residual)
    return list(out) if gate is not None else [out]


@torch.library.custom_op("fastdiff::adaln", mutates_args=(), tags=OP_TAGS)
def _adaln_op(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, gate: Optional[torch.Tensor],
              residual: Optional[torch.Tensor], eps: float) -> list[torch.Tensor]:
    return _launch(x, shift, scale, gate, residual, eps)


@_adaln_op.register_fake
def _(x, shift, scale, gate, residual, eps):
    return [x.new_empty(x.shape) for _ in range(2 if gate is not None else 1)]


def _check(x, shift, scale, gate, residual, eps):
    op = "adaln"
    check_tensor(op, "x", x, ndim=3)
    b, _, d = x.shape
    if (gate is None) != (residual is None):
        raise ValueError("fastdiff.adaln: gate and residual go together; got "
                         + ("gate without residual" if residual is None else "residual without gate"))
    for name, t in (("shift", shift), ("scale", scale), ("gate", gate)):
        if t is not None:
            check_tensor(op, name, t, ndim=2)
            check_match(op, "x", x, name, t, shape=False, dtype=False)
            if tuple(t.shape) != (b, d):
                raise ValueError(f"fastdiff.adaln: {name} must be (B, D) = {(b, d)} for x of shape "
                                 f"{tuple(x.shape)}, got {tuple(t.shape)}")
    if residual is not None:
        check_tensor(op, "residual", residual)
        check_match(op, "x", x, "residual", residual)
    eps = check_float(op, "eps", eps)
    if eps < 0:
        raise ValueError(f"fastdiff.adaln: eps must be >= 0, got {eps}")
    return eps


def adaln(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6, *,
          gate: Optional[torch.Tensor] = None, residual: Optional[torch.Tensor] = None):
    """LayerNorm(h) * (1 + scale) + shift over the last dim, per sample: a DiT/MM-DiT modulation.

    x: (B, T, D), fp16/bf16/fp32 (fp64 on the torch backend). shift, scale: (B, D), any float
    dtype, broadcast over the T tokens. Any strides (shift, scale and gate may be chunks of one
    modulation projection).
    Without gate: h = x and the result is y, a new contiguous (B, T, D) tensor like x.
    With gate (B, D) and residual (like x): h = residual + gate * x, the block's gated residual add
    of its branch output x; the result is (h, y), h rounded to x's dtype before it is normalized.
    Statistics (two passes, never E[x^2] - E[x]^2) and arithmetic in fp32.
    """
    state = call_state(x)
    key = state and (state, meta(x), aux_meta(shift), aux_meta(scale), aux_meta(gate), meta(residual), eps, type(eps))
    entry = _memo.get(key)
    if entry is None:
        eps = _check(x, shift, scale, gate, residual, eps)
        if needs_autograd(x, shift, scale, gate, residual):
            return reference.adaln(x, shift, scale, eps, gate=gate, residual=residual)
        if not eager(x, shift, scale, gate, residual):
            out = _adaln_op(x, shift, scale, gate, residual, eps)
            return tuple(out) if gate is not None else out[0]
        entry = remember(_memo, key, launcher("adaln", _describe(x)), eps)
    launch, eps = entry
    return launch(x, shift, scale, eps, gate=gate, residual=residual)


# The kernels have not been timed on a GPU: until fastdiff/measured.json records an order for the
# device, auto keeps the reference.
backends.register_op("adaln", adaln, _describe, reference.adaln, auto_order=("torch",))
