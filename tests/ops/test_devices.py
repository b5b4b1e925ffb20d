"""Inputs on a GPU other than the current one run there: the op makes their device current for the
launch."""
import contextlib

import pytest
import torch

from fastdiff import backends, ops, reference
from fastdiff.ops import _common
from fastdiff.testing import assert_numerics, randn, to64


def test_launcher_makes_the_inputs_device_current(monkeypatch):
    entered = []

    @contextlib.contextmanager
    def device(d):
        entered.append(d)
        yield

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(backends, "launcher", lambda op, inputs: reference.cfg_combine)
    on = torch.device("cuda", 1)
    fn = _common.launcher("cfg_combine", backends.Inputs(on, torch.float32))
    u, c = torch.zeros(3), torch.ones(3)
    assert torch.equal(fn(u, c, 2.0), reference.cfg_combine(u, c, 2.0)) and entered == [on]
    # on the current device, or the CPU, the launcher itself
    assert _common.launcher("cfg_combine", backends.Inputs(torch.device("cuda", 0), torch.float32)) \
        is reference.cfg_combine
    assert _common.launcher("cfg_combine", backends.Inputs(torch.device("cpu"), torch.float32)) \
        is reference.cfg_combine


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_ops_run_on_a_gpu_that_is_not_current(backend):
    dev = torch.device("cuda", 1)
    x, m = randn((2, 8, 16, 16), torch.float16, dev), randn((4, 8, 16, 16), torch.float16, dev)
    q, k = randn((2, 64, 4, 64), torch.float16, dev), randn((2, 77, 4, 64), torch.float16, dev)
    w, b = randn((8,), torch.float32, dev), randn((8,), torch.float32, dev)
    calls = {
        "cfg_combine": ((m[:2], m[2:], 7.5), {}),
        "sampler_step": ((x, m, (0.7, -0.3, 0.9, 0.1, 0.0, 0.0)), {"guidance_scale": 7.5}),
        "group_norm": ((x, 4, w, b, 1e-5), {"silu": True}),
        "attention": ((q, k, k), {}),
    }
    with torch.cuda.device(0):
        for op, (args, kwargs) in calls.items():
            inputs = backends.OPS[op].describe(*args, **kwargs)
            if backends.BACKENDS[backend].not_supported_reasons(op, inputs):
                continue
            with ops.use_backend(backend):
                got = getattr(ops, op)(*args, **kwargs)
            args64 = [to64(a) if isinstance(a, torch.Tensor) else a for a in args]
            assert all(t.device == dev for t in (got if isinstance(got, tuple) else (got,)))
            assert_numerics(got, getattr(reference, op)(*args, **kwargs), getattr(reference, op)(*args64, **kwargs),
                            name=f"{op} on {backend}")
