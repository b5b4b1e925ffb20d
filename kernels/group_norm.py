"""Triton GroupNorm (+ SiLU): one program per (sample, group), fp32 two-pass statistics.

x is viewed as (N, HW, C) through strides, so NCHW and channels_last run the same kernel with no
copy; channels per group need not be a power of two (masked columns). Three passes over the group
(mean, variance around the mean, normalize) keep the statistics exact in fp32; the passes after the
first mostly hit L2 at U-Net sizes. Large VAE groups want a split reduction across programs.
"""
import torch
import triton
import triton.language as tl

from fastdiff._layout import dense_like


@triton.jit
def _group_norm_kernel(x_ptr, w_ptr, b_ptr, y_ptr, G, HW, CPG, s_n, s_hw, s_c, eps, inv_count,
                       HAS_W: tl.constexpr, HAS_B: tl.constexpr, SILU: tl.constexpr,
                       BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    n, g = pid // G, pid % G
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < CPG
    c = g * CPG + cols
    base = n.to(tl.int64) * s_n + c.to(tl.int64)[None, :] * s_c
    rows = tl.arange(0, BLOCK_HW)

    acc = tl.zeros((BLOCK_HW, BLOCK_C), dtype=tl.float32)
    for start in range(0, HW, BLOCK_HW):
        hw = start + rows
        mask = (hw < HW)[:, None] & cmask[None, :]
        acc += tl.load(x_ptr + base + hw.to(tl.int64)[:, None] * s_hw, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(acc) * inv_count

    acc = tl.zeros((BLOCK_HW, BLOCK_C), dtype=tl.float32)
    for start in range(0, HW, BLOCK_HW):
        hw = start + rows
        mask = (hw < HW)[:, None] & cmask[None, :]
        v = tl.load(x_ptr + base + hw.to(tl.int64)[:, None] * s_hw, mask=mask, other=0.0).to(tl.float32)
        v = tl.where(mask, v - mean, 0.0)
        acc += v * v
    rstd = 1.0 / tl.sqrt(tl.sum(acc) * inv_count + eps)

    scale = rstd * (tl.load(w_ptr + c, mask=cmask, other=1.0) if HAS_W else tl.full((BLOCK_C,), 1.0, tl.float32))
    shift = (tl.load(b_ptr + c, mask=cmask, other=0.0) if HAS_B else tl.zeros((BLOCK_C,), tl.float32)) - mean * scale
    for start in range(0, HW, BLOCK_HW):
        hw = start + rows
        mask = (hw < HW)[:, None] & cmask[None, :]
        offs = base + hw.to(tl.int64)[:, None] * s_hw
        y = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) * scale[None, :] + shift[None, :]
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, *, silu=False):
    fmt, (x,) = dense_like(x)
    y = torch.empty_like(x, memory_format=fmt)
    n, c = x.shape[:2]
    hw = x[0, 0].numel()
    if x.numel() == 0:
        return y
    # (N, HW, C) strides of the dense layout
    s_n, s_hw, s_c = (c * hw, 1, hw) if fmt is torch.contiguous_format else (c * hw, c, 1)
    cpg = c // num_groups
    block_c = triton.next_power_of_2(cpg)
    block_hw = max(1, min(triton.next_power_of_2(hw), 4096 // block_c))
    w = None if weight is None else weight.to(torch.float32).contiguous()
    b = None if bias is None else bias.to(torch.float32).contiguous()
    _group_norm_kernel[(n * num_groups,)](
        x, w if w is not None else x, b if b is not None else x, y, num_groups, hw, cpg, s_n, s_hw, s_c,
        float(eps), 1.0 / (cpg * hw), HAS_W=w is not None, HAS_B=b is not None, SILU=bool(silu),
        BLOCK_HW=block_hw, BLOCK_C=block_c, num_warps=4)
    return y
