"""Triton GroupNorm (+ SiLU) with fp32 statistics, reduced across programs.

x is viewed as (N, HW, C) through strides, so NCHW and channels_last run the same kernels with no
copy. A program owns a column block of whole groups (GPB groups, contiguous channels: full rows
in channels_last) and a chunk of HW; it walks the block in (BLOCK_HW, BLOCK_C) tiles. A group
wider than a tile (more than TILE channels) takes one group per block, walked in strips of
BLOCK_C channels. The channels per group are a compile-time constant: then a block's first channel
and its width are provable multiples of 8 for every SD norm (groups of 10 to 60 channels), and
channels_last rows load as 16-byte vectors.

Every group is shifted by a pivot, its first element x[n, 0, first channel], which every program
of the group reads the same: the tiles' mean and M2 (sum of squared deviations) are taken of
x - pivot and merged by Chan's formula, never E[x^2] - E[x]^2. x - pivot is exact wherever x lies
within a factor 2 of the pivot (a mean large against the spread) and its statistics are of the
order of the spread, so a large mean costs no precision; nor does the normalize pass, which
computes (x - pivot) * scale + shift and never rounds a product of size |x| / std.

When one chunk covers HW, one kernel does everything (statistics, then the normalize pass
re-reads the group from L2). Otherwise `_stats_kernel` writes each chunk's (mean, M2) to an fp32
workspace and `_normalize_kernel` merges a group's chunks and normalizes its own chunk; it walks
the chunks in the reverse order, so its first reads find what the statistics pass left in L2.

The grid is (column block, sample) for the fused kernel and (chunk, column block, sample) for the
split ones. Past CUDA's limit of 65535 programs on axes 1 and 2 (a batch of more than 65535, or as
many column blocks when split), programs are numbered linearly instead, in the same order, on axis
0 (up to 2^31 - 1) and spilling to axis 1, so any batch and any number of groups launches.
"""
import dataclasses
import math

import torch
import triton
import triton.language as tl

from fastdiff._layout import dense_like

from ._device import INTERPRETED_SM_COUNT, MAX_GRID_X, MAX_GRID_YZ, sm_count_of

TILE = 4096            # elements per (BLOCK_HW, BLOCK_C) tile: 32 fp32 per thread at 4 warps
ROW_CHANNELS = 128     # channels_last: aim for rows of about this many contiguous channels
PROGRAMS_PER_SM = 4    # speed policy: split until this many programs per SM keep every SM streaming
MAX_SPLIT = 256        # chunks per group: bounds the workspace each program merges
WIDE_ROWS = 64         # NCHW groups wider than a tile: rows (contiguous elements) per channel in a tile


def grid(shape):
    """The launch grid of a (chunks, column blocks, samples) or (column blocks, samples) set of
    programs, and whether it is linear: that shape itself within CUDA's limits, else all of them
    numbered linearly on axis 0, spilling to axis 1 (fewer than 65535 of them extra)."""
    if all(d <= MAX_GRID_YZ for d in shape[1:]):
        return tuple(shape), False
    programs = math.prod(shape)
    y = max(1, triton.cdiv(programs, MAX_GRID_X))
    return (max(1, triton.cdiv(programs, y)), y), True


@triton.jit
def _linear_program(TOTAL, REVERSE: tl.constexpr):
    """This program's index on a linear grid (axis 0 fastest), walked backwards when REVERSE, and
    whether it is one of the TOTAL (those past it, on the last row of a grid spilling to axis 1,
    do nothing)."""
    pid = tl.program_id(1).to(tl.int64) * tl.num_programs(0) + tl.program_id(0)
    ok = pid < TOTAL
    pid = tl.where(ok, pid, 0)
    if REVERSE:
        pid = TOTAL - 1 - pid
    return pid, ok


@triton.jit
def _split_program(SPLIT, CBLOCKS, TOTAL, LINEAR: tl.constexpr, REVERSE: tl.constexpr):
    """(chunk, column block, sample, has work) of a program of the split kernels."""
    if LINEAR:
        pid, ok = _linear_program(TOTAL, REVERSE)
        s, cb, n = (pid % SPLIT).to(tl.int32), (pid // SPLIT % CBLOCKS).to(tl.int32), pid // SPLIT // CBLOCKS
    else:
        s, cb, n = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        if REVERSE:
            s, cb, n = SPLIT - 1 - s, CBLOCKS - 1 - cb, tl.num_programs(2) - 1 - n
        ok = True
    return s, cb, n.to(tl.int64), ok


@triton.jit
def _group_of_column(CPG, GPB_P2: tl.constexpr, BLOCK_C: tl.constexpr):
    """(GPB_P2, BLOCK_C) membership of each tile column in the tile's groups."""
    return (tl.arange(0, BLOCK_C) // CPG)[None, :] == tl.arange(0, GPB_P2)[:, None]


@triton.jit
def _columns(x_ptr, cb, n, ok, C, CPG, s_n, s_c, GPB: tl.constexpr, BLOCK_C: tl.constexpr):
    """Channels of column block cb, their mask, their offsets in sample n, and the pivot of each
    one's group, the group's first element x[n, 0, first channel]: a scalar for one group, else
    a (1, BLOCK_C) row."""
    cols = tl.arange(0, BLOCK_C)
    c = cb * GPB * CPG + cols
    c_ok = (cols < GPB * CPG) & (c < C) & ok
    base = n * s_n + c.to(tl.int64) * s_c
    if GPB == 1:
        pivot = tl.load(x_ptr + n * s_n + (cb * CPG).to(tl.int64) * s_c, mask=ok, other=0.0).to(tl.float32)
    else:
        pivot = tl.load(x_ptr + base - (cols % CPG).to(tl.int64) * s_c, mask=c_ok, other=0.0).to(tl.float32)
        pivot = pivot[None, :]
    return c, c_ok, base, pivot


@triton.jit
def _chunk_stats(x_ptr, base, c_ok, pivot, hw_lo, hw_hi, s_hw, CPG,
                 GPB_P2: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    """Mean and M2 of x - pivot for each of the tile's groups over rows [hw_lo, hw_hi)."""
    member = _group_of_column(CPG, GPB_P2, BLOCK_C)
    rows = tl.arange(0, BLOCK_HW)
    count = 0.0
    mean = tl.zeros((GPB_P2,), tl.float32)
    m2 = tl.zeros((GPB_P2,), tl.float32)
    for start in range(hw_lo, hw_hi, BLOCK_HW):
        hw = start + rows
        mask = (hw < hw_hi)[:, None] & c_ok[None, :]
        # masked elements read as the pivot: 0 once shifted
        x = tl.load(x_ptr + base[None, :] + hw.to(tl.int64)[:, None] * s_hw, mask=mask, other=pivot)
        x = x.to(tl.float32) - pivot
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
def _normalize_chunk(x_ptr, y_ptr, w_ptr, b_ptr, base, c, c_ok, pivot, hw_lo, hw_hi, s_hw, CPG, mean, rstd,
                     HAS_W: tl.constexpr, HAS_B: tl.constexpr, SILU: tl.constexpr,
                     GPB_P2: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    """y = (x - pivot) * scale + shift over rows [hw_lo, hw_hi); mean is that of x - pivot."""
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
        offs = base[None, :] + hw.to(tl.int64)[:, None] * s_hw
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        y = (x - pivot) * scale[None, :] + shift[None, :]
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _wide_stats(x_ptr, first, ok, hw_lo, hw_hi, s_hw, s_c, CPG, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    """One group of more than a tile of channels, starting at offset `first`, in strips of BLOCK_C
    channels: mean and M2 of x - pivot over rows [hw_lo, hw_hi)."""
    pivot = tl.load(x_ptr + first, mask=ok, other=0.0).to(tl.float32)
    rows = tl.arange(0, BLOCK_HW)
    cols = tl.arange(0, BLOCK_C)
    count = 0.0
    mean = 0.0
    m2 = 0.0
    for c0 in range(0, CPG, BLOCK_C):
        c_ok = (c0 + cols < CPG) & ok
        base = first + (c0 + cols).to(tl.int64) * s_c
        width = tl.minimum(CPG - c0, BLOCK_C)
        for start in range(hw_lo, hw_hi, BLOCK_HW):
            hw = start + rows
            mask = (hw < hw_hi)[:, None] & c_ok[None, :]
            x = tl.load(x_ptr + base[None, :] + hw.to(tl.int64)[:, None] * s_hw, mask=mask, other=0.0)
            x = tl.where(mask, x.to(tl.float32) - pivot, 0.0)
            n_t = (tl.minimum(hw_hi - start, BLOCK_HW) * width).to(tl.float32)
            mean_t = tl.sum(x) / n_t
            d = tl.where(mask, x - mean_t, 0.0)
            total = count + n_t
            delta = mean_t - mean
            mean += delta * (n_t / total)
            m2 += tl.sum(d * d) + delta * delta * (count * n_t / total)
            count = total
    return mean, m2


@triton.jit
def _wide_normalize(x_ptr, y_ptr, w_ptr, b_ptr, first, first_c, ok, hw_lo, hw_hi, s_hw, s_c, CPG, mean, rstd,
                    HAS_W: tl.constexpr, HAS_B: tl.constexpr, SILU: tl.constexpr,
                    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    pivot = tl.load(x_ptr + first, mask=ok, other=0.0).to(tl.float32)
    rows = tl.arange(0, BLOCK_HW)
    cols = tl.arange(0, BLOCK_C)
    for c0 in range(0, CPG, BLOCK_C):
        c_ok = (c0 + cols < CPG) & ok
        base = first + (c0 + cols).to(tl.int64) * s_c
        scale = tl.full((BLOCK_C,), 1.0, tl.float32) * rstd
        if HAS_W:
            scale *= tl.load(w_ptr + first_c + c0 + cols, mask=c_ok, other=1.0)
        shift = -mean * scale
        if HAS_B:
            shift += tl.load(b_ptr + first_c + c0 + cols, mask=c_ok, other=0.0)
        for start in range(hw_lo, hw_hi, BLOCK_HW):
            hw = start + rows
            mask = (hw < hw_hi)[:, None] & c_ok[None, :]
            offs = base[None, :] + hw.to(tl.int64)[:, None] * s_hw
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            y = (x - pivot) * scale[None, :] + shift[None, :]
            if SILU:
                y = y * tl.sigmoid(y)
            tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _stats(x_ptr, cb, n, ok, C, CPG, s_n, s_hw, s_c, hw_lo, hw_hi, GPB: tl.constexpr, GPB_P2: tl.constexpr,
           BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr):
    """(mean, M2) of x - pivot over rows [hw_lo, hw_hi) for each group of column block cb, (GPB_P2,) each."""
    if WIDE:  # GPB == 1
        mean_1, m2_1 = _wide_stats(x_ptr, n * s_n + (cb * CPG).to(tl.int64) * s_c, ok, hw_lo, hw_hi, s_hw, s_c,
                                   CPG, BLOCK_HW, BLOCK_C)
        mean = tl.zeros((GPB_P2,), tl.float32) + mean_1
        m2 = tl.zeros((GPB_P2,), tl.float32) + m2_1
    else:
        _, c_ok, base, pivot = _columns(x_ptr, cb, n, ok, C, CPG, s_n, s_c, GPB, BLOCK_C)
        mean, m2 = _chunk_stats(x_ptr, base, c_ok, pivot, hw_lo, hw_hi, s_hw, CPG, GPB_P2, BLOCK_HW, BLOCK_C)
    return mean, m2


@triton.jit
def _normalize(x_ptr, y_ptr, w_ptr, b_ptr, cb, n, ok, C, CPG, s_n, s_hw, s_c, hw_lo, hw_hi, mean, rstd,
               HAS_W: tl.constexpr, HAS_B: tl.constexpr, SILU: tl.constexpr, GPB: tl.constexpr,
               GPB_P2: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr):
    if WIDE:
        _wide_normalize(x_ptr, y_ptr, w_ptr, b_ptr, n * s_n + (cb * CPG).to(tl.int64) * s_c, cb * CPG, ok,
                        hw_lo, hw_hi, s_hw, s_c, CPG, tl.sum(mean, 0), tl.sum(rstd, 0), HAS_W, HAS_B, SILU,
                        BLOCK_HW, BLOCK_C)
    else:
        c, c_ok, base, pivot = _columns(x_ptr, cb, n, ok, C, CPG, s_n, s_c, GPB, BLOCK_C)
        _normalize_chunk(x_ptr, y_ptr, w_ptr, b_ptr, base, c, c_ok, pivot, hw_lo, hw_hi, s_hw, CPG, mean, rstd,
                         HAS_W, HAS_B, SILU, GPB_P2, BLOCK_HW, BLOCK_C)


@triton.jit
def _fused_kernel(x_ptr, w_ptr, b_ptr, y_ptr, C, HW, CPG: tl.constexpr, CBLOCKS, TOTAL, s_n, s_hw, s_c, eps,
                  HAS_W: tl.constexpr, HAS_B: tl.constexpr, SILU: tl.constexpr, GPB: tl.constexpr,
                  GPB_P2: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr,
                  LINEAR: tl.constexpr):
    if LINEAR:
        pid, ok = _linear_program(TOTAL, False)
        cb, n = (pid % CBLOCKS).to(tl.int32), pid // CBLOCKS
    else:
        cb, n, ok = tl.program_id(0), tl.program_id(1).to(tl.int64), True
    mean, m2 = _stats(x_ptr, cb, n, ok, C, CPG, s_n, s_hw, s_c, 0, HW, GPB, GPB_P2, BLOCK_HW, BLOCK_C, WIDE)
    rstd = 1.0 / tl.sqrt(m2 / (HW * 1.0 * CPG) + eps)
    _normalize(x_ptr, y_ptr, w_ptr, b_ptr, cb, n, ok, C, CPG, s_n, s_hw, s_c, 0, HW, mean, rstd,
               HAS_W, HAS_B, SILU, GPB, GPB_P2, BLOCK_HW, BLOCK_C, WIDE)


@triton.jit
def _stats_kernel(x_ptr, ws_ptr, C, G, HW, CPG: tl.constexpr, CHUNK, SPLIT, CBLOCKS, TOTAL, s_n, s_hw, s_c,
                  GPB: tl.constexpr, GPB_P2: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
                  WIDE: tl.constexpr, LINEAR: tl.constexpr):
    s, cb, n, ok = _split_program(SPLIT, CBLOCKS, TOTAL, LINEAR, False)
    hw_lo = s * CHUNK
    mean, m2 = _stats(x_ptr, cb, n, ok, C, CPG, s_n, s_hw, s_c, hw_lo, tl.minimum(hw_lo + CHUNK, HW),
                      GPB, GPB_P2, BLOCK_HW, BLOCK_C, WIDE)
    # workspace (N, G, SPLIT, 2): this chunk's (mean, M2) for each of the tile's groups
    g = cb * GPB + tl.arange(0, GPB_P2)
    g_ok = (tl.arange(0, GPB_P2) < GPB) & (g < G) & ok
    offs = ((n * G + g) * SPLIT + s) * 2
    tl.store(ws_ptr + offs, mean, mask=g_ok)
    tl.store(ws_ptr + offs + 1, m2, mask=g_ok)


@triton.jit
def _normalize_kernel(x_ptr, ws_ptr, w_ptr, b_ptr, y_ptr, C, G, HW, CPG: tl.constexpr, CHUNK, SPLIT, CBLOCKS, TOTAL,
                      s_n, s_hw, s_c, eps, HAS_W: tl.constexpr, HAS_B: tl.constexpr, SILU: tl.constexpr,
                      GPB: tl.constexpr, GPB_P2: tl.constexpr, SPLIT_P2: tl.constexpr, BLOCK_HW: tl.constexpr,
                      BLOCK_C: tl.constexpr, WIDE: tl.constexpr, LINEAR: tl.constexpr):
    # reversed program order: the chunks read last by _stats_kernel are normalized first
    s, cb, n, ok = _split_program(SPLIT, CBLOCKS, TOTAL, LINEAR, True)
    # merge the group's chunks (Chan et al., all at once): chunk j has rows [j*CHUNK, (j+1)*CHUNK)
    j = tl.arange(0, SPLIT_P2)
    g = cb * GPB + tl.arange(0, GPB_P2)
    m = ((tl.arange(0, GPB_P2) < GPB) & (g < G) & ok)[:, None] & (j < SPLIT)[None, :]
    offs = ((n * G + g) * SPLIT)[:, None] * 2 + j[None, :] * 2
    part_mean = tl.load(ws_ptr + offs, mask=m, other=0.0)
    part_m2 = tl.load(ws_ptr + offs + 1, mask=m, other=0.0)
    part_n = (tl.minimum((j + 1) * CHUNK, HW) - j * CHUNK).to(tl.float32)[None, :] * CPG
    count = HW * 1.0 * CPG
    mean = tl.sum(tl.where(m, part_n * part_mean, 0.0), 1) / count
    d = part_mean - mean[:, None]
    m2 = tl.sum(tl.where(m, part_m2 + part_n * d * d, 0.0), 1)
    rstd = 1.0 / tl.sqrt(m2 / count + eps)
    hw_lo = s * CHUNK
    _normalize(x_ptr, y_ptr, w_ptr, b_ptr, cb, n, ok, C, CPG, s_n, s_hw, s_c, hw_lo, tl.minimum(hw_lo + CHUNK, HW),
               mean, rstd, HAS_W, HAS_B, SILU, GPB, GPB_P2, BLOCK_HW, BLOCK_C, WIDE)


@dataclasses.dataclass(frozen=True)
class Plan:
    gpb: int       # groups per column block
    block_c: int
    block_hw: int
    split: int     # chunks per group along HW; 1 runs the fused kernel
    chunk: int     # rows per chunk, a multiple of block_hw
    wide: bool = False  # a group's channels span several tiles: strips of block_c channels


def plan(n: int, c: int, hw: int, num_groups: int, channels_last: bool,
         sm_count: int = INTERPRETED_SM_COUNT) -> Plan:
    """Tiles and grid for a device of sm_count SMs (the launcher passes its device's; the default
    is the stand-in used off a GPU). channels_last takes several groups per block so that each
    loaded row is a long contiguous run of channels; NCHW takes one group, each column being
    contiguous along HW. A group of more than TILE channels is walked in strips: whole rows of TILE
    channels in channels_last, WIDE_ROWS contiguous rows of each channel in NCHW.
    Chunks split HW until about PROGRAMS_PER_SM * sm_count programs run, one tile at least per
    chunk."""
    cpg = c // num_groups
    gpb = min(num_groups, max(1, ROW_CHANNELS // cpg)) if channels_last else 1
    wide = gpb * cpg > TILE  # then gpb == 1
    if wide:
        block_hw = 1 if channels_last else min(triton.next_power_of_2(hw), WIDE_ROWS)
        block_c = TILE // block_hw
    else:
        block_c = triton.next_power_of_2(gpb * cpg)
        block_hw = max(1, min(triton.next_power_of_2(hw), TILE // block_c))
    tiles = triton.cdiv(hw, block_hw)
    programs = n * triton.cdiv(num_groups, gpb)
    split = max(1, min(tiles, MAX_SPLIT, math.ceil(PROGRAMS_PER_SM * sm_count / programs)))
    chunk = triton.cdiv(tiles, split) * block_hw
    return Plan(gpb, block_c, block_hw, triton.cdiv(hw, chunk), chunk, wide)


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
    p = plan(n, c, hw, num_groups, channels_last, sm_count_of(x))  # SM count asked once per device
    w = None if weight is None else weight.to(torch.float32).contiguous()
    b = None if bias is None else bias.to(torch.float32).contiguous()
    flags = dict(HAS_W=w is not None, HAS_B=b is not None, SILU=bool(silu))
    w, b = (x if w is None else w), (x if b is None else b)  # unused pointers when absent
    blocks = dict(GPB=p.gpb, GPB_P2=triton.next_power_of_2(p.gpb), BLOCK_HW=p.block_hw, BLOCK_C=p.block_c,
                  WIDE=p.wide)
    cblocks = triton.cdiv(num_groups, p.gpb)
    programs = n * cblocks * p.split
    g, blocks["LINEAR"] = grid((cblocks, n) if p.split == 1 else (p.split, cblocks, n))
    if p.split == 1:
        _fused_kernel[g](x, w, b, y, c, hw, cpg, cblocks, programs, s_n, s_hw, s_c, float(eps),
                         **flags, **blocks, num_warps=4)
        return y
    ws = torch.empty((n, num_groups, p.split, 2), dtype=torch.float32, device=x.device)
    _stats_kernel[g](x, ws, c, num_groups, hw, cpg, p.chunk, p.split, cblocks, programs, s_n, s_hw, s_c, **blocks,
                     num_warps=4)
    _normalize_kernel[g](x, ws, w, b, y, c, num_groups, hw, cpg, p.chunk, p.split, cblocks, programs, s_n, s_hw,
                         s_c, float(eps), **flags, SPLIT_P2=triton.next_power_of_2(p.split), **blocks, num_warps=4)
    return y
