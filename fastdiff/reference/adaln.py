"""PyTorch reference of adaln: LayerNorm without affine, then the per-sample modulation, after an
optional gated residual add."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def adaln(x, shift, scale, eps=1e-6, *, gate=None, residual=None):
    """y = LayerNorm(h) * (1 + scale) + shift, h = x, or residual + gate * x when gated; returns y,
    or (h, y) when gated. Statistics and arithmetic in fp32 (float64 for float64 inputs); h is
    rounded to x's dtype before it is normalized, as the unfused computation stores it."""
    ct = _compute_dtype(x)
    gated = gate is not None
    if gated:
        h = (residual.to(ct) + gate.to(ct)[:, None] * x.to(ct)).to(x.dtype)
        xc = h.to(ct)
    else:
        xc = x.to(ct)
    y = F.layer_norm(xc, xc.shape[-1:], eps=eps)
    y = (y * (1 + scale.to(ct)[:, None]) + shift.to(ct)[:, None]).to(x.dtype)
    return (h.contiguous(), y) if gated else y
