"""Every op is a sound torch.library custom op on every backend that runs here: torch.library.opcheck
(schema, fake kernel against the real outputs' shapes and strides, autograd registration, AOT
dispatch with dynamic shapes) over a matrix of layouts and dtypes, and torch.compile(fullgraph=True)
with Python floats that change between calls and two shapes."""
import pytest
import torch

from fastdiff import ops
from fastdiff._layout import output_format
from fastdiff.testing import fused_qkv, randn, strided

pytestmark = pytest.mark.slow  # every op x backend x layout x dtype through opcheck and torch.compile

BACKENDS = ["torch", "triton"]  # triton under the interpreter on the CPU
DTYPES = [torch.float32, torch.float16]


def _make(shape, dtype):
    return randn(shape, dtype, "cuda" if torch.cuda.is_available() else "cpu")


# (N, C, *spatial) inputs in each layout the ops meet: dense in one memory format, dense in none
# (a transposed (N, L, C) view read as (N, C, L)), strided, and expanded (stride 0).
LAYOUTS = {
    "contiguous": lambda shape, dt: _make(shape, dt),
    "channels_last": lambda shape, dt: _make(shape, dt).to(memory_format=torch.channels_last),
    "channels_last_3d": lambda shape, dt: _make(shape[:2] + (2,) + shape[2:], dt).to(
        memory_format=torch.channels_last_3d),
    "transposed": lambda shape, dt: _make((shape[0], shape[2] * shape[3], shape[1]), dt).transpose(1, 2),
    "strided": lambda shape, dt: strided(_make(shape, dt), 2),
    "expanded": lambda shape, dt: _make((1,) + shape[1:], dt).expand(shape),
}
SHAPE = (2, 4, 3, 5)


def _opcheck(backend, op, args):
    with ops.use_backend(backend):
        torch.library.opcheck(op, args)


def _assert_layout(out, x):
    assert out.is_contiguous(memory_format=output_format(x)), (out.stride(), x.stride())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_group_norm_opcheck(backend, dtype, layout):
    x = LAYOUTS[layout](SHAPE, dtype)
    w, b = randn((4,), torch.float32, x.device), randn((4,), torch.float32, x.device)
    _opcheck(backend, torch.ops.fastdiff.group_norm.default, (x, 2, w, b, 1e-5, True))
    with ops.use_backend(backend):
        _assert_layout(ops.group_norm(x, 2, w, b, silu=True), x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cfg_combine_opcheck(backend, dtype, layout):
    c = LAYOUTS[layout](SHAPE, dtype)
    u = _make(c.shape, dtype)
    _opcheck(backend, torch.ops.fastdiff.cfg_combine.default, (u, c, 3.5))
    with ops.use_backend(backend):
        _assert_layout(ops.cfg_combine(u, c, 3.5), c)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("coeffs", ["floats", "table column"])
def test_sampler_step_opcheck(backend, dtype, layout, coeffs):
    x = LAYOUTS[layout](SHAPE, dtype)
    m = _make((2 * x.shape[0],) + tuple(x.shape[1:]), dtype)
    prev, noise = _make(x.shape, dtype), _make(x.shape, dtype)
    table = torch.randn(6, 10, dtype=torch.float64, device=x.device)
    floats, tensor = (table[:, 3].tolist(), None) if coeffs == "floats" else ([], table[:, 3])
    _opcheck(backend, torch.ops.fastdiff.sampler_step.default, (x, m, floats, tensor, 7.5, prev, noise))
    with ops.use_backend(backend):
        for out in ops.sampler_step(x, m, floats or tensor, guidance_scale=7.5, prev=prev, noise=noise):
            _assert_layout(out, x)


ATTENTION_LAYOUTS = {
    "contiguous": lambda dt: tuple(_make((2, 9, 2, 16), dt) for _ in range(3)),
    "fused qkv": lambda dt: fused_qkv(2, 9, 2, 16, dt, "cuda" if torch.cuda.is_available() else "cpu"),
    "heads first": lambda dt: tuple(_make((2, 2, 9, 16), dt).transpose(1, 2) for _ in range(3)),
    "expanded": lambda dt: tuple(_make((1, 9, 2, 16), dt).expand(2, 9, 2, 16) for _ in range(3)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ATTENTION_LAYOUTS)
def test_attention_opcheck(backend, dtype, layout):
    q, k, v = ATTENTION_LAYOUTS[layout](dtype)
    _opcheck(backend, torch.ops.fastdiff.attention.default, (q, k, v, 0.3))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gated", [False, True])
def test_adaln_opcheck(backend, dtype, gated):
    x, mod = _make((2, 5, 8), dtype), _make((2, 48), dtype)  # shift, scale, gate: chunks of one projection
    gate, residual = (mod[:, 16:24], strided(_make((2, 5, 8), dtype), 1)) if gated else (None, None)
    _opcheck(backend, torch.ops.fastdiff.adaln.default, (x, mod[:, :8], mod[:, 8:16], gate, residual, 1e-6))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rope", [False, True])
def test_qk_norm_rope_opcheck(backend, dtype, rope):
    q, k, _ = fused_qkv(2, 5, 3, 8, dtype, "cuda" if torch.cuda.is_available() else "cpu")
    w = randn((8,), torch.float32, q.device)
    angles = torch.rand(5, 8, device=q.device)
    cos, sin = (angles.cos(), angles.sin()) if rope else (None, None)
    _opcheck(backend, torch.ops.fastdiff.qk_norm_rope.default, (q, k, w, w, cos, sin, 1e-6))


# --- torch.compile: floats that change between calls, two shapes ------------------------------

CALLS = {  # op: fn(x, s) with s a Python float, x of shape (N, 4, H, W)
    "group_norm": lambda x, s: ops.group_norm(x, 2, eps=s * 1e-5, silu=True),
    "cfg_combine": lambda x, s: ops.cfg_combine(x, x * 0.5, s),
    "sampler_step": lambda x, s: ops.sampler_step(x, torch.cat([x, x * s]), [s, 1 - s, 0.5, s, 0.0, 0.0],
                                                  guidance_scale=s + 1.0)[0],
    "attention": lambda x, s: ops.attention(*(x.reshape(x.shape[0], -1, 1, 16),) * 3, scale=s),
    "adaln": lambda x, s: ops.adaln(x.flatten(2), x[:, 0].flatten(1), x[:, 1].flatten(1) * s, eps=s * 1e-6),
    # (N, 4, 1, HW) q and k, normalized and rotated in place
    "qk_norm_rope": lambda x, s: torch.cat(ops.qk_norm_rope(
        x.flatten(2)[:, :, None] * 1.0, x.flatten(2)[:, :, None] * s, x[0, 0].flatten(), x[0, 1].flatten(),
        x[0].flatten(1).cos(), x[0].flatten(1).sin(), eps=s * 1e-6)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", CALLS)
def test_fullgraph_compile_with_changing_floats(backend, op):
    torch._dynamo.reset()
    fn = CALLS[op]
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    with ops.use_backend(backend):
        for shape in ((1, 4, 4, 5), (2, 4, 6, 2)):
            for s in (0.5, 1.5, 2.5):
                x = _make(shape, torch.float32)
                torch.testing.assert_close(compiled(x, s), fn(x, s), rtol=1e-5, atol=1e-5)


def test_fake_tensors_take_the_custom_op():
    """Outside torch.compile the ops call their launcher directly; fake tensors (export, tracing)
    still reach the fake kernels through the custom op."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode, ops.use_backend("triton"):  # a real launch would fail on fake data
        x = mode.from_tensor(torch.randn(2, 4, 3, 5).to(memory_format=torch.channels_last))
        y = ops.group_norm(x, 2, silu=True)
        x_next, d = ops.sampler_step(x, torch.cat([x, x]), [1.0, 0.0, 1.0, 0.0, 0.0, 0.0], guidance_scale=2.0)
    for out in (y, x_next, d):
        assert type(out).__name__ == "FakeTensor" and out.is_contiguous(memory_format=torch.channels_last)
