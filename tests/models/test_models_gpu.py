"""On a GPU: each model at full size in fp16 on each fused backend (preferred, torch where it
cannot run the inputs) against the torch backend in fp16, both measured against the torch
backend in float64 (the numerics rule of docs/design.md)."""
import pytest
import torch

from fastdiff import backends, ops
from fastdiff.models import DiT, DiTConfig, UNet, UNetConfig, VAE, VAEConfig
from fastdiff.testing import assert_numerics, randn, skip_unless_backend

from model_helpers import randomize

pytestmark = [pytest.mark.gpu, pytest.mark.parametrize("backend", ["triton", "cuda"])]


def _check(monkeypatch, backend, fused_ops, model, *inputs, call=None):
    """fused_ops: the ops the fused backend must have run (those it supports at these shapes)."""
    skip_unless_backend(backend, "group_norm", backends.Inputs(torch.device("cuda"), torch.float16))
    call = call or (lambda m, *a: m(*a))
    model = randomize(model).cuda()
    with torch.no_grad():
        want64 = call(model.double(), *[v.double() if v.is_floating_point() else v for v in inputs])
        half = [v.half() if v.is_floating_point() else v for v in inputs]
        model.half()
        with ops.use_backend("torch"):
            baseline = call(model, *half)
        ran, select = [], backends.select

        def record(op, desc):
            chosen = select(op, desc)
            ran.append((op, desc, chosen.name))
            return chosen
        monkeypatch.setattr(backends, "select", record)
        with ops.use_backend(backend, fallback=True):
            got = call(model, *half)
    # every call the fused backend supports ran on it, so the comparison cannot pass on torch alone
    supported = [(op, name) for op, desc, name in ran if not backends.BACKENDS[backend].not_supported_reasons(op, desc)]
    assert all(name == backend for _, name in supported), supported
    assert {op for op, _ in supported} == fused_ops
    assert_numerics(got, baseline, want64, name=f"{type(model).__name__}[{backend}]")


def test_sd15_unet_fp16(monkeypatch, backend):
    _check(monkeypatch, backend, {"attention", "group_norm"}, UNet(UNetConfig.sd15()),
           randn((2, 4, 64, 64), device="cuda"), torch.tensor([999.0, 500.0], device="cuda"),
           randn((2, 77, 768), device="cuda"))


def test_dit_xl2_fp16(monkeypatch, backend):
    _check(monkeypatch, backend, {"attention"}, DiT(DiTConfig.xl2(256)), randn((2, 4, 32, 32), device="cuda"),
           torch.tensor([999.0, 10.0], device="cuda"), torch.tensor([207, 1000], device="cuda"))


def test_sd_vae_decode_fp16(monkeypatch, backend):
    # its single-head attention (head dim 512) is beyond both fused backends
    _check(monkeypatch, backend, {"group_norm"}, VAE(VAEConfig.sd()), randn((1, 4, 64, 64), device="cuda"),
           call=lambda m, z: m.decode(z))
