"""PyTorch reference of qk_norm_rope: per-head RMSNorm of q and k, then the rotary embedding of
interleaved pairs (Flux's convention), written into q and k."""
from __future__ import annotations

import torch


def rms_norm_rope(x, weight, cos, sin, eps):
    """RMSNorm over the last dim of x (B, S, H, D) scaled by weight (D,), then, when cos and sin
    (S, D) are given, each pair (x[2i], x[2i+1]) rotated: (a cos - b sin, b cos + a sin) with the
    angle's cos and sin repeated for both members of the pair. Computed in fp32 (float64 for
    float64 inputs); returns a new tensor in x's dtype."""
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    # a copy when autograd records: qk_norm_rope then overwrites x, which backward would read
    xc = x.to(ct, copy=torch.is_grad_enabled() and x.requires_grad)
    y = xc * torch.rsqrt(xc.square().mean(-1, keepdim=True) + eps) * weight.to(ct)
    if cos is not None:
        a, b = y.unflatten(-1, (-1, 2)).unbind(-1)
        rotated = torch.stack((-b, a), dim=-1).flatten(-2)  # (-x[2i+1], x[2i]) per pair
        y = y * cos.to(ct)[:, None] + rotated * sin.to(ct)[:, None]
    return y.to(x.dtype)


def qk_norm_rope(q, k, q_weight, k_weight, cos=None, sin=None, eps=1e-6):
    """In place: q and k take their normalized, rotated values; returns (q, k)."""
    q.copy_(rms_norm_rope(q, q_weight, cos, sin, eps))
    k.copy_(rms_norm_rope(k, k_weight, cos, sin, eps))
    return q, k
