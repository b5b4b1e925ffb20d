"""group_norm: the reference against a naive float64 definition, and every kernel backend
against the reference by the numerics rule."""
import importlib
import math

import pytest
import torch

from fastdiff import backends, ops, reference
from fastdiff.testing import assert_like, assert_numerics, randn, skip_unless_backend, strided, to64

KERNEL_BACKENDS = ["triton", "cuda"]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def naive_group_norm(x, g, w, b, eps, silu):
    n, c = x.shape[:2]
    xg = x.reshape(n, g, -1)
    mean = xg.mean(-1, keepdim=True)
    var = ((xg - mean) ** 2).mean(-1, keepdim=True)
    y = ((xg - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.dim() - 2)
    if w is not None:
        y = y * w.reshape(shape)
    if b is not None:
        y = y + b.reshape(shape)
    return y * torch.sigmoid(y) if silu else y


@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_reference_matches_naive(silu, affine):
    x = randn((2, 12, 5, 3), torch.float64, mean=3.0)
    w, b = (randn((12,), torch.float64), randn((12,), torch.float64)) if affine else (None, None)
    torch.testing.assert_close(reference.group_norm(x, 4, w, b, 1e-5, silu=silu),
                               naive_group_norm(x, 4, w, b, 1e-5, silu), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_reference_keeps_its_digits_at_a_large_mean(layout):
    x = randn((2, 64, 8, 8), torch.float64, mean=1000.0, std=0.01, channels_last=layout == "channels_last")
    torch.testing.assert_close(reference.group_norm(x, 8, None, None, 1e-5),
                               naive_group_norm(x, 8, None, None, 1e-5, False), rtol=1e-9, atol=1e-9)


def test_reference_takes_one_value_per_group():
    """N = 1 and one value per group: every value is its group's mean, so the output is the bias."""
    x, w, b = randn((1, 4, 1, 1), torch.float64), randn((4,), torch.float64), randn((4,), torch.float64)
    torch.testing.assert_close(reference.group_norm(x, 4, w, b, 1e-5, silu=True),
                               naive_group_norm(x, 4, w, b, 1e-5, True), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_group_norm_one_value_per_group(backend):
    _check(backend, (1, 4, 1, 1), 4, torch.float32)


def _check(backend, shape, groups, dtype, layout="contiguous", silu=True, affine=True, mean=2.0):
    x = randn(shape, dtype, DEVICE, mean=mean, channels_last=layout == "channels_last")
    if layout == "strided":
        x = strided(x, 0)
    inputs = backends.Inputs(x.device, x.dtype, channels_last=layout == "channels_last")
    skip_unless_backend(backend, "group_norm", inputs)
    c = shape[1]
    w, b = (randn((c,), torch.float32, DEVICE), randn((c,), torch.float32, DEVICE)) if affine else (None, None)
    with ops.use_backend(backend):
        got = ops.group_norm(x, groups, w, b, 1e-5, silu=silu)
    assert_numerics(got, reference.group_norm(x, groups, w, b, 1e-5, silu=silu),
                    reference.group_norm(to64(x), groups, to64(w), to64(b), 1e-5, silu=silu),
                    name=f"group_norm[{backend}]")
    assert_like(got, x, channels_last=layout == "channels_last")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
# (2, 160, ...) / 16: 10 channels per group as in SD's 320 / 32, and under channels_last a last
# block holding fewer groups than the others
@pytest.mark.parametrize("shape, groups", [((2, 32, 5, 7), 8), ((1, 60, 9, 9), 2), ((2, 30, 3, 3), 1),
                                           ((2, 160, 5, 6), 16)], ids=str)
def test_group_norm(backend, dtype, layout, shape, groups):
    _check(backend, shape, groups, dtype, layout)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("path, layout, shape, groups", [
    ("on chip", "contiguous", (2, 32, 8, 8), 8),        # 16-byte vectors
    ("on chip", "contiguous", (2, 30, 5, 7), 3),        # odd runs: one element at a time
    ("on chip", "channels_last", (2, 64, 4, 4), 8),
    ("on chip", "channels_last", (2, 15, 4, 4), 5),
    ("split", "contiguous", (1, 8, 96, 96), 1),         # 5 chunks, the last one partial
    ("split", "contiguous", (1, 8, 95, 97), 1),
    ("split", "channels_last", (1, 16, 96, 96), 2),     # by pixel: 8 channels a group
    ("split", "channels_last", (1, 7, 104, 104), 1),    # by pixel: one element at a time
    ("split", "channels_last", (1, 64, 128, 128), 16),  # by pixel: 4 channels a group, 16 groups a row
    ("split", "channels_last", (1, 2400, 18, 18), 12),  # by pixel: column blocks of 250 lanes, the last part idle
    ("split", "channels_last", (1, 8200, 4, 4), 2),     # runs of 1025 vectors: by group
], ids=str)
def test_cuda_group_norm_paths(dtype, path, layout, shape, groups):
    """The CUDA kernels: one block per group on chip, or the split reduction (channels_last: by
    pixel, all of a pixel's groups a block), in both layouts, in vectors or element by element."""
    _check("cuda", shape, groups, dtype, layout)
    from fastdiff.cuda_ops import _C, _CODES
    ws = _C.group_norm_workspace_size(shape[0], shape[1], math.prod(shape[2:]), groups, _CODES[dtype])
    assert (ws > 0) == (path == "split")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("shape", [(2, 12, 11), (1, 8, 2, 3, 4)], ids=str)
@pytest.mark.parametrize("silu, affine", [(False, False), (True, False), (False, True)])
def test_group_norm_ranks_and_options(backend, shape, silu, affine):
    _check(backend, shape, 4, torch.float32, silu=silu, affine=affine)


# Every distinct GroupNorm input of the SD1.5 and SDXL U-Nets (batch 2) and the SD VAE decoder at
# 512px (batch 1), taken by hooking ops.group_norm in a forward of fastdiff.models on the meta device,
# and the largest of the SDXL VAE decoder at 1024px.
MODEL_SHAPES = [
    ((2, 320, 32, 32), 32), ((2, 320, 64, 64), 32), ((2, 320, 128, 128), 32),
    ((2, 640, 16, 16), 32), ((2, 640, 32, 32), 32), ((2, 640, 64, 64), 32), ((2, 640, 128, 128), 32),
    ((2, 960, 32, 32), 32), ((2, 960, 64, 64), 32), ((2, 960, 128, 128), 32),
    ((2, 1280, 8, 8), 32), ((2, 1280, 16, 16), 32), ((2, 1280, 32, 32), 32), ((2, 1280, 64, 64), 32),
    ((2, 1920, 16, 16), 32), ((2, 1920, 32, 32), 32), ((2, 1920, 64, 64), 32),
    ((2, 2560, 8, 8), 32), ((2, 2560, 16, 16), 32), ((2, 2560, 32, 32), 32),
    ((1, 128, 512, 512), 32), ((1, 256, 256, 256), 32), ((1, 256, 512, 512), 32),
    ((1, 512, 64, 64), 32), ((1, 512, 128, 128), 32), ((1, 512, 256, 256), 32),
    ((1, 512, 512, 512), 32), ((1, 256, 1024, 1024), 32), ((1, 128, 1024, 1024), 32),
]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape, groups", MODEL_SHAPES, ids=str)
def test_group_norm_model_shapes_gpu(backend, layout, shape, groups):
    _check(backend, shape, groups, torch.float16, layout)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_group_norm_split_reduction(layout, dtype):
    """Groups too large for one program: HW split into chunks, the last one partial, statistics
    merged across programs."""
    from fastdiff._triton.group_norm import plan
    shape = (1, 64, 24, 24)
    assert plan(1, 64, 24 * 24, 2, layout == "channels_last").split > 1
    _check("triton", shape, 2, dtype, layout, mean=-3.0)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
# one program per group (Triton's fused kernel, CUDA's on-chip one), then HW split into chunks
# whose statistics are merged across programs (both backends)
@pytest.mark.parametrize("shape, groups", [((2, 32, 5, 7), 8), ((1, 64, 32, 32), 2)], ids=str)
def test_group_norm_large_mean(backend, layout, shape, groups):
    """x = 1000 + 0.01 randn: the mean is 1e5 spreads. fp32 statistics of x itself lose the mean, and
    a normalize pass x * scale + shift rounds x * scale (about 1e5 |w|): torch's error is about
    ulp(1e5) = 0.008. Statistics and normalize of x - pivot (an element of the group) are accurate
    to a few ulps of the output, so the kernels are held to a quarter of torch's error here."""
    cl = layout == "channels_last"
    x = randn(shape, torch.float32, DEVICE, mean=1000.0, std=0.01, channels_last=cl)
    skip_unless_backend(backend, "group_norm", backends.Inputs(x.device, x.dtype, channels_last=cl))
    if backend == "triton":
        from fastdiff._triton.group_norm import plan
        assert (plan(*shape[:2], shape[2] * shape[3], groups, cl).split > 1) == (shape[0] == 1)
    c = shape[1]
    w, b = randn((c,), torch.float32, DEVICE), randn((c,), torch.float32, DEVICE)
    with ops.use_backend(backend):
        got = ops.group_norm(x, groups, w, b, 1e-5)
    # bar and oracle computed in NCHW: torch's CPU channels_last kernel cancels here (off by ~10 in
    # fp32, by ~1e-4 in float64)
    assert_numerics(got, reference.group_norm(x.contiguous(), groups, w, b, 1e-5),
                    reference.group_norm(to64(x).contiguous(), groups, to64(w), to64(b), 1e-5),
                    name=f"group_norm[{backend}]", factor=0.25)


@pytest.mark.parametrize("layout, shape, groups", [
    pytest.param("contiguous", (1, 2**20 + 3, 1), 1, marks=pytest.mark.slow),  # > 2^20 channels a group
    ("contiguous", (1, 4097, 5), 1),         # strips of 512 channels x 8 rows (5 valid), one program
    ("channels_last", (1, 8200, 2, 2), 2),   # strips of whole rows, HW in 4 chunks, 2 groups
], ids=str)
def test_group_norm_wide_groups(layout, shape, groups):
    """Groups of more than TILE channels are walked in strips of channels: a tile of a whole group
    of more than 2^20 channels exceeded Triton's limit of 2^20 elements per block."""
    from fastdiff._triton.group_norm import TILE
    assert shape[1] // groups > TILE
    _check("triton", shape, groups, torch.float32, layout, silu=False, mean=-4.0)


def test_group_norm_grid_within_cuda_limits():
    """A batch of 65536 and more: CUDA takes 2^31 - 1 programs on grid axis 0 but 65535 on axes 1
    and 2, so past that the programs are numbered linearly, from axis 0."""
    from fastdiff._triton.group_norm import grid
    assert grid((32, 65535)) == ((32, 65535), False) and grid((9, 32, 2)) == ((9, 32, 2), False)
    for shape in [(32, 65536), (256, 32, 65536), (256, 65536, 1), (1, 2**31), (256, 2**16, 2**20)]:
        (x, y), linear = grid(shape)
        programs = math.prod(shape)
        assert linear and 1 <= x <= 2**31 - 1 and 1 <= y <= 65535 and programs <= x * y < programs + y


@pytest.mark.parametrize("layout, shape, groups, launched", [
    ("contiguous", (3, 32, 5, 7), 8, ((5, 5), True)),         # fused: 8 column blocks x 3 samples
    ("channels_last", (2, 64, 24, 24), 2, ((5, 4), True)),  # split: 9 chunks x 1 column block x 2
], ids=str)
def test_group_norm_linear_grid(monkeypatch, layout, shape, groups, launched):
    """Programs numbered linearly across a grid that spills to axis 1 (here past 1 program on axes
    1 and 2 and 5 on axis 0), the extra ones doing nothing."""
    gn = importlib.import_module("fastdiff._triton.group_norm")  # the package's group_norm is the launcher
    monkeypatch.setattr(gn, "MAX_GRID_X", 5)
    monkeypatch.setattr(gn, "MAX_GRID_YZ", 1)
    grids, grid = [], gn.grid
    monkeypatch.setattr(gn, "grid", lambda shape: grids.append(grid(shape)) or grids[-1])
    _check("triton", shape, groups, torch.float32, layout)
    assert grids == [launched]
