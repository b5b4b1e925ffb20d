"""Triton attention forward in the FlashAttention style: online softmax in fp32 (exp2 with log2(e)
folded into the scale), no Sq x Sk matrix in memory.

q, k, v are read through their (batch, sequence, head) strides, so views of one fused QKV tensor
need no copy; the head dim is padded to a power of two inside the kernel by masking. A short key
sequence (cross-attention, e.g. 77 tokens) is covered by one key block: one pass, exact softmax.

Triton's interpreter (CPU tensors) holds bfloat16 as its bits and its tl.dot multiplies those, so
there bf16 operands are widened to fp32 first (UPCAST): the same exact products and fp32 sums as the
GPU's bf16 dot. A GPU launch never takes that path.

The grid is (query tiles, batch x heads). Past CUDA's limit of 65535 on axis 1, programs are
numbered linearly instead, in the same order (query tile fastest: the tiles of one head run
together and share its K and V in L2), on axis 0 (up to 2^31 - 1) and spilling to axis 1, so any
batch x heads launches.
"""
import math

import torch
import triton
import triton.language as tl

from ._device import MAX_GRID_X, MAX_GRID_YZ, shared_memory_of

_LOG2E = 1.4426950408889634


def grid(q_tiles: int, batch_heads: int):
    """The launch grid of q_tiles x batch_heads programs, and whether it is linear: (q_tiles,
    batch_heads) within CUDA's limits, else all of them numbered linearly on axis 0, spilling to
    axis 1 (fewer than 65535 of them extra)."""
    if batch_heads <= MAX_GRID_YZ:
        return (q_tiles, batch_heads), False
    programs = q_tiles * batch_heads
    y = max(1, triton.cdiv(programs, MAX_GRID_X))
    return (max(1, triton.cdiv(programs, y)), y), True


@triton.jit
def _attention_kernel(q_ptr, k_ptr, v_ptr, o_ptr, H, SQ, SK, D, Q_TILES, TOTAL, qk_scale,
                      s_qb, s_qs, s_qh, s_kb, s_ks, s_kh, s_vb, s_vs, s_vh, s_ob, s_os, s_oh,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                      IEEE: tl.constexpr, UPCAST: tl.constexpr, LINEAR: tl.constexpr):
    if LINEAR:  # program (b * H + h) * Q_TILES + query tile; those past TOTAL mask every row
        pid = tl.program_id(1).to(tl.int64) * tl.num_programs(0) + tl.program_id(0)
        ok = pid < TOTAL
        pid = tl.where(ok, pid, 0)
        tile, bh = (pid % Q_TILES).to(tl.int32), pid // Q_TILES
        row_ok = ok
    else:
        tile, bh = tl.program_id(0), tl.program_id(1)
        row_ok = True
    b, h = bh // H, bh % H
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = (rows < SQ) & row_ok
    cols = tl.arange(0, BLOCK_D)
    dmask = cols < D
    keys = tl.arange(0, BLOCK_N)
    q_base = q_ptr + b.to(tl.int64) * s_qb + h.to(tl.int64) * s_qh
    k_base = k_ptr + b.to(tl.int64) * s_kb + h.to(tl.int64) * s_kh
    v_base = v_ptr + b.to(tl.int64) * s_vb + h.to(tl.int64) * s_vh
    q = tl.load(q_base + rows.to(tl.int64)[:, None] * s_qs + cols[None, :],
                mask=row_ok[:, None] & dmask[None, :], other=0.0)

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for start in range(0, SK, BLOCK_N):
        n = start + keys
        kv_mask = (n < SK)[:, None] & dmask[None, :]
        k = tl.load(k_base + n.to(tl.int64)[:, None] * s_ks + cols[None, :], mask=kv_mask, other=0.0)
        if IEEE:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        elif UPCAST:  # the same products and fp32 sums as a bf16 dot
            s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        s = tl.where((n < SK)[None, :], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + n.to(tl.int64)[:, None] * s_vs + cols[None, :], mask=kv_mask, other=0.0)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
        elif UPCAST:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32),
                                                input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    out = acc / l_i[:, None]
    o_base = o_ptr + b.to(tl.int64) * s_ob + h.to(tl.int64) * s_oh
    tl.store(o_base + rows.to(tl.int64)[:, None] * s_os + cols[None, :], out.to(o_ptr.dtype.element_ty),
             mask=row_ok[:, None] & dmask[None, :])


def _config(head_dim: int, seq_k: int, itemsize: int, shared_memory: int):
    """(BLOCK_M, BLOCK_N, BLOCK_D, num_warps, num_stages): starting points for sm_80/sm_90, to be tuned on
    a GPU. Up to 128 keys fit one block, so cross-attention takes a single pass (and prefetches
    nothing). Then shrunk until the resident Q tile and the pipelined K and V tiles fit the
    device's shared memory (an estimate: the compiler's scratch comes on top)."""
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_n = max(16, triton.next_power_of_2(seq_k)) if seq_k <= 128 else (64 if block_d <= 128 else 32)
    block_m = 128 if block_d <= 128 else 64
    stages = 1 if seq_k <= block_n else (3 if block_d <= 64 else 2)
    while itemsize * block_d * (block_m + 2 * stages * block_n) > shared_memory:
        if stages > 1:
            stages -= 1
        elif block_n > 16:
            block_n //= 2
        else:
            block_m //= 2
    return block_m, block_n, block_d, 8 if block_d >= 128 else 4, stages


def attention(q, k, v, *, scale=None):
    b, sq, h, d = q.shape
    sk = k.shape[1]
    o = torch.empty((b, sq, h, d), dtype=q.dtype, device=q.device)
    if o.numel() == 0:  # nothing to compute (and no default scale for head dim 0)
        return o
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    # the device's opt-in shared memory, asked once per device (no limit off a GPU)
    block_m, block_n, block_d, warps, stages = _config(d, sk, q.element_size(), shared_memory_of(q))
    q_tiles = triton.cdiv(sq, block_m)
    g, linear = grid(q_tiles, b * h)
    _attention_kernel[g](
        q, k, v, o, h, sq, sk, d, q_tiles, q_tiles * b * h, float(scale) * _LOG2E,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        IEEE=q.dtype == torch.float32, UPCAST=q.device.type == "cpu" and q.dtype == torch.bfloat16,
        LINEAR=linear, num_warps=warps, num_stages=stages)
    return o
