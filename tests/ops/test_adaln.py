"""adaln: the reference against a naive float64 definition, and every kernel backend against the
reference by the numerics rule, plain and gated, on strided views and wide rows."""
import pytest
import torch
import torch.nn.functional as F

from fastdiff import backends, ops, reference
from fastdiff.testing import assert_numerics, randn, skip_unless_backend, strided, to64

BACKENDS = ["torch", "triton", "cuda"]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def naive_adaln(x, shift, scale, eps, gate=None, residual=None):
    h = x if gate is None else residual + gate[:, None] * x
    mean = h.mean(-1, keepdim=True)
    var = ((h - mean) ** 2).mean(-1, keepdim=True)
    y = (h - mean) / torch.sqrt(var + eps) * (1 + scale[:, None]) + shift[:, None]
    return y if gate is None else (h, y)


@pytest.mark.parametrize("gated", [False, True])
def test_reference_matches_naive(gated):
    x, shift, scale = randn((2, 5, 12), torch.float64, mean=3.0), randn((2, 12), torch.float64), \
        randn((2, 12), torch.float64)
    extra = dict(gate=randn((2, 12), torch.float64), residual=randn((2, 5, 12), torch.float64)) if gated else {}
    torch.testing.assert_close(reference.adaln(x, shift, scale, 1e-6, **extra),
                               naive_adaln(x, shift, scale, 1e-6, **extra), rtol=1e-12, atol=1e-12)


def _inputs(shape, dtype, *, gated, layout="contiguous", mean=1.0):
    b, t, d = shape
    x = randn(shape, dtype, DEVICE, mean=mean)
    mod = randn((b, 6 * d), dtype, DEVICE)  # the block's modulation projection, chunked as the models do
    shift, scale, gate = mod[:, :d], mod[:, d:2 * d], mod[:, 2 * d:3 * d]
    residual = randn(shape, dtype, DEVICE, mean=-mean) if gated else None
    if layout == "strided":
        x = strided(x, 1)
        residual = strided(residual, 2) if gated else None
    elif layout == "transposed":  # a last dim that is not contiguous
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    return x, shift, scale, (gate if gated else None), residual


def _check(backend, shape, dtype, *, gated, layout="contiguous", mean=1.0):
    x, shift, scale, gate, residual = _inputs(shape, dtype, gated=gated, layout=layout, mean=mean)
    skip_unless_backend(backend, "adaln", backends.Inputs(x.device, x.dtype))
    with ops.use_backend(backend):
        got = ops.adaln(x, shift, scale, 1e-6, gate=gate, residual=residual)
    want = reference.adaln(x, shift, scale, 1e-6, gate=gate, residual=residual)
    want64 = reference.adaln(*to64(x, shift, scale), 1e-6, gate=to64(gate), residual=to64(residual))
    assert_numerics(got, want, want64, name=f"adaln[{backend}]")
    for out in got if gated else (got,):
        assert out.dtype == x.dtype and out.shape == x.shape and out.is_contiguous()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("shape, layout", [((1, 77, 48), "contiguous"), ((1, 5, 72), "strided"),
                                           ((2, 3, 40), "transposed")], ids=str)
def test_adaln(backend, dtype, gated, shape, layout):
    _check(backend, shape, dtype, gated=gated, layout=layout)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gated", [False, True])
def test_adaln_wide_rows(backend, gated):
    """A row wider than the kernel's register tile is walked in chunks, the last one partial."""
    from fastdiff._triton.adaln import BLOCK_MAX
    _check(backend, (1, 2, BLOCK_MAX + 1000), torch.float32, gated=gated, mean=-3.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adaln_large_mean(backend):
    """A mean of 1000 spreads: two-pass statistics keep the digits E[x^2] - E[x]^2 would lose."""
    x = randn((2, 4, 64), torch.float32, DEVICE, mean=1000.0, std=1.0)
    shift, scale = randn((2, 64), torch.float32, DEVICE), randn((2, 64), torch.float32, DEVICE)
    skip_unless_backend(backend, "adaln", backends.Inputs(x.device, x.dtype))
    with ops.use_backend(backend):
        got = ops.adaln(x, shift, scale)
    assert_numerics(got, F.layer_norm(x, (64,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None],
                    reference.adaln(*to64(x, shift, scale)), name=f"adaln[{backend}]")
