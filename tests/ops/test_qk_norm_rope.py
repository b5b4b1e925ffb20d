"""qk_norm_rope: the reference against a naive float64 definition and diffusers' convention, and every
kernel backend against the reference by the numerics rule, in place on views of a fused QKV."""
import pytest
import torch

from fastdiff import backends, ops, reference
from fastdiff.testing import assert_numerics, fused_qkv, randn, skip_unless_backend, to64

BACKENDS = ["torch", "triton", "cuda"]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def rope_tables(s, d, dtype=torch.float32, device=DEVICE):
    """cos and sin (S, D) of random angles, each repeated for both members of a pair."""
    angles = (torch.rand(s, d // 2, dtype=torch.float64) * 20 - 10).repeat_interleave(2, dim=1)
    return angles.cos().to(device, dtype), angles.sin().to(device, dtype)


def naive_norm_rope(x, w, angles):
    """RMSNorm, then each pair (x[2i], x[2i+1]) as the complex number x[2i] + i x[2i+1] times e^(i angle)."""
    y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * w
    if angles is None:
        return y
    z = torch.view_as_complex(y.unflatten(-1, (-1, 2)).contiguous()) * torch.polar(torch.ones_like(angles),
                                                                                    angles)[:, None]
    return torch.view_as_real(z).flatten(-2)


@pytest.mark.parametrize("rope", [False, True])
def test_reference_matches_naive(rope):
    q, k, _ = fused_qkv(2, 7, 3, 16, torch.float64)
    qw, kw = randn((16,), torch.float64), randn((16,), torch.float64)
    angles = torch.rand(7, 8, dtype=torch.float64) * 20 - 10 if rope else None
    cos, sin = (angles.repeat_interleave(2, 1).cos(), angles.repeat_interleave(2, 1).sin()) if rope else (None, None)
    want = naive_norm_rope(q, qw, angles), naive_norm_rope(k, kw, angles)
    got = reference.qk_norm_rope(q.clone(), k.clone(), qw, kw, cos, sin, 1e-6)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_reference_follows_diffusers_convention():
    """diffusers' RMSNorm and Flux rotary embedding (which compute in float32 whatever the input)."""
    normalization = pytest.importorskip("diffusers.models.normalization")
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    q, k, _ = fused_qkv(2, 7, 3, 16)
    w = randn((16,))
    cos, sin = rope_tables(7, 16, device="cpu")
    norm = normalization.RMSNorm(16, eps=1e-6)
    norm.weight.data.copy_(w)
    y = norm(q).transpose(1, 2)  # diffusers rotates (B, H, S, D)
    want = embeddings.apply_rotary_emb(y, (cos, sin), use_real=True, use_real_unbind_dim=-1).transpose(1, 2)
    torch.testing.assert_close(reference.qk_norm_rope(q, k, w, w, cos, sin, 1e-6)[0], want)


def _check(backend, b, s, h, d, dtype, *, rope=True, weight_dtype=torch.float32):
    q, k, v = fused_qkv(b, s, h, d, dtype, DEVICE)
    skip_unless_backend(backend, "qk_norm_rope", backends.Inputs(q.device, q.dtype, head_dim=d))
    qw, kw = randn((d,), weight_dtype, DEVICE), randn((d,), weight_dtype, DEVICE)
    cos, sin = rope_tables(s, d) if rope else (None, None)
    want = reference.qk_norm_rope(q.clone(), k.clone(), qw, kw, cos, sin, 1e-6)
    q64, k64, cos64, sin64 = to64(q, k, cos, sin)
    want64 = reference.qk_norm_rope(q64, k64, *to64(qw, kw), cos64, sin64, 1e-6)
    v_before = v.clone()
    with ops.use_backend(backend):
        got = ops.qk_norm_rope(q, k, qw, kw, cos, sin, 1e-6)
    assert got[0] is q and got[1] is k
    assert_numerics(got, want, want64, name=f"qk_norm_rope[{backend}]")
    assert torch.equal(v, v_before), "v, the third view of the fused projection, changed"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("b, s, h, d", [(1, 77, 2, 64), (1, 5, 2, 72), (2, 3, 5, 40), (1, 4, 2, 160)], ids=str)
def test_qk_norm_rope(backend, dtype, rope, b, s, h, d):
    _check(backend, b, s, h, d, dtype, rope=rope)


@pytest.mark.parametrize("backend", BACKENDS)
def test_qk_norm_rope_odd_head_dim_and_weights_in_the_input_dtype(backend):
    _check(backend, 2, 3, 3, 33, torch.float16, rope=False, weight_dtype=torch.float16)


def test_heads_per_program_pads_the_fewest_heads():
    from fastdiff._triton.qk_norm_rope import heads_per_program
    assert heads_per_program(24, 128) == 8    # Flux: 3 programs a token, no masked head
    assert heads_per_program(38, 64) == 16    # SD3.5-large: 3 programs a token, the last one 6 heads short
    assert heads_per_program(3, 64) == 4 and heads_per_program(1, 128) == 1


def test_qk_norm_rope_several_head_blocks():
    """SD3.5-large's 38 heads of 64: blocks of 16 heads, the last one partial."""
    _check("triton", 1, 3, 38, 64, torch.float16, rope=True)
