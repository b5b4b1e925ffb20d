"""On a GPU: each model at full size in fp16 on each fused backend (preferred, torch where it
cannot run the inputs) against the torch backend in fp16, both measured against the torch
backend in float64 (the numerics rule of docs/design.md)."""
import pytest
import torch

from fastdiff import backends, ops
from fastdiff.models import DiT, DiTConfig, Flux, FluxConfig, MMDiT, MMDiTConfig, UNet, UNetConfig, VAE, VAEConfig
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
        ran, launcher = [], backends.launcher

        def record(op, desc):  # every launch the ops look up (once per call signature: they memoise it)
            ran.append((op, desc, backends.select(op, desc).name))
            return launcher(op, desc)
        monkeypatch.setattr(backends, "launcher", record)
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
    _check(monkeypatch, backend, {"attention", "adaln"}, DiT(DiTConfig.xl2(256)), randn((2, 4, 32, 32), device="cuda"),
           torch.tensor([999.0, 10.0], device="cuda"), torch.tensor([207, 1000], device="cuda"))


def test_sd_vae_decode_fp16(monkeypatch, backend):
    # its single-head attention (head dim 512) is beyond both fused backends
    _check(monkeypatch, backend, {"group_norm"}, VAE(VAEConfig.sd()), randn((1, 4, 64, 64), device="cuda"),
           call=lambda m, z: m.decode(z))


def test_sd3_medium_fp16(monkeypatch, backend):
    # 512px (64x64 latents), 154 text tokens
    _check(monkeypatch, backend, {"attention", "adaln"}, MMDiT(MMDiTConfig.sd3_medium()),
           randn((2, 16, 64, 64), device="cuda"), randn((2, 154, 4096), device="cuda"),
           randn((2, 2048), device="cuda"), torch.tensor([999.0, 500.0], device="cuda"))


def test_flux_dev_blocks_fp16(monkeypatch, backend):
    """Flux-dev at full width but 2 + 4 blocks (all 57 would not fit in float64 beside the fp16
    copy), 512px (1024 packed tokens), 128 text tokens."""
    grid = torch.stack(torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij"), -1).reshape(-1, 2)
    img_ids = torch.cat([torch.zeros(1024, 1), grid.float()], dim=1).cuda()
    txt_ids = torch.zeros(128, 3, device="cuda")
    _check(monkeypatch, backend, {"attention", "adaln", "qk_norm_rope"},
           Flux(FluxConfig.dev(num_layers=2, num_single_layers=4)), randn((1, 1024, 64), device="cuda"),
           randn((1, 128, 4096), device="cuda"), randn((1, 768), device="cuda"), torch.tensor([0.7], device="cuda"),
           torch.tensor([3.5], device="cuda"),
           call=lambda m, x, c, p, t, g: m(x, c, p, t, img_ids, txt_ids, g))
