"""The `cuda` backend: tensors in, raw pointers, counts, dtype codes and the stream out to fastdiff._C.

Each launcher takes exactly the arguments of its reference in fastdiff.reference (already
validated by fastdiff.ops), allocates outputs through PyTorch and launches on the current stream.
"""
from __future__ import annotations

import torch

from fastdiff import _C
from fastdiff._layout import dense_like

_CODES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}


def _stream(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


def _ptr(t) -> int:
    return 0 if t is None else t.data_ptr()


def cfg_combine(out_uncond, out_cond, scale):
    fmt, (c, u) = dense_like(out_cond, out_uncond)
    out = torch.empty_like(c, memory_format=fmt)
    _C.cfg_combine(u.data_ptr(), c.data_ptr(), out.data_ptr(), c.numel(), _CODES[c.dtype], float(scale), _stream(c))
    return out


def sampler_step(x, model_out, coeffs, *, guidance_scale=None, prev=None, noise=None):
    fmt, (x, model_out, prev, noise) = dense_like(x, model_out, prev, noise)
    x_next = torch.empty_like(x, memory_format=fmt)
    d = torch.empty_like(x, memory_format=fmt)
    if isinstance(coeffs, torch.Tensor):
        device_coeffs, coeffs = coeffs.to(torch.float32).contiguous(), (0.0,) * 6
    else:
        device_coeffs = None
    _C.sampler_step(x.data_ptr(), model_out.data_ptr(), _CODES[model_out.dtype], _ptr(prev), _ptr(noise),
                    x_next.data_ptr(), d.data_ptr(), x.numel(), _CODES[x.dtype], tuple(float(v) for v in coeffs),
                    _ptr(device_coeffs), guidance_scale is not None,
                    0.0 if guidance_scale is None else float(guidance_scale), _stream(x))
    return x_next, d
