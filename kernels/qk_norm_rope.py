"""Triton qk_norm_rope, in place: a program takes one token and a block of its heads, of q and then
of k (BLOCK_H x BLOCK_D values each), RMS-normalizes every head in fp32 and rotates its pairs in
registers (the tile split into its even and odd columns and joined back), so q and k are read and
written once, in full-width vectors. Every tensor is read through its own strides: q and k are
views of the fused QKV projection."""
import triton
import triton.language as tl

from .adaln import num_warps

TILE = 4096      # the most values of one tensor a program holds at once
MIN_TILE = 1024  # and the fewest, so that a program has work for a few warps


@triton.jit
def _norm_rope_heads(ptr, w_ptr, cos_row, sin_row, st_h, st_d, w_s, cos_d, sin_d, heads, eps, H, D,
                     ROPE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    cols = tl.arange(0, BLOCK_D)
    mask = (heads < H)[:, None] & (cols < D)[None, :]
    offs = heads[:, None] * st_h + cols[None, :] * st_d
    x = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 1) / D + eps)
    w = tl.load(w_ptr + cols * w_s, mask=cols < D, other=0.0).to(tl.float32)
    y = x * rstd[:, None] * w[None, :]
    if ROPE:
        # pairs (a, b) = (y[2i], y[2i+1]) -> (a cos - b sin, b cos + a sin), the angle of pair i
        # read at column 2i of the tables
        a, b = tl.split(tl.reshape(y, (BLOCK_H, BLOCK_D // 2, 2)))
        pair = tl.arange(0, BLOCK_D // 2) * 2
        c = tl.load(cos_row + pair * cos_d, mask=pair < D, other=0.0).to(tl.float32)[None, :]
        s = tl.load(sin_row + pair * sin_d, mask=pair < D, other=0.0).to(tl.float32)[None, :]
        y = tl.reshape(tl.join(a * c - b * s, b * c + a * s), (BLOCK_H, BLOCK_D))
    tl.store(ptr + offs, y.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _qk_norm_rope_kernel(q_ptr, k_ptr, qw_ptr, kw_ptr, cos_ptr, sin_ptr, S, H, D,
                         sq_b, sq_s, sq_h, sq_d, sk_b, sk_s, sk_h, sk_d, qw_s, kw_s,
                         cos_s, cos_d, sin_s, sin_d, eps,
                         ROPE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    b, s = token // S, token % S
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    cos_row, sin_row = cos_ptr + s * cos_s, sin_ptr + s * sin_s
    _norm_rope_heads(q_ptr + b * sq_b + s * sq_s, qw_ptr, cos_row, sin_row, sq_h, sq_d, qw_s, cos_d, sin_d, heads,
                     eps, H, D, ROPE, BLOCK_H, BLOCK_D)
    _norm_rope_heads(k_ptr + b * sk_b + s * sk_s, kw_ptr, cos_row, sin_row, sk_h, sk_d, kw_s, cos_d, sin_d, heads,
                     eps, H, D, ROPE, BLOCK_H, BLOCK_D)


def heads_per_program(h: int, block_d: int) -> int:
    """A power of two of heads holding MIN_TILE to TILE values (fewer when h is small): the one that
    pads the fewest heads, the largest of those (Flux's 24 heads of 128 go 8 to a program, not 32
    with 8 masked)."""
    hi = max(1, min(triton.next_power_of_2(h), TILE // block_d))
    lo = min(hi, max(1, MIN_TILE // block_d))
    sizes = [1 << i for i in range(lo.bit_length() - 1, hi.bit_length())]
    return min(sizes, key=lambda n: (triton.cdiv(h, n) * n - h, -n))


def qk_norm_rope(q, k, q_weight, k_weight, cos=None, sin=None, eps=1e-6):
    b, s, h, d = q.shape
    if q.numel():
        block_d = triton.next_power_of_2(d)
        block_h = heads_per_program(h, block_d)
        rope = cos is not None
        cos, sin = (cos, sin) if rope else (q_weight[None], q_weight[None])  # unused pointers without rope
        _qk_norm_rope_kernel[(b * s, triton.cdiv(h, block_h))](
            q, k, q_weight, k_weight, cos, sin, s, h, d, *q.stride(), *k.stride(), q_weight.stride(0),
            k_weight.stride(0), *cos.stride(), *sin.stride(), float(eps), ROPE=rope, BLOCK_H=block_h,
            BLOCK_D=block_d, num_warps=num_warps(block_h * block_d))
    return q, k
