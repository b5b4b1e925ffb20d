"""SamplingModel: generate is the conditioning, a Pipeline run with the model's defaults, the VAE
decode and the clamp; one Pipeline serves every call; the defaults of each kind of model."""
import dataclasses
import types

import pytest
import torch

from fastdiff.sampling import (DDIM, EulerAncestral, NoiseSchedule, Pipeline, SamplingDefaults, SamplingModel,
                               defaults)

from test_sampling_pipeline import TinyUNet, TinyVAE  # noqa: E402

PROMPTS = ["a", "b", "a"]


def _model(vae=True, **fields):
    unet = TinyUNet()
    table = {p: torch.randn(1, 5, 8) for p in ("", "a", "b")}

    def encode(prompts):
        return torch.cat([table[p] for p in prompts])

    def condition(prompts, guidance):
        return (torch.cat([encode([""] * len(prompts)), encode(prompts)]) if guidance else encode(prompts),)
    model = SamplingModel(unet, NoiseSchedule.from_betas(), (4, 6, 6), condition, vae=TinyVAE() if vae else None,
                          **fields)
    return model, encode


def test_generate_is_one_pipeline_run_and_decode():
    model, encode = _model(defaults=SamplingDefaults("euler_a", 4, 3.0))
    got = model.generate(PROMPTS, seed=7)
    assert model.denoise.calls == [6] * 4  # the CFG batch, one evaluation per step
    pipe = Pipeline(model.denoise, model.schedule, vae=model.vae)
    cond = (torch.cat([encode([""] * 3), encode(PROMPTS)]),)
    latents = pipe.sample((3, 4, 6, 6), EulerAncestral(), 4, cond=cond, guidance_scale=3.0, seed=7, progress=False)
    want = pipe.decode(latents).clamp(-1, 1)
    assert got.shape == (3, 3, 12, 12) and torch.equal(got, want)

    first = model.pipeline()
    assert torch.equal(model.generate(PROMPTS, seed=7), got) and model.pipeline() is first
    assert len(first._steps) == 1  # the second call ran on the first one's buffers
    assert not torch.equal(model.generate(PROMPTS, seed=8), got)
    # options override the defaults; guidance 1 is unguided (no unconditional half)
    model.denoise.calls.clear()
    model.generate(["b"], sampler=DDIM(), steps=2, guidance_scale=1)
    model.generate(["b"], sampler="ddim", steps=2, guidance_scale=1.0)
    assert model.denoise.calls == [1] * 4 and model.pipeline() is first
    # a copy of the model builds its own Pipeline, and so does an eager one
    assert dataclasses.replace(model).pipeline() is not first and model.pipeline(cuda_graph=False) is not first


def test_generate_without_a_vae_returns_clamped_latents():
    model, encode = _model(vae=False)
    got = model.generate(["a"], sampler="ddim", steps=3, guidance_scale=1)
    latents = Pipeline(model.denoise, model.schedule).sample((1, 4, 6, 6), DDIM(), 3, cond=(encode(["a"]),),
                                                             progress=False)
    assert torch.equal(got, latents.clamp(-1, 1)) and (latents.abs() > 1).any()


def test_defaults():
    assert defaults.GENERIC == SamplingDefaults() == SamplingDefaults("dpmpp_2m", 20, 5.0)
    model, _ = _model()
    assert model.defaults is defaults.GENERIC
    model, _ = _model(defaults={"steps": 7})  # a dict of some fields: the others are generic
    assert model.defaults == SamplingDefaults("dpmpp_2m", 7, 5.0)
    with pytest.raises(TypeError):
        _model(defaults={"cfg": 2.0})

    dit = types.SimpleNamespace(config=types.SimpleNamespace(in_channels=4, input_size=8, num_classes=10),
                                parameters=lambda: iter([torch.zeros(1)]))
    assert SamplingModel.from_dit(dit).defaults == SamplingDefaults("ddim", 50, 4.0) == defaults.DIT
    unet = types.SimpleNamespace(config=types.SimpleNamespace(in_channels=4, sample_size=8),
                                 parameters=lambda: iter([torch.zeros(1)]))
    assert SamplingModel.from_unet(unet, None).defaults == SamplingDefaults("dpmpp_2m", 20, 7.5) == defaults.UNET
