"""attention: the reference against a naive float64 softmax(q k^T s) v, and every kernel backend
against the reference by the numerics rule, on strided views of one fused QKV tensor."""
import math

import pytest
import torch

from fastdiff import backends, ops, reference
from fastdiff.testing import assert_numerics, fused_qkv, randn, skip_unless_backend, to64

KERNEL_BACKENDS = ["triton", "cuda"]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def naive_attention(q, k, v, scale):
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    return torch.einsum("bhqk,bkhd->bqhd", torch.softmax(s, -1), v)


@pytest.mark.parametrize("sq, sk, d", [(17, 17, 40), (9, 77, 72)])
def test_reference_matches_naive(sq, sk, d):
    q = randn((2, sq, 3, d), torch.float64)
    k, v = randn((2, sk, 3, d), torch.float64), randn((2, sk, 3, d), torch.float64)
    torch.testing.assert_close(reference.attention(q, k, v, scale=0.3), naive_attention(q, k, v, 0.3),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["torch"] + KERNEL_BACKENDS)
@pytest.mark.parametrize("where", ["q", "k"])
def test_nan_reaches_the_outputs_it_touches(backend, where):
    """A NaN query row gives a NaN output row, a NaN key NaN for every query of its head, as in
    float64; every other output stays exact."""
    q, k, v = (randn((1, s, 2, 16), torch.float32, DEVICE) for s in (5, 7, 7))
    (q if where == "q" else k)[0, 1, 0, 3] = float("nan")
    skip_unless_backend(backend, "attention", backends.Inputs(q.device, q.dtype, head_dim=16, seq_k=7))
    with ops.use_backend(backend):
        got = ops.attention(q, k, v)
    want = naive_attention(*to64(q, k, v), 0.25)
    assert want.isnan().any()
    assert_numerics(got, reference.attention(q, k, v, scale=0.25), want, name=f"attention[{backend}]")


def _check(backend, b, sq, sk, h, d, dtype, scale=None):
    if sq == sk:  # self-attention: q, k, v are views of one fused QKV projection
        q, k, v = fused_qkv(b, sq, h, d, dtype, DEVICE)
    else:  # cross-attention: q alone, k and v views of one fused KV projection
        q = randn((b, sq, h, d), dtype, DEVICE, mean=0.3)
        _, k, v = fused_qkv(b, sk, h, d, dtype, DEVICE)
    skip_unless_backend(backend, "attention", backends.Inputs(q.device, q.dtype, head_dim=d, seq_k=sk))
    with ops.use_backend(backend):
        got = ops.attention(q, k, v, scale=scale)
    s = 1 / math.sqrt(d) if scale is None else scale
    assert_numerics(got, reference.attention(q, k, v, scale=s), reference.attention(*to64(q, k, v), scale=s),
                    name=f"attention[{backend}]")
    assert got.shape == q.shape and got.dtype == q.dtype and got.is_contiguous()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("b, sq, sk, h, d", [
    (1, 77, 77, 2, 40),      # SD head dim, odd length
    (2, 129, 129, 1, 72),    # crosses a key and a query block
    (1, 33, 77, 2, 80),      # cross-attention to 77 text tokens
    (2, 20, 257, 1, 160),    # long odd key sequence, large head dim
    (1, 64, 154, 2, 64),
    (1, 50, 77, 1, 96),
    (1, 40, 40, 1, 32),
    (1, 19, 19, 2, 8),       # the shipped U-Net's head dim
    (2, 9, 20, 1, 16),
    (1, 6, 5, 1, 3),
], ids=str)
def test_attention(backend, dtype, b, sq, sk, h, d):
    _check(backend, b, sq, sk, h, d, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("d", [40, 64, 72, 80, 128, 160])
@pytest.mark.parametrize("sk", [77, 154, 257, 512])
def test_cuda_attention_head_dims_and_key_chunks(dtype, d, sk):
    """Every padded head dim of the CUDA kernel, keys staged at once or streamed through shared memory
    in chunks (512 keys past head dim 80); self-attention on a fused QKV tensor at 77 keys."""
    _check("cuda", 1, sk if sk == 77 else 19, sk, 1, d, dtype)


@pytest.mark.parametrize("d", [1, 8, 16, 32, 40, 64, 72, 80, 96, 128, 160, 256])
def test_triton_attention_head_dim_chunks(d):
    """The head dim as a power-of-two chunk plus at most one masked one, each >= 16 (a tensor-core
    dot's K): no more than a quarter of the work is padding from 40 up (40 -> 32 + 16, 72 -> 64 + 16)."""
    at = pytest.importorskip("fastdiff._triton.attention")
    d0, d1 = at.chunks(d)
    for c in (d0, d1):
        assert c == 0 or (c >= 16 and c & (c - 1) == 0)
    assert d0 + d1 >= d and d0 <= max(d, 16) and (d1 == 0 or d1 < d0)
    if d >= 40:
        assert d / (d0 + d1) >= 0.8


@pytest.mark.parametrize("sk, width, block", [(1, 64, 16), (16, 64, 16), (77, 64, 16), (96, 64, 32), (100, 64, 16),
                                              (120, 64, 64), (128, 64, 64), (4096, 64, 64), (64, 160, 32),
                                              (4096, 160, 32)])
def test_triton_attention_key_block_pads_least(sk, width, block):
    assert pytest.importorskip("fastdiff._triton.attention").key_block(sk, width) == block


@pytest.mark.parametrize("d", [8, 40, 64, 72, 80, 128, 160, 256])
@pytest.mark.parametrize("sk", [77, 257, 16384])
def test_triton_attention_configs_fit_shared_memory(d, sk):
    at = pytest.importorskip("fastdiff._triton.attention")
    width = sum(at.chunks(d))
    for budget in (232448, 166912, 101376):  # opt-in maxima of sm_90, sm_80, sm_86/89
        fits = [c for c in at.configs(d, 4096, sk, 2) if at.estimated_shared_memory(c, width, 2) <= budget]
        assert fits and fits[-1] == (16, 16, fits[-1][2], 1)


def test_triton_attention_plan_asks_the_compiled_kernel(monkeypatch):
    """On a GPU the plan keeps the first config whose compiled kernel fits the device's shared memory,
    whatever the estimate said: here the first two are reported over the limit."""
    at = pytest.importorskip("fastdiff._triton.attention")
    asked = []

    def compiled(t, kernel, args, kwargs):
        asked.append((kwargs["BLOCK_M"], kwargs["BLOCK_N"], kwargs["num_warps"], kwargs["num_stages"]))
        return 10**6 if len(asked) <= 2 else 1000

    monkeypatch.setattr(at, "compiled_shared_memory", compiled)
    monkeypatch.setattr(at, "shared_memory_of", lambda t: 123457)  # a limit no other test plans for
    monkeypatch.setattr(at, "_PLANS", {})
    q, k, v = (randn((1, s, 1, 40), torch.float16, DEVICE) for s in (5, 300, 300))
    at.attention(q, k, v)
    assert len(asked) == 3 and asked == list(at.configs(40, 5, 300, 2))[:3]
    at.attention(q, k, v)  # planned once
    assert len(asked) == 3


@pytest.mark.slow
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_attention_4097_queries_cross(backend):
    _check(backend, 1, 4097, 77, 1, 40, torch.float32, scale=0.2)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("b, sq, sk, h, d", [
    (2, 4096, 4096, 8, 40), (2, 4096, 77, 8, 40), (2, 4097, 4097, 10, 64), (2, 1024, 1024, 16, 72),
    (1, 4608, 4608, 24, 128), (1, 2048, 77, 4, 160), (1, 16384, 16384, 2, 64), (2, 1024, 1024, 4, 256),
], ids=str)
def test_attention_full_size_gpu(backend, dtype, b, sq, sk, h, d):
    _check(backend, b, sq, sk, h, d, dtype)


def test_triton_attention_grid_within_cuda_limits():
    """batch x heads of 65536 and more: CUDA takes 2^31 - 1 programs on grid axis 0 but 65535 on
    axes 1 and 2, so past that the programs are numbered linearly, from axis 0."""
    grid = pytest.importorskip("fastdiff._triton.attention").grid
    assert grid(33, 65535) == ((33, 65535), False)
    for q_tiles, bh in [(1, 65536), (33, 65536), (1, 10**6), (129, 10**6), (1, 2**31), (128, 2**31)]:
        (x, y), linear = grid(q_tiles, bh)
        programs = q_tiles * bh
        assert linear and 1 <= x <= 2**31 - 1 and 1 <= y <= 65535 and programs <= x * y < programs + y


def test_triton_attention_linear_grid(monkeypatch):
    """Programs numbered linearly across a grid that spills to axis 1 (here past 1 (batch, head)
    on axis 1 and 5 programs on axis 0): each (batch, head, query tile) is found where the kernel
    computes it, the extra programs write nothing."""
    at = pytest.importorskip("fastdiff._triton.attention")
    monkeypatch.setattr(at, "MAX_GRID_X", 5)
    monkeypatch.setattr(at, "MAX_GRID_YZ", 1)
    grids = []
    grid = at.grid
    monkeypatch.setattr(at, "grid", lambda *a: grids.append(grid(*a)) or grids[-1])
    b, sq, sk, h, d = 3, 129, 33, 3, 40  # 3 fp32 query tiles of 64 x 9 (batch, head): 27 programs on (5, 6)
    q = randn((b, sq, h, d), torch.float32, DEVICE, mean=0.3)
    _, k, v = fused_qkv(b, sk, h, d, torch.float32, DEVICE)
    skip_unless_backend("triton", "attention", backends.Inputs(q.device, q.dtype, head_dim=d, seq_k=sk))
    with ops.use_backend("triton"):
        got = ops.attention(q, k, v, scale=0.2)
    assert grids[-1] == ((5, 6), True)
    assert_numerics(got, reference.attention(q, k, v, scale=0.2), reference.attention(*to64(q, k, v), scale=0.2),
                    name="attention[triton]")


@pytest.mark.parametrize("shape", [(2, 5, 3, 0), (2, 0, 3, 40), (0, 5, 3, 40)], ids=str)
def test_triton_attention_empty_output(shape):
    """Nothing to compute: the launcher returns the empty output, with no default scale taken of
    head dim 0 (the op rejects head dim 0 before it gets here)."""
    attention = pytest.importorskip("fastdiff._triton.attention").attention
    b, sq, h, d = shape
    q, k = torch.randn(shape, device=DEVICE), torch.randn((b, 7, h, d), device=DEVICE)
    out = attention(q, k, k)
    assert out.shape == shape and out.dtype == q.dtype
