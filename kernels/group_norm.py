"""Triton GroupNorm (+ SiLU) with fp32 statistics, reduced across programs.

x is viewed as (N, HW, C) through strides, so NCHW and channels_last run the same kernels with no
copy. A program owns a tile column of whole groups (GPB groups, contiguous channels: full rows in
channels_last) and a chunk of HW. Each tile's per-group mean and M2 (sum of squared deviations)
are exact in fp32 and merged by Chan's formula, never E[x^2] - E[x]^2.

When one chunk covers HW, one kernel does everything (statistics, then the normalize pass
re-reads the group from L2). Otherwise `_stats_kernel` writes each chunk's (mean, M2) to an fp32
workspace and `_normalize_kernel` merges a group's chunks and normalizes its own chunk; it walks
the chunks in the reverse order, so its first reads find what the statistics pass left in L2.
"""
import dataclasses
import math

import torch
import triton
import triton.language as tl

from fastdiff._layout import dense_like

TILE = 4096            # elements per (BLOCK_HW, BLOCK_C) tile: 32 fp32 per thread at 4 warps
ROW_CHANNELS = 128     # channels_last: aim for rows of about this many contiguous channels
TARGET_PROGRAMS = 528  # 4 per SM of an H100, enough to keep every SM streaming
MAX_SPLIT = 256        # chunks per group: bounds the workspace each program merges


@triton.jit
def _group_of_column(CPG, GPB_P2: tl.constexpr, BLOCK_C: tl.constexpr):
    """(GPB_P2, BLOCK_C) membership of each tile column in the tile's groups."""
    return (tl.arange(0, BLOCK_C) // CPG)[None, :] == tl.arange(0, GPB_P2)[:, None]


@triton.jit
def _chunk_stats(x_ptr, base, c_ok, hw_lo, hw_hi, s_hw, CPG,
                 GPB_P2: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    """Mean and M2 of each of the tile's groups over rows [hw_lo, hw_hi)."""
    member = _group_of_column(CPG, GPB_P2, BLOCK_C)
    rows = tl.arange(0, BLOCK_HW)
    count = 0.0
    mean = tl.zeros((GPB_P2,), tl.float32)
    m2 = tl.zeros((GPB_P2,), tl.float32)
    for start in range(hw_lo, hw_hi, BLOCK_HW):
        hw = start + rows
        mask = (hw < hw_hi)[:, None] & c_ok[None, :]
        x = tl.load(x_ptr + base + hw.to(tl.int64)[:, None] * s_hw, mask=mask, other=0.0).to(tl.float32)
        n_t = (tl.minimum(hw_hi - start, BLOCK_HW) * CPG).to(tl.float32)
        mean_t = tl.sum(tl.where(member, tl.sum(x, 0)[None, :], 0.0), 1) / n_t
        d = tl.where(mask, x - tl.sum(tl.where(member, mean_t[:, None], 0.0), 0)[None, :], 0.0)
        m2_t = tl.sum(tl.where(member, tl.sum(d * d, 0)[None, :], 0.0), 1)
        # Chan et al.: merge the tile into the running statistics
        total = count + n_t
        delta = mean_t - mean
        mean += delta * (n_t / total)
        m2 += m2_t + delta * delta * (count * n_t / total)
        count = total
    return mean, m2


@triton.jit
def _normalize_chunk(x_ptr, y_ptr, w_ptr, b_ptr, base, c, c_ok, hw_lo, hw_hi, s_hw, CPG, mean, rstd,
                     HAS_W: tl.constexpr, HAS_B: tl.constexpr, SILU: tl.constexpr,
                     GPB_P2: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    member = _group_of_column(CPG, GPB_P2, BLOCK_C)
    scale = tl.sum(tl.where(member, rstd[:, None], 0.0), 0)
    if HAS_W:
        scale *= tl.load(w_ptr + c, mask=c_ok, other=1.0)
    shift = -tl.sum(tl.where(member, mean[:, None], 0.0), 0) * scale
    if HAS_B:
        shift += tl.load(b_ptr + c, mask=c_ok, other=0.0)
    rows = tl.arange(0, BLOCK_HW)
    for start in range(hw_lo, hw_hi, BLOCK_HW):
        hw = start + rows
        mask = (hw < hw_hi)[:, None] & c_ok[None, :]
        offs = base + hw.to(tl.int64)[:, None] * s_hw
        y = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) * scale[None, :] + shift[None, :]
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _columns(cb, n, C, CPG, s_n, s_c, GPB: tl.constexpr, BLOCK_C: tl.constexpr):
    """Channels of column block cb, their mask, and their offsets in sample n."""
    cols = tl.arange(0, BLOCK_C)
    c = cb * GPB * CPG + cols
    c_ok = (cols < GPB * CPG) & (c < C)
    return c, c_ok, n.to(tl.int64) * s_n + c.to(tl.int64)[None, :] * s_c


@triton.jit
def _fused_kernel(x_ptr, w_ptr, b_ptr, y_ptr, C, HW, CPG, s_n, s_hw, s_c, eps,
                  HAS_W: tl.constexpr, HAS_B: tl.constexpr, SILU: tl.constexpr, GPB: tl.constexpr,
                  GPB_P2: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    cb, n = tl.program_id(0), tl.program_id(1)
    c, c_ok, base = _columns(cb, n, C, CPG, s_n, s_c, GPB, BLOCK_C)
    mean, m2 = _chunk_stats(x_ptr, base, c_ok, 0, HW, s_hw, CPG, GPB_P2, BLOCK_HW, BLOCK_C)
    rstd = 1.0 / tl.sqrt(m2 / (HW * CPG * 1.0) + eps)
    _normalize_chunk(x_ptr, y_ptr, w_ptr, b_ptr, base, c, c_ok, 0, HW, s_hw, CPG, mean, rstd,
                     HAS_W, HAS_B, SILU, GPB_P2, BLOCK_HW, BLOCK_C)


@triton.jit
def _stats_kernel(x_ptr, ws_ptr, C, G, HW, CPG, CHUNK, s_n, s_hw, s_c, GPB: tl.constexpr,
                  GPB_P2: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    s, cb, n = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    _, c_ok, base = _columns(cb, n, C, CPG, s_n, s_c, GPB, BLOCK_C)
    hw_lo = s * CHUNK
    mean, m2 = _chunk_stats(x_ptr, base, c_ok, hw_lo, tl.minimum(hw_lo + CHUNK, HW), s_hw, CPG,
                            GPB_P2, BLOCK_HW, BLOCK_C)
    # workspace (N, G, SPLIT, 2): this chunk's (mean, M2) for each of the tile's groups
    g = cb * GPB + tl.arange(0, GPB_P2)
    g_ok = (tl.arange(0, GPB_P2) < GPB) & (g < G)
    offs = ((n * G + g).to(tl.int64) * tl.num_programs(0) + s) * 2
    tl.store(ws_ptr + offs, mean, mask=g_ok)
    tl.store(ws_ptr + offs + 1, m2, mask=g_ok)


@triton.jit
def _normalize_kernel(x_ptr, ws_ptr, w_ptr, b_ptr, y_ptr, C, G, HW, CPG, CHUNK, s_n, s_hw, s_c, eps,
                      HAS_W: tl.constexpr, HAS_B: tl.constexpr, SILU: tl.constexpr, GPB: tl.constexpr,
                      GPB_P2: tl.constexpr, SPLIT_P2: tl.constexpr, BLOCK_HW: tl.constexpr,
                      BLOCK_C: tl.constexpr):
    # reversed program order: the chunks read last by _stats_kernel are normalized first
    split = tl.num_programs(0)
    s = split - 1 - tl.program_id(0)
    cb = tl.num_programs(1) - 1 - tl.program_id(1)
    n = tl.num_programs(2) - 1 - tl.program_id(2)
    # merge the group's chunks (Chan et al., all at once): chunk j has rows [j*CHUNK, (j+1)*CHUNK)
    j = tl.arange(0, SPLIT_P2)
    g = cb * GPB + tl.arange(0, GPB_P2)
    ok = ((tl.arange(0, GPB_P2) < GPB) & (g < G))[:, None] & (j < split)[None, :]
    offs = ((n * G + g).to(tl.int64) * split)[:, None] * 2 + j[None, :] * 2
    part_mean = tl.load(ws_ptr + offs, mask=ok, other=0.0)
    part_m2 = tl.load(ws_ptr + offs + 1, mask=ok, other=0.0)
    part_n = ((tl.minimum((j + 1) * CHUNK, HW) - j * CHUNK) * CPG).to(tl.float32)[None, :]
    total = HW * CPG * 1.0
    mean = tl.sum(tl.where(ok, part_n * part_mean, 0.0), 1) / total
    d = part_mean - mean[:, None]
    m2 = tl.sum(tl.where(ok, part_m2 + part_n * d * d, 0.0), 1)
    rstd = 1.0 / tl.sqrt(m2 / total + eps)
    c, c_ok, base = _columns(cb, n, C, CPG, s_n, s_c, GPB, BLOCK_C)
    hw_lo = s * CHUNK
    _normalize_chunk(x_ptr, y_ptr, w_ptr, b_ptr, base, c, c_ok, hw_lo, tl.minimum(hw_lo + CHUNK, HW), s_hw,
                     CPG, mean, rstd, HAS_W, HAS_B, SILU, GPB_P2, BLOCK_HW, BLOCK_C)


@dataclasses.dataclass(frozen=True)
class Plan:
    gpb: int       # groups per column block
    block_c: int
    block_hw: int
    split: int     # chunks per group along HW; 1 runs the fused kernel
    chunk: int     # rows per chunk, a multiple of block_hw


def plan(n: int, c: int, hw: int, num_groups: int, channels_last: bool) -> Plan:
    """Tiles and grid. channels_last takes several groups per block so that each loaded row is a
    long contiguous run of channels; NCHW takes one group, each column being contiguous along HW.
    Chunks split HW until about TARGET_PROGRAMS programs run, one tile at least per chunk."""
    cpg = c // num_groups
    gpb = min(num_groups, max(1, ROW_CHANNELS // cpg)) if channels_last else 1
    block_c = triton.next_power_of_2(gpb * cpg)
    block_hw = max(1, min(triton.next_power_of_2(hw), TILE // block_c))
    tiles = triton.cdiv(hw, block_hw)
    programs = n * triton.cdiv(num_groups, gpb)
    split = min(tiles, MAX_SPLIT, math.ceil(TARGET_PROGRAMS / programs))
    chunk = triton.cdiv(tiles, split) * block_hw
    return Plan(gpb, block_c, block_hw, triton.cdiv(hw, chunk), chunk)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, *, silu=False):
    fmt, (x,) = dense_like(x)
    y = torch.empty_like(x, memory_format=fmt)
    if x.numel() == 0:
        return y
    n, c = x.shape[:2]
    hw = x.numel() // (n * c)
    channels_last = fmt is not torch.contiguous_format  # channels_last or channels_last_3d
    s_n, s_hw, s_c = (c * hw, c, 1) if channels_last else (c * hw, 1, hw)  # (N, HW, C) strides
    cpg = c // num_groups
    p = plan(n, c, hw, num_groups, channels_last)
    w = None if weight is None else weight.to(torch.float32).contiguous()
    b = None if bias is None else bias.to(torch.float32).contiguous()
    flags = dict(HAS_W=w is not None, HAS_B=b is not None, SILU=bool(silu))
    w, b = (x if w is None else w), (x if b is None else b)  # unused pointers when absent
    blocks = dict(GPB=p.gpb, GPB_P2=triton.next_power_of_2(p.gpb), BLOCK_HW=p.block_hw, BLOCK_C=p.block_c)
    cblocks = triton.cdiv(num_groups, p.gpb)
    if p.split == 1:
        _fused_kernel[(cblocks, n)](x, w, b, y, c, hw, cpg, s_n, s_hw, s_c, float(eps), **flags, **blocks,
                                    num_warps=4)
        return y
    ws = torch.empty((n, num_groups, p.split, 2), dtype=torch.float32, device=x.device)
    grid = (p.split, cblocks, n)
    _stats_kernel[grid](x, ws, c, num_groups, hw, cpg, p.chunk, s_n, s_hw, s_c, **blocks, num_warps=4)
    _normalize_kernel[grid](x, ws, w, b, y, c, num_groups, hw, cpg, p.chunk, s_n, s_hw, s_c, float(eps),
                            **flags, SPLIT_P2=triton.next_power_of_2(p.split), **blocks, num_warps=4)
    return y
