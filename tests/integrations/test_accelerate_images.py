"""Same images: a tiny random diffusers pipeline's (Stable Diffusion, SDXL, their img2img, DiT) output after
fastdiff.accelerate against its output before, for every scheduler the fused loop serves, with
and without CFG, at two sizes and batch sizes, under the numerics rule (float32 on the torch
backend, against the same diffusers pipeline in float64). One accelerated pipeline per module
serves every case in turn: its scheduler, size, batch, guidance scale and step count change
between calls."""
import copy
import warnings

import pytest
import torch

import fastdiff
from fastdiff.testing import assert_numerics, max_error

pytestmark = pytest.mark.slow  # every scheduler at two sizes against float64 pipelines

diffusers = pytest.importorskip("diffusers")
import tiny_pipelines  # noqa: E402



# scheduler, its config overrides, call overrides
SD_CASES = {
    "ddpm": (diffusers.DDPMScheduler, {}, {}),
    "ddim": (diffusers.DDIMScheduler, {}, {}),
    "ddim_eta_trailing": (diffusers.DDIMScheduler, {"timestep_spacing": "trailing"}, {"eta": 0.5}),
    "ddim_v_zero_snr": (diffusers.DDIMScheduler, {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                                                  "timestep_spacing": "trailing"}, {}),
    "euler": (diffusers.EulerDiscreteScheduler, {}, {}),
    "euler_v_karras": (diffusers.EulerDiscreteScheduler, {"prediction_type": "v_prediction",
                                                          "use_karras_sigmas": True}, {}),
    "euler_a": (diffusers.EulerAncestralDiscreteScheduler, {}, {}),
    "heun": (diffusers.HeunDiscreteScheduler, {}, {}),
    "dpmpp_2m": (diffusers.DPMSolverMultistepScheduler, {}, {}),
    "dpmpp_2m_karras_v": (diffusers.DPMSolverMultistepScheduler, {"use_karras_sigmas": True,
                                                                  "prediction_type": "v_prediction"}, {}),
    "lcm": (diffusers.LCMScheduler, {}, {}),
}

# CFG at the default size with one prompt; no CFG at another size and step count, two prompts
# with two images each
SD_CALLS = [dict(prompt="a red ring", negative_prompt="blue", guidance_scale=7.5, num_inference_steps=3),
            dict(prompt=["abc", "xyz"], guidance_scale=1.0, num_inference_steps=2, height=24, width=32,
                 num_images_per_prompt=2)]
DIT_CALLS = [dict(class_labels=[3], guidance_scale=4.0, num_inference_steps=3),
             dict(class_labels=[1, 999], guidance_scale=1.0, num_inference_steps=2)]


def _trio(pipe):
    """(diffusers, the float64 oracle, accelerated) copies of one pipeline."""
    ref = copy.deepcopy(pipe).to(torch.float64)
    fast = fastdiff.accelerate(copy.deepcopy(pipe), backend="torch")
    return pipe, ref, fast


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return _trio(tiny_pipelines.sd(tmp_path_factory.mktemp("tokenizer"), diffusers.DDIMScheduler))


def _as(cls, pipe):
    """pipe's components in another diffusers pipeline class (its img2img variant)."""
    out = cls(**pipe.components)
    out.set_progress_bar_config(disable=True)
    return out


@pytest.fixture(scope="module")
def img2img(tmp_path_factory):
    sd = tiny_pipelines.sd(tmp_path_factory.mktemp("tokenizer"), diffusers.DDIMScheduler)
    return _trio(_as(diffusers.StableDiffusionImg2ImgPipeline, sd))


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return _trio(tiny_pipelines.sdxl(tmp_path_factory.mktemp("tokenizer"), diffusers.DDIMScheduler))


@pytest.fixture(scope="module")
def sdxl_img2img(tmp_path_factory):
    sdxl = tiny_pipelines.sdxl(tmp_path_factory.mktemp("tokenizer"), diffusers.DDIMScheduler)
    return _trio(_as(diffusers.StableDiffusionXLImg2ImgPipeline, sdxl))


@pytest.fixture(scope="module")
def dit():
    return _trio(tiny_pipelines.dit(diffusers.DDIMScheduler))


# diffusers' Heun rounds its sigmas to float32, its float64 oracle run too, while fastdiff's plan
# keeps them in float64: the 1e-7 difference, amplified by the correction's 1 / (2 sigma_next),
# costs up to 3x the float32 error of diffusers' own run
FACTOR = {diffusers.HeunDiscreteScheduler: 4.0}


def _assert_same(pipes, scheduler, config, calls):
    for pipe in pipes:
        pipe.scheduler = scheduler.from_config({**pipe.scheduler.config, **config})
    plain, ref, fast = pipes
    for i, call in enumerate(calls):
        images = []
        for pipe in pipes:
            with warnings.catch_warnings(), tiny_pipelines.float32_draws():
                warnings.simplefilter("error", RuntimeWarning)  # a fallback fails the test
                torch.manual_seed(i)  # what DiT's stochastic steps draw from
                images.append(pipe(**call, generator=torch.Generator().manual_seed(i), output_type="pt").images)
        assert fast._fastdiff.last == "fastdiff's fused loop"
        want, want64, got = images
        assert got.shape == want.shape
        assert max_error(want, want64) < 1e-4  # the oracle samples the same image
        assert_numerics(got, want, want64, name=f"call {i}", factor=FACTOR.get(scheduler, 2.0))


@pytest.mark.parametrize("case", list(SD_CASES))
def test_stable_diffusion(sd, case):
    scheduler, config, call = SD_CASES[case]
    _assert_same(sd, scheduler, config, [{**c, **call} for c in SD_CALLS])


@pytest.mark.parametrize("case", ["ddpm", "euler", "heun", "dpmpp_2m", "dpmpp_2m_karras_v", "lcm"])
def test_stable_diffusion_img2img(img2img, case):
    """From the strength's first step: a multistep solver begins first order there, as in diffusers."""
    scheduler, config, call = SD_CASES[case]
    g = torch.Generator().manual_seed(3)
    calls = [dict(prompt="a red ring", image=torch.rand(1, 3, 16, 16, generator=g), strength=0.6, guidance_scale=7.5,
                  num_inference_steps=5),
             dict(prompt=["abc", "xyz"], image=torch.rand(2, 3, 24, 32, generator=g), strength=0.8,
                  guidance_scale=1.0, num_inference_steps=4)]
    _assert_same(img2img, scheduler, config, [{**c, **call} for c in calls])
    assert "the input image: diffusers' VAE encoder" in fastdiff.explain(img2img[2])


@pytest.mark.parametrize("case", ["ddim", "euler_a", "dpmpp_2m_karras_v"])
def test_stable_diffusion_xl(sdxl, case):
    scheduler, config, call = SD_CASES[case]
    calls = [{**c, **call} for c in SD_CALLS]
    calls[0].update(prompt_2="zq", original_size=(40, 40), crops_coords_top_left=(2, 4),
                    negative_original_size=(8, 8), negative_target_size=(16, 16))
    _assert_same(sdxl, scheduler, config, calls)


@pytest.mark.parametrize("case", ["ddim", "euler_a", "dpmpp_2m_karras_v"])
def test_stable_diffusion_xl_img2img(sdxl_img2img, case):
    scheduler, config, call = SD_CASES[case]
    g = torch.Generator().manual_seed(4)
    calls = [dict(prompt="a red ring", prompt_2="zq", image=torch.rand(1, 3, 16, 16, generator=g), strength=0.6,
                  guidance_scale=7.5, num_inference_steps=5, num_images_per_prompt=2, aesthetic_score=7.0,
                  negative_original_size=(8, 8), negative_target_size=(16, 16)),
             dict(prompt=["abc", "xyz"], image=torch.rand(2, 3, 24, 32, generator=g), strength=0.8,
                  guidance_scale=1.0, num_inference_steps=4)]
    _assert_same(sdxl_img2img, scheduler, config, [{**c, **call} for c in calls])
    assert "the input image: diffusers' VAE encoder" in fastdiff.explain(sdxl_img2img[2])


@pytest.mark.parametrize("scheduler", [diffusers.DDIMScheduler, diffusers.DPMSolverMultistepScheduler])
def test_dit(dit, scheduler):
    _assert_same(dit, scheduler, {}, DIT_CALLS)


def test_dit_stochastic_without_guidance(dit):
    _assert_same(dit, diffusers.DDPMScheduler, {}, [dict(class_labels=[5, 6], guidance_scale=1.0,
                                                         num_inference_steps=3)])
