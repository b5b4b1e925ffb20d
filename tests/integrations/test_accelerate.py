"""fastdiff.accelerate on tiny random pipelines: the weights are shared, not copied; calls the
fused loop cannot serve run diffusers' loop after one warning and give diffusers' images; a
pipeline fastdiff does not serve (ControlNet) is left as it was and gives its images; explain says
what runs where."""
import copy
import warnings

import pytest
import torch

import fastdiff
from fastdiff.testing import assert_numerics

diffusers = pytest.importorskip("diffusers")
import tiny_pipelines  # noqa: E402


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_pipelines.sd(tmp_path_factory.mktemp("tokenizer"), diffusers.DDIMScheduler)


def _storages(tensors) -> dict:
    return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}


def _images(pipe, **kw):
    kw = {"prompt": "ab", "num_inference_steps": 2, "output_type": "pt", **kw}
    return pipe(**kw, generator=torch.Generator().manual_seed(0)).images


@pytest.mark.parametrize("which", ["sd", "sdxl", "dit"])
def test_weights_are_shared_not_copied(sd, which, tmp_path):
    pipe = {"sd": lambda: copy.deepcopy(sd), "sdxl": lambda: tiny_pipelines.sdxl(tmp_path, diffusers.DDIMScheduler),
            "dit": lambda: tiny_pipelines.dit(diffusers.DDIMScheduler)}[which]()
    slot = "transformer" if which == "dit" else "unet"
    modules = [getattr(pipe, slot), pipe.vae]
    before = sum(sum(_storages(m.parameters()).values()) for m in modules)
    fastdiff.accelerate(pipe)
    for name in (slot, "vae"):
        ours = pipe._fastdiff.shared[name].model
        theirs = _storages(getattr(pipe, name).parameters())
        mine = _storages(ours.parameters())
        assert set(theirs) == set(mine), f"{name}: storages differ"  # every tensor is one and the same
    after = sum(sum(_storages(m.parameters()).values()) for m in modules)
    assert after <= before  # DiT's repeated embedders become one; nothing is added
    fastdiff_extra = sum(pipe._fastdiff.shared[n].extra_bytes for n in (slot, "vae"))
    assert fastdiff_extra == (pipe.transformer.pos_embed.pos_embed.nbytes if which == "dit" else 0)


def test_weights_changed_in_place_reach_the_fused_loop(sd):
    plain, fast = copy.deepcopy(sd), fastdiff.accelerate(copy.deepcopy(sd), backend="torch")
    for pipe in (plain, fast):
        with torch.no_grad():
            pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight.mul_(3)
    torch.testing.assert_close(_images(fast, guidance_scale=1.0), _images(plain, guidance_scale=1.0),
                               atol=1e-5, rtol=0)
    assert fast._fastdiff.last == "fastdiff's fused loop"


def test_moved_or_cast_pipeline_rebuilds_on_the_new_tensors(sd):
    plain, fast = copy.deepcopy(sd), fastdiff.accelerate(copy.deepcopy(sd))
    want = _images(plain.to(torch.float64))
    got = _images(fast.to(torch.float64))
    assert fast._fastdiff.last == "fastdiff's fused loop"
    assert next(fast._fastdiff.shared["unet"].model.parameters()).dtype == torch.float64
    torch.testing.assert_close(got, want, atol=1e-7, rtol=0)  # diffusers' scheduler scalars are float32


@pytest.mark.parametrize("change,why", [
    (dict(scheduler=diffusers.PNDMScheduler, num_inference_steps=5), "PNDMScheduler has no fastdiff sampler"),
    (dict(scheduler=diffusers.DDIMScheduler, clip_sample=True), "DDIMScheduler with clip_sample=True"),
    (dict(guidance_rescale=0.7), "guidance_rescale"),
    (dict(callback_on_step_end=lambda p, i, t, kw: {"latents": kw["latents"] * 0.9}), "callback_on_step_end"),
    (dict(callback=lambda i, t, latents: None, callback_steps=1), "callback, callback_steps"),
])
@pytest.mark.filterwarnings("ignore:`callback.* is deprecated:FutureWarning")  # the deprecated call, on purpose
def test_unserved_calls_run_diffusers_loop_after_one_warning(sd, change, why):
    change = dict(change)
    plain, fast = copy.deepcopy(sd), fastdiff.accelerate(copy.deepcopy(sd))
    scheduler, clip = change.pop("scheduler", None), change.pop("clip_sample", False)
    for pipe in (plain, fast):
        if scheduler is not None:
            pipe.scheduler = scheduler.from_config({**pipe.scheduler.config, "clip_sample": clip})
    want = _images(plain, **change)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _images(fast, **change)
    ours = [w for w in caught if "fastdiff" in str(w.message)]
    assert len(ours) == 1 and why in str(ours[0].message), [str(w.message) for w in caught]
    assert "\n" not in str(ours[0].message)
    assert torch.equal(got, want)
    assert why in fastdiff.explain(fast)


def test_unserved_pipeline_is_left_as_it_was(sd):
    pipe = diffusers.StableDiffusionInpaintPipeline(**copy.deepcopy(sd).components)
    with pytest.warns(RuntimeWarning, match="StableDiffusionInpaintPipeline is not accelerated"):
        assert fastdiff.accelerate(pipe) is pipe
    assert type(pipe) is diffusers.StableDiffusionInpaintPipeline
    assert "not accelerated" in fastdiff.explain(pipe)


def test_accelerated_pipeline_keeps_its_class_and_can_be_accelerated_again(sd):
    pipe = fastdiff.accelerate(copy.deepcopy(sd))
    assert isinstance(pipe, diffusers.StableDiffusionPipeline) and type(pipe).__name__ == "StableDiffusionPipeline"
    assert fastdiff.accelerate(pipe, cuda_graphs=False) is pipe
    assert type(pipe).__mro__[1] is diffusers.StableDiffusionPipeline
    _images(pipe)
    assert pipe._fastdiff.last == "fastdiff's fused loop"


def test_explain_says_what_runs_where(sd, capsys):
    pipe = fastdiff.accelerate(copy.deepcopy(sd), verbose=True)
    text = capsys.readouterr().out
    assert text.strip() == fastdiff.explain(pipe).strip()
    for part in ("unet: fastdiff UNet on UNet2DConditionModel's own tensors", "vae: fastdiff VAE",
                 "text_encoder: CLIPTextModel runs in transformers", "DDIMScheduler -> fused CFG + sampler_step",
                 "attention -> torch", "group_norm -> torch", "sampler_step -> torch",
                 "CUDA graphs: off (the pipeline is on cpu", "last call: none yet"):
        assert part in text, part
    _images(pipe)
    assert "last call: fastdiff's fused loop" in fastdiff.explain(pipe)
    assert "not accelerated" in fastdiff.explain(copy.deepcopy(sd))


def test_a_failing_fused_run_falls_back_with_the_generator_as_it_was(sd):
    plain, fast = copy.deepcopy(sd), fastdiff.accelerate(copy.deepcopy(sd))

    def boom(*args, **kwargs):
        raise RuntimeError("no kernel for this")
    fast._fastdiff.loop = boom
    want = _images(plain)
    with pytest.warns(RuntimeWarning, match="RuntimeError: no kernel for this"):
        got = _images(fast)
    assert torch.equal(got, want)  # the prompt encoding ran, the draws did not move


@pytest.mark.slow
def test_triton_backend_on_the_smallest_case(sd):
    """The Triton kernels (under the interpreter without a GPU) in the accelerated loop."""
    plain, ref = copy.deepcopy(sd), copy.deepcopy(sd).to(torch.float64)
    fast = fastdiff.accelerate(copy.deepcopy(sd), backend="triton")
    assert "attention -> triton, group_norm -> triton, sampler_step -> triton" in fastdiff.explain(fast)
    with tiny_pipelines.float32_draws():
        want, want64, got = (_images(p, num_inference_steps=1, guidance_scale=3.0, height=8, width=8)
                             for p in (plain, ref, fast))
    assert fast._fastdiff.last == "fastdiff's fused loop"
    assert_numerics(got, want, want64)


@pytest.mark.parametrize("scheduler,guidance,why", [
    (diffusers.EulerDiscreteScheduler, 1.0, "scales the model input"),
    (diffusers.DDPMScheduler, 4.0, "a stochastic sampler under guidance"),
])
# diffusers' Euler warns inside pytest.warns, which passes on what it does not match
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_dit_calls_it_does_not_reproduce_run_diffusers_loop(scheduler, guidance, why):
    plain = tiny_pipelines.dit(scheduler)
    fast = fastdiff.accelerate(copy.deepcopy(plain))

    def images(pipe):
        torch.manual_seed(0)
        return pipe([4, 7], guidance_scale=guidance, num_inference_steps=2, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).images

    want = images(plain)
    with pytest.warns(RuntimeWarning, match=why):
        got = images(fast)
    assert why in fast._fastdiff.last
    assert torch.equal(got, want)


def test_controlnet_pipeline_runs_diffusers_code_and_images(sd):
    plain = copy.deepcopy(sd)
    torch.manual_seed(1)
    # one downsampling in the conditioning embedding: the tiny VAE scales by 2, not 8
    controlnet = tiny_pipelines.randomize(diffusers.ControlNetModel.from_unet(
        plain.unet, conditioning_embedding_out_channels=(8, 16)))
    components = {k: v for k, v in plain.components.items() if k != "image_encoder"}
    pipe = diffusers.StableDiffusionControlNetPipeline(**components, controlnet=controlnet,
                                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    want = _images(pipe, image=image)
    fast = copy.deepcopy(pipe)
    with pytest.warns(RuntimeWarning, match="StableDiffusionControlNetPipeline is not accelerated"):
        fastdiff.accelerate(fast)
    assert torch.equal(_images(fast, image=image), want)
    assert "StableDiffusionControlNetPipeline: not accelerated" in fastdiff.explain(fast)
