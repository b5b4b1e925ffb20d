"""cfg_combine and sampler_step: references against a naive float64 definition, and every
kernel backend against the reference by the numerics rule."""
import pytest
import torch

from fastdiff import backends, ops, reference
from fastdiff.testing import assert_like, assert_numerics, randn, skip_unless_backend, strided, to64

KERNEL_BACKENDS = ["triton", "cuda"]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(1, 4, 9, 7), (2, 4, 64, 64), (3, 5, 1, 33), (1, 4, 64)]


def _backend_or_skip(name, op, x):
    skip_unless_backend(name, op, backends.Inputs(x.device, x.dtype))


def naive_sampler_step(x, m, coeffs, s, prev, noise):
    """The contract written out element by element in float64, independent of the reference."""
    p, q, a, b, c, e = coeffs
    if s is not None:
        n = x.shape[0]
        m = m[:n] + s * (m[n:] - m[:n])
    d = p * x + q * m
    out = a * x + b * d
    if prev is not None:
        out = out + c * prev
    if noise is not None:
        out = out + e * noise
    return out, d


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("extras", ["none", "prev", "noise", "both"])
def test_reference_sampler_step_matches_naive(guided, extras):
    x = randn((2, 3, 5, 4), torch.float64)
    m = randn(((4 if guided else 2), 3, 5, 4), torch.float64)
    prev = randn(x.shape, torch.float64) if extras in ("prev", "both") else None
    noise = randn(x.shape, torch.float64) if extras in ("noise", "both") else None
    coeffs = tuple(torch.randn(6, dtype=torch.float64).tolist())
    s = 7.5 if guided else None
    got = reference.sampler_step(x, m, coeffs, guidance_scale=s, prev=prev, noise=noise)
    want = naive_sampler_step(x, m, coeffs, s, prev, noise)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    as_tensor = reference.sampler_step(x, m, torch.tensor(coeffs, dtype=torch.float64), guidance_scale=s,
                                       prev=prev, noise=noise)
    for g, w in zip(as_tensor, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_reference_cfg_combine_matches_naive():
    u, c = randn((2, 4, 8, 8), torch.float64), randn((2, 4, 8, 8), torch.float64)
    torch.testing.assert_close(reference.cfg_combine(u, c, 5.0), u + 5.0 * (c - u), rtol=1e-12, atol=1e-12)


def _case(shape, dtype, layout, guided, extras, model_dtype=None):
    n = shape[0]
    x = randn(shape, dtype, DEVICE)
    m = randn((2 * n if guided else n,) + shape[1:], model_dtype or dtype, DEVICE)
    prev = randn(shape, dtype, DEVICE) if extras in ("prev", "both") else None
    noise = randn(shape, dtype, DEVICE) if extras in ("noise", "both") else None
    if layout == "channels_last":
        x, m, prev, noise = (t if t is None else t.to(memory_format=torch.channels_last)
                             for t in (x, m, prev, noise))
    elif layout == "strided":
        x, prev = strided(x, 1), (None if prev is None else strided(prev, 1))
    return x, m, prev, noise


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("extras", ["none", "both"])
def test_sampler_step(backend, dtype, shape, guided, extras):
    _check_sampler_step(backend, dtype, shape, "contiguous", guided, extras, coeff_tensor=False)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("coeff_tensor", [False, True])
def test_sampler_step_layouts_and_device_coeffs(backend, dtype, layout, coeff_tensor):
    _check_sampler_step(backend, dtype, (2, 4, 13, 11), layout, True, "prev", coeff_tensor=coeff_tensor)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_sampler_step_fp16_model_fp32_latents(backend):
    _check_sampler_step(backend, torch.float32, (2, 4, 16, 16), "contiguous", True, "noise",
                        coeff_tensor=False, model_dtype=torch.float16)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("view", ["table column", "broadcast"])
def test_sampler_step_reads_a_coeffs_view_by_value(backend, view):
    """A coeffs tensor may be a view: a column of a (6, T) table, or one value broadcast to six."""
    x, m, prev, noise = _case((2, 4, 9, 7), torch.float32, "contiguous", True, "both")
    _backend_or_skip(backend, "sampler_step", x)
    table = torch.randn(6, 10, device=DEVICE)
    arg = table[:, 4] if view == "table column" else table[0, 4].expand(6)
    coeffs = tuple(arg.tolist())
    with ops.use_backend(backend):
        got = ops.sampler_step(x, m, arg, guidance_scale=3.0, prev=prev, noise=noise)
    baseline = reference.sampler_step(x, m, coeffs, guidance_scale=3.0, prev=prev, noise=noise)
    ref64 = reference.sampler_step(*to64(x, m), coeffs, guidance_scale=3.0, prev=to64(prev), noise=to64(noise))
    assert_numerics(got, baseline, ref64, name=f"sampler_step[{backend}]")


def test_sampler_step_differentiates_through_coeffs_alone():
    x, m = randn((2, 3, 4, 5), torch.float64), randn((4, 3, 4, 5), torch.float64)
    prev, noise = randn((2, 3, 4, 5), torch.float64), randn((2, 3, 4, 5), torch.float64)
    coeffs = torch.randn(6, dtype=torch.float64, requires_grad=True)
    x_next, d = ops.sampler_step(x, m, coeffs, guidance_scale=2.0, prev=prev, noise=noise)
    (x_next.sum() + 3 * d.sum()).backward()
    naive = coeffs.detach().clone().requires_grad_()
    want_next, want_d = naive_sampler_step(x, m, naive.unbind(0), 2.0, prev, noise)
    (want_next.sum() + 3 * want_d.sum()).backward()
    torch.testing.assert_close(coeffs.grad, naive.grad, rtol=1e-12, atol=1e-12)


def _check_sampler_step(backend, dtype, shape, layout, guided, extras, coeff_tensor, model_dtype=None):
    x, m, prev, noise = _case(shape, dtype, layout, guided, extras, model_dtype)
    _backend_or_skip(backend, "sampler_step", x)
    coeffs = tuple(torch.randn(6, dtype=torch.float64).tolist())
    s = 7.5 if guided else None
    arg = torch.tensor(coeffs, dtype=torch.float32, device=DEVICE) if coeff_tensor else coeffs
    with ops.use_backend(backend):
        got = ops.sampler_step(x, m, arg, guidance_scale=s, prev=prev, noise=noise)
    baseline = reference.sampler_step(x, m, coeffs, guidance_scale=s, prev=prev, noise=noise)
    ref64 = reference.sampler_step(*to64(x, m), coeffs, guidance_scale=s, prev=to64(prev), noise=to64(noise))
    assert_numerics(got, baseline, ref64, name=f"sampler_step[{backend}]")
    for out in got:
        assert_like(out, x, channels_last=layout == "channels_last")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_cfg_combine(backend, dtype, layout):
    u, c = randn((2, 4, 17, 9), dtype, DEVICE), randn((2, 4, 17, 9), dtype, DEVICE, mean=-0.3)
    if layout == "channels_last":
        u, c = u.to(memory_format=torch.channels_last), c.to(memory_format=torch.channels_last)
    elif layout == "strided":
        u = strided(u, 2)
    _backend_or_skip(backend, "cfg_combine", c)
    with ops.use_backend(backend):
        got = ops.cfg_combine(u, c, 7.5)
    assert_numerics(got, reference.cfg_combine(u, c, 7.5), reference.cfg_combine(*to64(u, c), 7.5))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("shape", [(1, 4, 64, 64), (8, 16, 128, 128), (2, 4, 128, 128)], ids=str)
def test_sampler_step_full_size_gpu(backend, shape):
    _check_sampler_step(backend, torch.float16, shape, "contiguous", True, "both", coeff_tensor=True)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_sampler_step_in_cuda_graph(backend):
    """Coefficients read on the device: a captured step replays with new coefficients."""
    x, m, prev, _ = _case((2, 4, 32, 32), torch.float16, "contiguous", True, "prev")
    _backend_or_skip(backend, "sampler_step", x)
    coeffs = torch.zeros(6, device="cuda")
    with ops.use_backend(backend):
        ops.sampler_step(x, m, coeffs, guidance_scale=3.0, prev=prev)  # compile before capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out, _ = ops.sampler_step(x, m, coeffs, guidance_scale=3.0, prev=prev)
    for _ in range(2):
        new = tuple(torch.randn(6, dtype=torch.float64).tolist())
        coeffs.copy_(torch.tensor(new))
        graph.replay()
        want = reference.sampler_step(*to64(x, m), new, guidance_scale=3.0, prev=to64(prev))[0]
        base = reference.sampler_step(x, m, new, guidance_scale=3.0, prev=prev)[0]
        assert_numerics(out, base, want)
