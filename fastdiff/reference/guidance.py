"""PyTorch reference of the guidance ops: the CPU fallback and the test oracle."""
from __future__ import annotations

import torch

from .._layout import output_format


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Low-precision inputs are combined in fp32, as the kernels do; fp64 stays fp64.
    return torch.float64 if dtype == torch.float64 else torch.float32


def cfg_combine(out_uncond: torch.Tensor, out_cond: torch.Tensor, scale: float) -> torch.Tensor:
    ct = _compute_dtype(out_cond.dtype)
    u, c = out_uncond.to(ct), out_cond.to(ct)
    return (u + scale * (c - u)).to(out_cond.dtype).contiguous(memory_format=output_format(out_cond))


def sampler_step(x, model_out, coeffs, *, guidance_scale=None, prev=None, noise=None):
    """x_next = a x + b d + c prev + e noise, d = p x + q m, m = CFG-combined model_out."""
    ct = _compute_dtype(x.dtype)
    if isinstance(coeffs, torch.Tensor):
        p, q, a, b, c, e = coeffs.to(ct).unbind(0)
    else:
        p, q, a, b, c, e = (float(v) for v in coeffs)
    m = model_out.to(ct)
    if guidance_scale is not None:
        u, cond = m.chunk(2, dim=0)
        m = u + guidance_scale * (cond - u)
    xf = x.to(ct)
    d = p * xf + q * m
    x_next = a * xf + b * d
    if prev is not None:
        x_next = x_next + c * prev.to(ct)
    if noise is not None:
        x_next = x_next + e * noise.to(ct)
    fmt = output_format(x)
    return x_next.to(x.dtype).contiguous(memory_format=fmt), d.to(x.dtype).contiguous(memory_format=fmt)
