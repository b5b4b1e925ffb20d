"""Triton adaLN: one program per token row, LayerNorm statistics in fp32 by two passes (mean, then
the squares of the deviations), then the per-sample modulation; optionally the gated residual add
first. The statistics are those of the row minus its first element (the pivot), exact where the row
lies within a factor 2 of it, so a mean large against the spread loses no digits in the sum. Every
tensor is read through its own strides, so chunks of a modulation projection and strided views run
with no copy.

A row of up to BLOCK_MAX elements (every DiT, SD3 and Flux width) is loaded once and kept in
registers; a wider one is walked in chunks three times (sum, squares, output), recomputing the
gated residual each time rather than re-reading what this program stored."""
import torch
import triton
import triton.language as tl

BLOCK_MAX = 4096


@triton.jit
def _row(x_row, r_row, g_row, cols, mask, sx_d, sr_d, sg_d, GATED: tl.constexpr, H_TY: tl.constexpr):
    """x, or residual + gate * x rounded to the storage dtype, in fp32."""
    v = tl.load(x_row + cols * sx_d, mask=mask, other=0.0).to(tl.float32)
    if GATED:
        r = tl.load(r_row + cols * sr_d, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_row + cols * sg_d, mask=mask, other=0.0).to(tl.float32)
        v = (r + g * v).to(H_TY).to(tl.float32)
    return v


@triton.jit
def _adaln_kernel(x_ptr, r_ptr, g_ptr, shift_ptr, scale_ptr, h_ptr, y_ptr, T, D,
                  sx_b, sx_t, sx_d, sr_b, sr_t, sr_d, sg_b, sg_d, ssh_b, ssh_d, ssc_b, ssc_d, eps,
                  GATED: tl.constexpr, BLOCK: tl.constexpr, CHUNKS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    b, t = row // T, row % T
    x_row = x_ptr + b * sx_b + t * sx_t
    r_row = r_ptr + b * sr_b + t * sr_t
    g_row = g_ptr + b * sg_b
    sh_row, sc_row = shift_ptr + b * ssh_b, scale_ptr + b * ssc_b
    out = row * D
    H_TY = h_ptr.dtype.element_ty
    Y_TY = y_ptr.dtype.element_ty
    if CHUNKS == 1:
        cols = tl.arange(0, BLOCK)
        mask = cols < D
        v = _row(x_row, r_row, g_row, cols, mask, sx_d, sr_d, sg_d, GATED, H_TY)
        if GATED:
            tl.store(h_ptr + out + cols, v.to(H_TY), mask=mask)
        v = tl.where(mask, v - tl.sum(tl.where(cols == 0, v, 0.0), 0), 0.0)
        mean = tl.sum(v, 0) / D
        dev = tl.where(mask, v - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(dev * dev, 0) / D + eps)
        sc = tl.load(sc_row + cols * ssc_d, mask=mask, other=0.0).to(tl.float32)
        sh = tl.load(sh_row + cols * ssh_d, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + out + cols, (dev * rstd * (1.0 + sc) + sh).to(Y_TY), mask=mask)
    else:
        first = tl.arange(0, BLOCK)
        pivot = tl.sum(_row(x_row, r_row, g_row, first, first == 0, sx_d, sr_d, sg_d, GATED, H_TY), 0)
        acc = tl.zeros((BLOCK,), tl.float32)
        for start in range(0, D, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < D
            v = _row(x_row, r_row, g_row, cols, mask, sx_d, sr_d, sg_d, GATED, H_TY)
            if GATED:
                tl.store(h_ptr + out + cols, v.to(H_TY), mask=mask)
            acc += tl.where(mask, v - pivot, 0.0)
        mean = tl.sum(acc, 0) / D  # of the row minus the pivot
        acc = tl.zeros((BLOCK,), tl.float32)
        for start in range(0, D, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < D
            v = _row(x_row, r_row, g_row, cols, mask, sx_d, sr_d, sg_d, GATED, H_TY)
            dev = tl.where(mask, (v - pivot) - mean, 0.0)
            acc += dev * dev
        rstd = 1.0 / tl.sqrt(tl.sum(acc, 0) / D + eps)
        for start in range(0, D, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < D
            v = _row(x_row, r_row, g_row, cols, mask, sx_d, sr_d, sg_d, GATED, H_TY)
            sc = tl.load(sc_row + cols * ssc_d, mask=mask, other=0.0).to(tl.float32)
            sh = tl.load(sh_row + cols * ssh_d, mask=mask, other=0.0).to(tl.float32)
            tl.store(y_ptr + out + cols, (((v - pivot) - mean) * rstd * (1.0 + sc) + sh).to(Y_TY), mask=mask)


def block_and_chunks(d: int) -> tuple[int, int]:
    """The tile width of a row of d elements and the chunks it takes (1: the row stays in registers)."""
    block = min(triton.next_power_of_2(max(d, 1)), BLOCK_MAX)
    return block, triton.cdiv(d, block)


def num_warps(block: int) -> int:
    """About 16 fp32 values a thread, 1 to 16 warps."""
    return max(1, min(16, block // 512))


def adaln(x, shift, scale, eps=1e-6, *, gate=None, residual=None):
    b, t, d = x.shape
    y = torch.empty((b, t, d), dtype=x.dtype, device=x.device)
    gated = gate is not None
    h = torch.empty_like(y) if gated else None
    if x.numel():
        block, chunks = block_and_chunks(d)
        r, g = (residual, gate) if gated else (x, shift)  # unused pointers when not gated
        _adaln_kernel[(b * t,)](x, r, g, shift, scale, h if gated else y, y, t, d, *x.stride(), *r.stride(),
                                *g.stride(), *shift.stride(), *scale.stride(), float(eps), GATED=gated,
                                BLOCK=block, CHUNKS=chunks, num_warps=num_warps(block))
    return (h, y) if gated else y
