"""Triton kernels for cfg_combine and sampler_step: elementwise, one read and one write per tensor.

Tensors that are not dense in one layout are made contiguous by the launcher; the common
cases (contiguous NCHW or channels_last latents) run with no copy, indexing flat storage.
"""
import torch
import triton
import triton.language as tl

from fastdiff._layout import dense_like

_BLOCK = 2048


@triton.jit
def _cfg_combine_kernel(u_ptr, c_ptr, out_ptr, n, scale, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    u = tl.load(u_ptr + offs, mask=mask).to(tl.float32)
    c = tl.load(c_ptr + offs, mask=mask).to(tl.float32)
    tl.store(out_ptr + offs, (u + scale * (c - u)).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sampler_step_kernel(x_ptr, m_ptr, prev_ptr, noise_ptr, xn_ptr, d_ptr, coeff_ptr, n,
                         p, q, a, b, c, e, s,
                         COEFF_ON_DEVICE: tl.constexpr, GUIDED: tl.constexpr, HAS_PREV: tl.constexpr,
                         HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    if COEFF_ON_DEVICE:  # read on the device so a captured graph replays with new coefficients
        p = tl.load(coeff_ptr + 0).to(tl.float32)
        q = tl.load(coeff_ptr + 1).to(tl.float32)
        a = tl.load(coeff_ptr + 2).to(tl.float32)
        b = tl.load(coeff_ptr + 3).to(tl.float32)
        c = tl.load(coeff_ptr + 4).to(tl.float32)
        e = tl.load(coeff_ptr + 5).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    m = tl.load(m_ptr + offs, mask=mask).to(tl.float32)
    if GUIDED:  # model_out = [uncond; cond]: cond sits n elements further
        mc = tl.load(m_ptr + n + offs, mask=mask).to(tl.float32)
        m = m + s * (mc - m)
    d = p * x + q * m
    xn = a * x + b * d
    if HAS_PREV:
        xn += c * tl.load(prev_ptr + offs, mask=mask).to(tl.float32)
    if HAS_NOISE:
        xn += e * tl.load(noise_ptr + offs, mask=mask).to(tl.float32)
    tl.store(xn_ptr + offs, xn.to(xn_ptr.dtype.element_ty), mask=mask)
    tl.store(d_ptr + offs, d.to(d_ptr.dtype.element_ty), mask=mask)


def _grid(n):
    return (triton.cdiv(n, _BLOCK),)


def cfg_combine(out_uncond, out_cond, scale):
    fmt, (c, u) = dense_like(out_cond, out_uncond)
    out = torch.empty_like(c, memory_format=fmt)
    if c.numel():
        _cfg_combine_kernel[_grid(c.numel())](u, c, out, c.numel(), float(scale), BLOCK=_BLOCK)
    return out


def sampler_step(x, model_out, coeffs, *, guidance_scale=None, prev=None, noise=None):
    fmt, (x, prev, noise) = dense_like(x, prev, noise)
    # [uncond; cond] stacked on the batch axis is two dense halves in either layout.
    m = model_out.contiguous(memory_format=fmt)
    n = x.numel()
    x_next = torch.empty_like(x, memory_format=fmt)
    d = torch.empty_like(x, memory_format=fmt)
    if n == 0:
        return x_next, d
    on_device = isinstance(coeffs, torch.Tensor)
    scalars = (0.0,) * 6 if on_device else tuple(float(v) for v in coeffs)
    _sampler_step_kernel[_grid(n)](
        x, m, prev if prev is not None else x, noise if noise is not None else x, x_next, d,
        coeffs if on_device else x, n, *scalars,
        float(guidance_scale) if guidance_scale is not None else 0.0,
        COEFF_ON_DEVICE=on_device, GUIDED=guidance_scale is not None,
        HAS_PREV=prev is not None, HAS_NOISE=noise is not None, BLOCK=_BLOCK)
    return x_next, d
