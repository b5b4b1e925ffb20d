"""Triton attention forward in the FlashAttention style: online softmax in fp32 (exp2 with log2(e)
folded into the scale), no Sq x Sk matrix in memory.

q, k, v are read through their (batch, sequence, head) strides, so views of one fused QKV tensor
need no copy. The head dim is a compile-time constant taken as one or two power-of-two chunks
(40 = 32 + 16 with 8 masked, 72 = 64 + 16, 80 = 64 + 16, 160 = 128 + 32) rather than padded to the
next power of two, and the strides are passed in units of ALIGN elements: together they let the
compiler prove 16-byte aligned rows, so loads are vectors and pipelined with cp.async. A short key
sequence (cross-attention, e.g. 77 tokens) takes the key block that pads it least.

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

from ._device import MAX_GRID_X, MAX_GRID_YZ, compiled_shared_memory, shared_memory_of

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
def _chunk(base, rows, stride, ok, C0: tl.constexpr, W: tl.constexpr, D: tl.constexpr):
    """Pointers to columns C0 .. C0 + W of the given rows, and their mask: the rows only, unless the
    chunk passes D (a column mask would hide the rows' alignment from the compiler)."""
    cols = C0 + tl.arange(0, W)
    ptrs = base + rows.to(tl.int64)[:, None] * stride + cols[None, :]
    if C0 + W <= D:
        mask = ok[:, None]
    else:
        mask = ok[:, None] & (cols < D)[None, :]
    return ptrs, mask


@triton.jit
def _load(base, rows, stride, ok, C0: tl.constexpr, W: tl.constexpr, D: tl.constexpr):
    ptrs, mask = _chunk(base, rows, stride, ok, C0, W, D)
    return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def _store(base, rows, stride, ok, tile, C0: tl.constexpr, W: tl.constexpr, D: tl.constexpr):
    ptrs, mask = _chunk(base, rows, stride, ok, C0, W, D)
    tl.store(ptrs, tile, mask=mask)


@triton.jit
def _dot(a, b, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    if IEEE:
        out = tl.dot(a, b, input_precision="ieee")
    elif UPCAST:  # the same products and fp32 sums as a bf16 dot
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        out = tl.dot(a, b)
    return out


@triton.jit
def _attention_kernel(q_ptr, k_ptr, v_ptr, o_ptr, H, SQ, SK, Q_TILES, TOTAL, qk_scale,
                      s_qb, s_qs, s_qh, s_kb, s_ks, s_kh, s_vb, s_vs, s_vh, s_ob, s_os, s_oh,
                      D: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, ALIGN: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
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
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = (rows < SQ) & row_ok
    keys = tl.arange(0, BLOCK_N)
    # strides come in units of ALIGN elements: scaled here, so every row start is a multiple of ALIGN
    q_base = q_ptr + (b * s_qb + h * s_qh) * ALIGN
    k_base = k_ptr + (b * s_kb + h * s_kh) * ALIGN
    v_base = v_ptr + (b * s_vb + h * s_vh) * ALIGN
    q0 = _load(q_base, rows, s_qs * ALIGN, row_ok, 0, D0, D)
    acc0 = tl.zeros((BLOCK_M, D0), tl.float32)
    if D1 > 0:
        q1 = _load(q_base, rows, s_qs * ALIGN, row_ok, D0, D1, D)
        acc1 = tl.zeros((BLOCK_M, D1), tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    for start in range(0, SK, BLOCK_N):
        n = start + keys
        n_ok = n < SK
        s = _dot(q0, tl.trans(_load(k_base, n, s_ks * ALIGN, n_ok, 0, D0, D)), IEEE, UPCAST)
        if D1 > 0:
            s += _dot(q1, tl.trans(_load(k_base, n, s_ks * ALIGN, n_ok, D0, D1, D)), IEEE, UPCAST)
        s = tl.where(n_ok[None, :], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v0 = _load(v_base, n, s_vs * ALIGN, n_ok, 0, D0, D)
        acc0 = acc0 * alpha[:, None] + _dot(p.to(v0.dtype), v0, IEEE, UPCAST)
        if D1 > 0:
            v1 = _load(v_base, n, s_vs * ALIGN, n_ok, D0, D1, D)
            acc1 = acc1 * alpha[:, None] + _dot(p.to(v1.dtype), v1, IEEE, UPCAST)
        m_i = m_new
    o_base = o_ptr + (b * s_ob + h * s_oh) * ALIGN
    _store(o_base, rows, s_os * ALIGN, row_ok, (acc0 / l_i[:, None]).to(o_ptr.dtype.element_ty), 0, D0, D)
    if D1 > 0:
        _store(o_base, rows, s_os * ALIGN, row_ok, (acc1 / l_i[:, None]).to(o_ptr.dtype.element_ty), D0, D1, D)


def chunks(head_dim: int):
    """(D0, D1): the head dim as a power-of-two chunk and a second, masked one (0: none), each at
    least 16 (a tensor-core dot's K): 40 -> (32, 16), 72 -> (64, 16), 160 -> (128, 32), 64 -> (64, 0)."""
    if head_dim <= 16:
        return 16, 0
    d0 = 1 << (head_dim.bit_length() - 1)
    return d0, (0 if d0 == head_dim else max(16, triton.next_power_of_2(head_dim - d0)))


def key_block(seq_k: int, width: int) -> int:
    """64 keys a block (32 past a 128-wide head: larger blocks spill the score tile), or up to 128
    keys the block that pads them least (the larger on a tie): 77 -> 16 (80 keys)."""
    cap = 64 if width <= 128 else 32
    if seq_k > 128:
        return cap
    return min((n for n in (64, 32, 16) if n <= cap), key=lambda n: (triton.cdiv(seq_k, n) * n, -n))


def configs(head_dim: int, seq_q: int, seq_k: int, itemsize: int):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) from the preferred down to the smallest: each next
    one drops a pipeline stage, else halves the key block, else the query block. Starting points
    for sm_80/sm_90, to be tuned on a GPU."""
    width = sum(chunks(head_dim))
    block_n = key_block(seq_k, width)
    block_m = min(128 if width <= 128 and itemsize <= 2 else 64, max(16, triton.next_power_of_2(seq_q)))
    stages = 1 if seq_k <= block_n else (3 if width <= 64 else 2)
    # 8 warps keep wide heads from spilling; a 16-key block over a narrow head gives them too little to load
    warps = 8 if width > 128 or (width > 64 and block_n > 16) else 4
    while True:
        yield block_m, block_n, warps, stages
        if stages > 1:
            stages -= 1
        elif block_n > 16:
            block_n //= 2
        elif block_m > 16:
            block_m //= 2
        else:
            return


def estimated_shared_memory(config, width: int, itemsize: int) -> int:
    """The resident Q tile and the pipelined K and V tiles of a config, in bytes (the compiler's
    scratch comes on top)."""
    block_m, block_n, _, stages = config
    return itemsize * width * (block_m + 2 * stages * block_n)


def alignment(itemsize: int, strides) -> int:
    """The largest power-of-two element count, up to 16 bytes, that divides every stride."""
    align = 16 // itemsize
    while align > 1 and any(s % align for s in strides):
        align //= 2
    return align


_PLANS: dict = {}  # (shared memory limit, dtype, head dim, queries or 129, keys or 129, ALIGN) -> config


def _plan(q, head_dim, sq, sk, align, launch):
    """The first config whose tiles fit the device's opt-in shared memory: estimated, then, on a GPU,
    as the kernel compiled for the launch reports it."""
    limit = shared_memory_of(q)
    key = (limit, q.dtype, head_dim, min(sq, 129), min(sk, 129), align)
    plan = _PLANS.get(key)
    if plan is None:
        width = sum(chunks(head_dim))
        for plan in configs(head_dim, sq, sk, q.element_size()):
            if estimated_shared_memory(plan, width, q.element_size()) > limit:
                continue
            _, args, kwargs = launch(plan)
            used = compiled_shared_memory(q, _attention_kernel, args, kwargs)
            if used is None or used <= limit:
                break
        _PLANS[key] = plan
    return plan


def attention(q, k, v, *, scale=None):
    b, sq, h, d = q.shape
    sk = k.shape[1]
    o = torch.empty((b, sq, h, d), dtype=q.dtype, device=q.device)
    if o.numel() == 0:  # nothing to compute (and no default scale for head dim 0)
        return o
    qk_scale = (1.0 / math.sqrt(d) if scale is None else float(scale)) * _LOG2E
    # a size-1 dimension's stride is never used: it must not limit the alignment
    strides = [s if n > 1 else 0 for t in (q, k, v, o) for s, n in zip(t.stride()[:3], (b, t.shape[1], h))]
    align = alignment(q.element_size(), strides)
    strides = [s // align for s in strides]
    d0, d1 = chunks(d)

    def launch(config):
        block_m, block_n, warps, stages = config
        q_tiles = triton.cdiv(sq, block_m)
        g, linear = grid(q_tiles, b * h)
        return g, (q, k, v, o, h, sq, sk, q_tiles, q_tiles * b * h, qk_scale, *strides), dict(
            D=d, D0=d0, D1=d1, ALIGN=align, BLOCK_M=block_m, BLOCK_N=block_n, IEEE=q.dtype == torch.float32,
            UPCAST=q.device.type == "cpu" and q.dtype == torch.bfloat16, LINEAR=linear,
            num_warps=warps, num_stages=stages)

    g, args, kwargs = launch(_plan(q, d, sq, sk, align, launch))
    _attention_kernel[g](*args, **kwargs)
    return o
