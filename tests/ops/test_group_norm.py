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
@pytest.mark.parametrize("shape, groups", [((2, 32, 5, 7), 8), ((1, 60, 9, 9), 2), ((2, 30, 3, 3), 1)], ids=str)
def test_group_norm(backend, dtype, layout, shape, groups):
    _check(backend, shape, groups, dtype, layout)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("shape", [(2, 12, 11), (1, 8, 2, 3, 4)], ids=str)
@pytest.mark.parametrize("silu, affine", [(False, False), (True, False), (False, True)])
def test_group_norm_ranks_and_options(backend, shape, silu, affine):
    _check(backend, shape, 4, torch.float32, silu=silu, affine=affine)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", [(2, 320, 64, 64), (2, 960, 32, 32), (2, 1280, 8, 8), (2, 1920, 16, 16),
                                   (1, 512, 64, 64), (1, 256, 256, 256), (1, 128, 1024, 1024)], ids=str)
def test_group_norm_model_shapes_gpu(backend, layout, shape):
    _check(backend, shape, 32, torch.float16, layout)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_group_norm_split_reduction(layout, dtype):
    """Groups too large for one program: HW split into chunks, the last one partial, statistics
    merged across programs."""
    from fastdiff._triton.group_norm import plan
    shape = (1, 64, 24, 24)
    assert plan(1, 64, 24 * 24, 2, layout == "channels_last").split > 1
    _check("triton", shape, 2, dtype, layout, mean=-3.0)
