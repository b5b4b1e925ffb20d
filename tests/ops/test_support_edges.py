"""Each kernel backend at the edges of what its SUPPORT table declares, the edges read from the table
itself at test time: at an edge the backend can run and computes by the numerics rule; just past
it, it gives a reason naming the limit, a forced call raises with it and a preferred one falls back.
"""
import math

import pytest
import torch

from fastdiff import backends, ops, reference
from fastdiff.testing import assert_numerics, fused_qkv, randn, to64

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
KERNEL_BACKENDS = ("triton", "cuda")
PROBE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # one outside every table
ATTENTION_LIMITS = ("head_dim_lo", "head_dim_hi", "max_seq_k", "dtype")
MAX_KEYS_COMPUTED = 1 << 16  # a key-count edge past this is checked by its reasons, not computed


def _support(backend: str, op: str) -> backends.OpSupport:
    """The backend's declared support for op, as the registry loads it (skips when it cannot load)."""
    support, err = backends.BACKENDS[backend].support(op)
    if err:
        pytest.skip(err)
    if support is None:
        pytest.skip(f"backend {backend!r} has no {op} kernel")
    return support


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _base(support: backends.OpSupport) -> dict:
    """Inputs well inside every limit of support but the one under test."""
    dtype = next(d for d in PROBE_DTYPES if d in support.dtypes)
    base = dict(dtype=dtype)
    if support.head_dims:
        lo, hi = support.head_dims
        base["head_dim"] = min(max(64, lo), hi)
    if support.max_seq_k is not None or support.head_dims:
        base["seq_k"] = min(7, support.max_seq_k or 7)
    return base


def _edge(support: backends.OpSupport, limit: str):
    """(inputs at the edge, inputs just past it, the words a reason about it holds), as Inputs keyword
    arguments; skips when the table declares no such limit."""
    base = _base(support)
    if limit in ("head_dim_lo", "head_dim_hi"):
        if not support.head_dims:
            pytest.skip("no head dim limit declared")
        lo, hi = support.head_dims
        at, past = (lo, lo - 1) if limit == "head_dim_lo" else (hi, hi + 1)
        return {**base, "head_dim": at}, {**base, "head_dim": past}, (f"head dim {past}", f"{lo}..{hi}")
    if limit == "max_seq_k":
        if support.max_seq_k is None:
            pytest.skip("no key count limit declared")
        m = support.max_seq_k
        return {**base, "seq_k": m}, {**base, "seq_k": m + 1}, (f"{m + 1} keys", f"maximum of {m}")
    outside = [d for d in PROBE_DTYPES if d not in support.dtypes]
    if not outside:
        pytest.skip("every float dtype is supported")
    words = (f"dtype {_name(outside[0])}",) + tuple(_name(d) for d in support.dtypes)
    return base, {**base, "dtype": outside[0]}, words


def _inputs(kw: dict) -> backends.Inputs:
    return backends.Inputs(DEVICE, kw["dtype"], head_dim=kw.get("head_dim"), seq_k=kw.get("seq_k"))


def _runs_here(backend: str, op: str, support: backends.OpSupport) -> bool:
    """Whether the backend can run op on this machine at all (the interpreter for triton off a GPU)."""
    return not backends.BACKENDS[backend].not_supported_reasons(op, _inputs(_base(support)))


def _ops_and_limits():
    for op in ("attention", "group_norm", "cfg_combine", "sampler_step", "adaln", "qk_norm_rope"):
        for limit in ATTENTION_LIMITS if op == "attention" else ("dtype",):
            yield op, limit


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("op, limit", list(_ops_and_limits()), ids=str)
def test_reasons_at_and_past_each_edge(backend, op, limit):
    support = _support(backend, op)
    at, past, words = _edge(support, limit)
    assert support.reasons(_inputs(at)) == []
    if limit == "dtype":  # every declared dtype is inside
        for dtype in support.dtypes:
            assert support.reasons(_inputs({**at, "dtype": dtype})) == [], dtype
    reasons = support.reasons(_inputs(past))
    assert len(reasons) == 1 and all(w in reasons[0] for w in words), (reasons, words)
    if _runs_here(backend, op, support):  # then the table is the backend's only objection
        assert backends.BACKENDS[backend].not_supported_reasons(op, _inputs(at)) == []
        assert backends.BACKENDS[backend].not_supported_reasons(op, _inputs(past)) == reasons


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("op, limit", list(_ops_and_limits()), ids=str)
def test_forced_backend_past_each_edge(backend, op, limit):
    """Forced, the backend raises just past an edge with the limit in the message; preferred
    (fallback=True) it gives way to auto's choice there, and runs at the edge itself."""
    support = _support(backend, op)
    at, past, words = _edge(support, limit)
    with ops.use_backend(backend):
        with pytest.raises(backends.BackendUnavailable) as err:
            backends.select(op, _inputs(past))
        if _runs_here(backend, op, support):
            assert backends.select(op, _inputs(at)).name == backend
    msg = str(err.value)
    assert f"fastdiff.{op}" in msg and repr(backend) in msg and all(w in msg for w in words), msg
    with ops.use_backend(backend, fallback=True):
        assert backends.select(op, _inputs(past)).name != backend
        if _runs_here(backend, op, support):
            assert backends.select(op, _inputs(at)).name == backend


def _qkv(b, sq, sk, h, d, dtype):
    """q alone, k and v views of one fused KV projection (cross-attention, odd sizes)."""
    q = randn((b, sq, h, d), dtype, DEVICE, mean=0.3)
    _, k, v = fused_qkv(b, sk, h, d, dtype, DEVICE)
    return q, k, v


def _check_attention(got, q, k, v, name):
    s = 1 / math.sqrt(q.shape[-1])
    assert_numerics(got, reference.attention(q, k, v, scale=s), reference.attention(*to64(q, k, v), scale=s),
                    name=name)
    assert got.shape == q.shape and got.dtype == q.dtype and got.is_contiguous()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("limit", ATTENTION_LIMITS)
def test_attention_op_call_past_each_edge(backend, limit):
    """The op itself, forced just past an edge, raises BackendUnavailable naming the limit; preferred,
    it falls back and computes by the numerics rule."""
    support = _support(backend, "attention")
    _, past, words = _edge(support, limit)
    d, sk = past["head_dim"], past["seq_k"]
    if d < 1:
        pytest.skip(f"head dim {d}: the op refuses it before any backend is asked")
    if sk > MAX_KEYS_COMPUTED:  # the forced call raises before any work: keys of stride 0 cost nothing
        q = randn((1, 2, 1, d), past["dtype"], DEVICE)
        k = v = randn((1, 1, 1, d), past["dtype"], DEVICE).expand(1, sk, 1, d)
    else:
        q, k, v = _qkv(1, 3, sk, 2, d, past["dtype"])
    with ops.use_backend(backend):
        with pytest.raises(backends.BackendUnavailable) as err:
            ops.attention(q, k, v)
    assert all(w in str(err.value) for w in words), str(err.value)
    if sk > MAX_KEYS_COMPUTED:
        return
    with ops.use_backend(backend, fallback=True):
        got = ops.attention(q, k, v)
    _check_attention(got, q, k, v, f"attention[{backend} preferred, past {limit}]")


@pytest.mark.parametrize("backend", ["triton", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("limit", ("head_dim_lo", "head_dim_hi", "max_seq_k"))
def test_attention_computes_at_each_edge(backend, limit):
    """The backend runs at each edge of its table, in each of its dtypes, by the numerics rule
    against the float64 reference (the triton kernels interpreted off a GPU: small batch and
    sequences)."""
    support = _support(backend, "attention")
    at, _, _ = _edge(support, limit)
    if not _runs_here(backend, "attention", support):
        pytest.skip(f"backend {backend!r} cannot run on {DEVICE.type}")
    d, sk = at["head_dim"], at["seq_k"]
    if sk > MAX_KEYS_COMPUTED:
        pytest.skip(f"{sk} keys: too many to check against the float64 reference")
    b, sq, h = (1, 1, 1) if limit == "max_seq_k" else (1, 4, 2)
    for dtype in sorted(support.dtypes, key=str):
        q, k, v = _qkv(b, sq, sk, h, d, dtype)
        with ops.use_backend(backend):
            got = ops.attention(q, k, v)
        _check_attention(got, q, k, v, f"attention[{backend}, {_name(dtype)}, head dim {d}, {sk} keys]")


# Device facts are planner inputs: the planners are checked here for any device, the launchers for
# asking their device once (the stand-ins off a GPU).

def test_group_norm_split_follows_the_sm_count():
    """A group norm of few programs is split along HW until PROGRAMS_PER_SM programs run per SM,
    up to one tile per chunk; a batch that fills the device is not split."""
    gn = pytest.importorskip("fastdiff._triton.group_norm")
    n, c, hw, groups = 1, 32, 512 * 512, 32  # 32 programs unsplit, NCHW: one group each
    p = gn.plan(n, c, hw, groups, False, sm_count=1)
    tiles = hw // p.block_hw
    assert p.split == 1 and tiles == 64
    for sm in (16, 32, 64, 128):  # PROGRAMS_PER_SM * sm / 32 chunks divide the 64 tiles evenly
        want = gn.PROGRAMS_PER_SM * sm // (n * groups)
        assert gn.plan(n, c, hw, groups, False, sm_count=sm).split == want, sm
    assert gn.plan(n, c, hw, groups, False, sm_count=10**4).split == tiles  # one tile a chunk at most
    splits = [gn.plan(n, c, hw, groups, False, sm_count=sm).split for sm in range(1, 300, 7)]
    assert splits == sorted(splits)
    big = math.ceil(gn.PROGRAMS_PER_SM * 132 / groups)  # samples that fill 132 SMs unsplit
    assert gn.plan(big, c, hw, groups, False, sm_count=132).split == 1
    assert gn.plan(big, c, hw, groups, False, sm_count=264).split == 2


def test_launchers_plan_with_the_stand_ins_off_a_gpu(monkeypatch):
    gn = pytest.importorskip("fastdiff._triton.group_norm")
    at = pytest.importorskip("fastdiff._triton.attention")
    from fastdiff._triton import _device

    seen = {}

    def spy(name, fn):
        def wrapped(*args):
            seen[name] = args[-1]
            return fn(*args)
        return wrapped

    monkeypatch.setattr(gn, "plan", spy("sm_count", gn.plan))
    monkeypatch.setattr(at, "shared_memory_of", lambda t: seen.setdefault("shared_memory", _device.shared_memory_of(t)))
    monkeypatch.setattr(_device, "_properties", None)  # a GPU query would fail
    gn.group_norm(randn((1, 4, 3, 3)), 2)
    at.attention(*_qkv_cpu(1, 2, 3, 1, 16))
    assert seen == {"sm_count": _device.INTERPRETED_SM_COUNT, "shared_memory": _device.INTERPRETED_SHARED_MEMORY}


def _qkv_cpu(b, sq, sk, h, d):
    return randn((b, sq, h, d)), randn((b, sk, h, d)), randn((b, sk, h, d))


def test_device_facts_are_asked_once_per_device(monkeypatch):
    _device = pytest.importorskip("fastdiff._triton._device")
    calls = []

    class Utils:
        @staticmethod
        def get_device_properties(index):
            calls.append(index)
            return {"multiprocessor_count": 100 + index, "max_shared_mem": 1000 + index}

    class Triton:  # stands in for triton.runtime.driver.active.utils
        class runtime:
            class driver:
                class active:
                    utils = Utils

    _device._properties.cache_clear()
    monkeypatch.setattr(_device, "triton", Triton)
    try:
        assert [_device.sm_count(i) for i in (0, 1, 0, 1)] == [100, 101, 100, 101]
        assert [_device.shared_memory(i) for i in (0, 1)] == [1000, 1001]
        assert calls == [0, 1]
    finally:
        _device._properties.cache_clear()
