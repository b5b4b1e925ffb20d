"""Backend registry: selection, forcing, explanations and lazy loading."""
import os
import subprocess
import sys

import pytest
import torch

import fastdiff
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


def test_cuda_backend_reports_missing_op_and_device():
    reasons = backends.BACKENDS["cuda"].not_supported_reasons("sampler_step", _inputs())
    assert any("not cuda" in r for r in reasons)


def test_env_var_and_context_manager(monkeypatch):
    monkeypatch.setenv("FASTDIFF_BACKEND", "torch")
    assert backends.requested() == "torch"
    with ops.use_backend("triton"):
        assert backends.requested() == "triton"
        with ops.use_backend("auto"):
            assert backends.requested() == "auto"
    assert backends.requested() == "torch"
    monkeypatch.setenv("FASTDIFF_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="unknown backend 'nonsense'"):
        backends.requested()
    with pytest.raises(ValueError, match="unknown backend"):
        with ops.use_backend("fast"):
            pass


def test_forced_backend_error_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(backends, "_triton_interpret", lambda: False)  # keep the kernels interpreted
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    with ops.use_backend("triton"), pytest.raises(backends.BackendUnavailable, match="float64"):
        ops.sampler_step(x, x, (1, 0, 1, 0, 0, 0))


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


def test_a_backend_without_the_launcher_says_so(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    backends._launcher_error.cache_clear()
    monkeypatch.setitem(backends.BACKENDS["triton"].ops, "conv", backends.OpSupport(frozenset({torch.float32})))
    reasons = backends.BACKENDS["triton"].not_supported_reasons("conv", _inputs(dtype=torch.float32))
    assert reasons == ["fastdiff._triton has no conv launcher"]
