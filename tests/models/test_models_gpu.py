"""On a GPU: each model at full size in fp16 on the fused backends (auto) against the torch
backend in fp16, both measured against the torch backend in float64 (DESIGN's numerics rule)."""
import pytest
import torch

from fastdiff import ops
from fastdiff.models import DiT, DiTConfig, UNet, UNetConfig, VAE, VAEConfig
from fastdiff.testing import assert_numerics, randn

from model_helpers import randomize

pytestmark = pytest.mark.gpu


def _check(model, *inputs, call=None):
    call = call or (lambda m, *a: m(*a))
    model = randomize(model).cuda()
    with torch.no_grad():
        want64 = call(model.double(), *[v.double() if v.is_floating_point() else v for v in inputs])
        half = [v.half() if v.is_floating_point() else v for v in inputs]
        model.half()
        got = call(model, *half)
        with ops.use_backend("torch"):
            baseline = call(model, *half)
    assert_numerics(got, baseline, want64, name=type(model).__name__)


def test_sd15_unet_fp16():
    _check(UNet(UNetConfig.sd15()), randn((2, 4, 64, 64), device="cuda"), torch.tensor([999.0, 500.0], device="cuda"),
           randn((2, 77, 768), device="cuda"))


def test_dit_xl2_fp16():
    _check(DiT(DiTConfig.xl2(256)), randn((2, 4, 32, 32), device="cuda"), torch.tensor([999.0, 10.0], device="cuda"),
           torch.tensor([207, 1000], device="cuda"))


def test_sd_vae_decode_fp16():
    _check(VAE(VAEConfig.sd()), randn((1, 4, 64, 64), device="cuda"), call=lambda m, z: m.decode(z))
