"""Backend registry: selection, forcing, explanations and lazy loading."""
import subprocess
import sys

import pytest
import torch

from fastdiff import backends, ops


def _inputs(**kw):
    return backends.Inputs(kw.pop("device", torch.device("cpu")), kw.pop("dtype", torch.float16), **kw)


def test_auto_on_cpu_takes_the_reference():
    assert backends.select("attention", _inputs()).name == "torch"
    assert backends.select("sampler_step", _inputs(dtype=torch.float64)).name == "torch"


def test_forced_backend_lists_every_reason(monkeypatch):
    monkeypatch.setattr(backends, "_triton_interpret", lambda: False)  # keep the kernels interpreted
    with ops.use_backend("triton"):
        with pytest.raises(backends.BackendUnavailable) as err:
            backends.select("attention", _inputs(dtype=torch.float64, head_dim=512))
    msg = str(err.value)
    assert "fastdiff.attention" in msg and "'triton'" in msg
    assert "device cpu is not cuda" in msg and "float64" in msg and "head dim 512" in msg


@pytest.fixture
def no_emulation(monkeypatch):
    """The cuda backend as without FASTDIFF_CUDA_EMULATE, which tests/conftest.py sets on a CPU."""
    caches = (backends._select, backends._launcher, backends._load)
    monkeypatch.setattr(backends, "_cuda_emulate", lambda: "")
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:  # a failed import of the cuda backend here is not the emulated one's
        cache.cache_clear()


def test_cuda_backend_reports_missing_op_and_device(no_emulation):
    reasons = backends.BACKENDS["cuda"].not_supported_reasons("sampler_step", _inputs())
    assert any("not cuda" in r and "FASTDIFF_CUDA_EMULATE=1" in r for r in reasons)


def test_emulated_cuda_backend_runs_on_cpu_tensors_alone(monkeypatch):
    monkeypatch.setattr(backends, "_cuda_emulate", lambda: "1")
    cuda = backends.BACKENDS["cuda"]
    assert not any("device" in r for r in cuda.not_supported_reasons("group_norm", _inputs()))
    reasons = cuda.not_supported_reasons("group_norm", _inputs(device=torch.device("cuda")))
    assert any("is not cpu (FASTDIFF_CUDA_EMULATE" in r for r in reasons)
    with ops.use_backend("cuda", fallback=True):
        text = backends.explain_inputs("group_norm", _inputs(dtype=torch.float32))
    if "can run" in text.splitlines()[-2]:  # where fastdiff._C_host is built
        assert text.endswith("-> runs on cuda (its CUDA kernels emulated on the CPU: FASTDIFF_CUDA_EMULATE)")


def test_env_var_and_context_manager(monkeypatch):
    def environment(value):  # the process's FASTDIFF_BACKEND, as if it had started with it
        monkeypatch.setenv("FASTDIFF_BACKEND", value)
        backends._env_request.cache_clear()
    try:
        environment("torch")
        assert backends.requested() == "torch"
        with ops.use_backend("triton"):
            assert backends.requested() == "triton"
            with ops.use_backend("auto"):
                assert backends.requested() == "auto"
        assert backends.requested() == "torch"
        environment("nonsense")
        with pytest.raises(ValueError, match="unknown backend 'nonsense'"):
            backends.requested()
    finally:
        monkeypatch.delenv("FASTDIFF_BACKEND")
        backends._env_request.cache_clear()
    with pytest.raises(ValueError, match="unknown backend"):
        with ops.use_backend("fast"):
            pass


def test_forced_backend_error_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(backends, "_triton_interpret", lambda: False)  # keep the kernels interpreted
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    with ops.use_backend("triton"), pytest.raises(backends.BackendUnavailable, match="float64"):
        ops.sampler_step(x, x, (1, 0, 1, 0, 0, 0))


def test_preferred_backend_falls_back_where_it_cannot_run(no_emulation):
    x = torch.randn(2, 8, 4, 4)
    want = ops.group_norm(x, 4)
    with ops.use_backend("cuda"), pytest.raises(backends.BackendUnavailable, match="not cuda"):
        ops.group_norm(x, 4)
    with ops.use_backend("cuda", fallback=True):
        assert backends.requested() == "cuda"
        assert backends.select("group_norm", _inputs()).name == "torch"
        torch.testing.assert_close(ops.group_norm(x, 4), want, rtol=0, atol=0)
        text = ops.explain(ops.group_norm, x, 4)
        with ops.use_backend("torch"):  # an inner block forces again
            assert backends.select("group_norm", _inputs()).name == "torch"
    assert "requested backend: cuda (preferred, else auto)" in text
    assert "cuda    cannot: device cpu is not cuda" in text and "-> runs on torch" in text


def test_preferred_backend_runs_where_it_can(monkeypatch):
    monkeypatch.setattr(backends, "_triton_interpret", lambda: True)
    with ops.use_backend("triton", fallback=True):
        assert backends.select("group_norm", _inputs(dtype=torch.float32)).name == "triton"
        assert backends.select("group_norm", _inputs(dtype=torch.float64)).name == "torch"
        text = backends.explain_inputs("group_norm", _inputs(dtype=torch.float32))
    assert text.splitlines()[1].startswith("  triton  can run") and text.endswith("-> runs on triton")


def test_explain_names_the_choice():
    q = torch.randn(1, 77, 2, 40)
    text = ops.explain(ops.attention, q, q, q)
    assert "-> runs on torch" in text and "cuda" in text and "triton" in text
    with pytest.raises(ValueError, match="unknown op"):
        ops.explain("conv", q)


def test_import_has_no_side_effects():
    """import fastdiff loads neither Triton nor fastdiff._C nor probes a GPU."""
    code = ("import sys, fastdiff; import fastdiff.ops;"
            "bad = [m for m in ('triton', 'fastdiff._C', 'fastdiff._triton') if m in sys.modules];"
            "import torch; assert not torch.cuda.is_initialized(); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_autograd_runs_the_differentiable_reference():
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    y = ops.group_norm(x, 4, silu=True)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_a_backend_without_the_kernel_says_so(monkeypatch):
    monkeypatch.setattr(backends, "_triton_interpret", lambda: True)
    reasons = backends.BACKENDS["triton"].not_supported_reasons("conv", _inputs(dtype=torch.float32))
    assert reasons == ["backend 'triton' has no conv kernel"]


def test_a_backend_that_cannot_load_says_why(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "cuda", backends.Backend("cuda", "fastdiff.no_such_module"))
    reasons = backends.BACKENDS["cuda"].not_supported_reasons("group_norm", _inputs())
    assert reasons[-1].startswith("fastdiff.no_such_module cannot be imported")


def test_every_op_and_backend_is_registered_once():
    assert tuple(backends.OPS) == ("attention", "group_norm", "cfg_combine", "sampler_step", "adaln", "qk_norm_rope")
    assert tuple(backends.BACKENDS) == backends.NAMES
    for op in backends.OPS.values():
        assert op.fn is getattr(ops, op.name) and op.auto_order[-1] == "torch"
    from fastdiff import _triton
    assert set(_triton.SUPPORT) == set(backends.OPS)


CUDA = torch.device("cuda")
MEASURED = {"GPU X": {
    "group_norm": [{"dtype": "float16", "channels_last": False, "numel": 2 ** 20, "order": ["cuda", "torch", "triton"]},
                   {"dtype": "float16", "channels_last": False, "numel": 2 ** 27, "order": ["triton", "cuda", "torch"]},
                   {"dtype": "float16", "channels_last": True, "numel": 2 ** 20, "order": ["torch", "triton"]}],
    "attention": [{"dtype": "float16", "channels_last": False, "numel": 2 ** 22, "head_dim": 64, "seq_k": 77,
                   "order": ["cuda", "torch"]},
                  {"dtype": "float16", "channels_last": False, "numel": 2 ** 22, "head_dim": 64, "seq_k": 4096,
                   "order": ["torch", "triton"]}]}}


def test_measured_order_takes_the_nearest_case():
    from fastdiff import measured

    def order(op, **kw):
        return measured.order("GPU X", op, backends.Inputs(CUDA, torch.float16, **kw), MEASURED)
    assert order("group_norm", numel=2 ** 21) == ("cuda", "torch", "triton")
    assert order("group_norm", numel=2 ** 26) == ("triton", "cuda", "torch")
    assert order("group_norm", numel=2 ** 26, channels_last=True) == ("torch", "triton")
    assert order("attention", numel=2 ** 20, head_dim=40, seq_k=154) == ("cuda", "torch")
    assert order("attention", numel=2 ** 24, head_dim=64, seq_k=1024) == ("torch", "triton")
    # nothing measured: no order
    assert order("sampler_step", numel=2 ** 20) is None
    assert measured.order("GPU Y", "group_norm", backends.Inputs(CUDA, torch.float16, numel=8), MEASURED) is None
    assert measured.order("GPU X", "group_norm", backends.Inputs(CUDA, torch.bfloat16, numel=8), MEASURED) is None


def test_auto_follows_the_measured_order(monkeypatch):
    from fastdiff import measured

    monkeypatch.setattr(measured, "table", lambda: MEASURED)
    monkeypatch.setattr(backends, "_device_name", lambda index: "GPU X")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    candidates = backends._auto_candidates
    big = backends.Inputs(CUDA, torch.float16, numel=2 ** 27)
    assert candidates("group_norm", big) == ("triton", "cuda", "torch")
    # unmeasured backends of the static order follow the measured ones; torch stays last
    assert candidates("attention", backends.Inputs(CUDA, torch.float16, numel=2 ** 22, head_dim=64, seq_k=77)) \
        == ("cuda", "torch")
    assert candidates("cfg_combine", big) == backends.OPS["cfg_combine"].auto_order
    assert candidates("group_norm", backends.Inputs(torch.device("cpu"), torch.float16, numel=2 ** 27)) == ("torch",)


def test_shipped_measurements_put_only_faster_backends_ahead_of_torch(monkeypatch):
    """At each measured shape of fastdiff/measured.json, auto tries first exactly the backends
    measured faster than the torch reference, fastest first; each device names its provenance."""
    from fastdiff import measured

    table = measured.table()
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert table, "fastdiff/measured.json records no device"
    for device, entry in table.items():
        cases_of = dict(entry)
        assert cases_of.pop("provenance"), device
        monkeypatch.setattr(backends, "_device_name", lambda index, device=device: device)
        for op, cases in cases_of.items():
            assert op in backends.OPS, op
            for case in cases:
                assert set(case["order"]) <= set(backends.NAMES) and "torch" in case["order"], case
                inputs = backends.Inputs(CUDA, getattr(torch, case["dtype"]), channels_last=case["channels_last"],
                                         **{k: case[k] for k in ("numel", "head_dim", "seq_k") if k in case})
                order = backends._auto_candidates(op, inputs)
                faster = case["order"][:case["order"].index("torch")]
                assert order[:order.index("torch")] == tuple(faster), (device, case)
