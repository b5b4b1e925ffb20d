"""group_norm: the reference against a naive float64 definition, and every kernel backend
against the reference by the numerics rule."""
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


def _check(backend, shape, groups, dtype, layout="contiguous", silu=True, affine=True, mean=2.0):
    x = randn(shape, dtype, DEVICE, mean=mean, channels_last=layout == "channels_last")
    if layout == "strided":
        x = strided(x, 0)
    skip_unless_backend(backend, "group_norm", backends.Inputs(x.device, x.dtype, channels_last=layout == "channels_last"))
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
