"""fastdiff's Pipeline drives the SD3 and Flux transformers as diffusers' StableDiffusion3Pipeline
and FluxPipeline do: FlowEuler on SD3's static shift with classifier-free guidance, and on Flux's
resolution-dependent shift with the guidance scale embedded. Tiny random transformers, the same
text embeddings and noise: the float64 fastdiff trajectory agrees with diffusers' float32 one to
float32 rounding, and the float32 one meets the numerics rule against it."""
import pytest
import torch

from fastdiff.models import Flux, FluxConfig, MMDiT, MMDiTConfig
from fastdiff.sampling import (FlowEuler, FlowSchedule, Pipeline, flux_denoiser, flux_ids, pack_latents,
                               sd3_denoiser, unpack_latents)
from fastdiff.testing import assert_numerics, max_error, randn

diffusers = pytest.importorskip("diffusers")

STEPS = 4


def _randomized(model):
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _ours(model_cls, config_cls, ref, dtype):
    return model_cls.from_pretrained(ref.state_dict(), config=config_cls.from_diffusers(dict(ref.config)), dtype=dtype)


def _assert_trajectory(run_ours, theirs):
    """ours64 within float32 rounding of diffusers' float32 result; ours32 by the numerics rule."""
    ours64, ours32 = run_ours(torch.float64), run_ours(torch.float32)
    scale = max(1.0, ours64.abs().max().item())
    assert max_error(theirs, ours64) <= 1e-4 * scale, f"diffusers vs fastdiff float64: {max_error(theirs, ours64)}"
    assert_numerics(ours32, theirs, ours64, name="trajectory float32")


@torch.no_grad()
def test_sd3_trajectory_matches_diffusers():
    ref = _randomized(diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=12, caption_projection_dim=16, pooled_projection_dim=10,
        pos_embed_max_size=6))
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = diffusers.StableDiffusion3Pipeline(transformer=ref, scheduler=scheduler, vae=None, text_encoder=None,
                                              tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                              text_encoder_3=None, tokenizer_3=None)
    noise = randn((2, 4, 6, 4), mean=0.0)
    text, neg_text = randn((2, 7, 12)), randn((2, 7, 12))
    pooled, neg_pooled = randn((2, 10)), randn((2, 10))
    theirs = pipe(prompt_embeds=text, negative_prompt_embeds=neg_text, pooled_prompt_embeds=pooled,
                  negative_pooled_prompt_embeds=neg_pooled, latents=noise.clone(), height=48, width=32,
                  num_inference_steps=STEPS, guidance_scale=5.0, output_type="latent").images

    def run(dtype):
        pipeline = Pipeline(sd3_denoiser(_ours(MMDiT, MMDiTConfig, ref, dtype)), FlowSchedule.sd3(3.0),
                            prediction_type="flow")
        cond = (torch.cat([neg_text, text]).to(dtype), torch.cat([neg_pooled, pooled]).to(dtype))
        return pipeline.run(noise.to(dtype), FlowEuler().plan(pipeline.schedule, STEPS, "flow"), cond=cond,
                            guidance_scale=5.0, progress=False)
    _assert_trajectory(run, theirs)


@pytest.mark.parametrize("guidance", [True, False], ids=["dev", "schnell"])
@torch.no_grad()
def test_flux_trajectory_matches_diffusers(guidance):
    ref = _randomized(diffusers.FluxTransformer2DModel(
        in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=12, pooled_projection_dim=10, axes_dims_rope=(4, 6, 6), guidance_embeds=guidance))
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                          max_shift=1.15, base_image_seq_len=256,
                                                          max_image_seq_len=4096)
    pipe = diffusers.FluxPipeline(scheduler=scheduler, vae=None, text_encoder=None, tokenizer=None,
                                  text_encoder_2=None, tokenizer_2=None, transformer=ref)
    # a 48x64 image: (6, 8) latents of 2 channels, 12 packed tokens of 8
    noise = pack_latents(randn((1, 2, 6, 8), mean=0.0))
    text, pooled = randn((1, 5, 12)), randn((1, 10))
    theirs = pipe(prompt_embeds=text, pooled_prompt_embeds=pooled, latents=noise.clone(), height=48, width=64,
                  num_inference_steps=STEPS, guidance_scale=3.5, output_type="latent").images

    def run(dtype):
        img_ids, txt_ids = flux_ids(6, 8, text.shape[1])
        pipeline = Pipeline(flux_denoiser(_ours(Flux, FluxConfig, ref, dtype), img_ids, txt_ids),
                            FlowSchedule.flux(noise.shape[1]), prediction_type="flow")
        cond = (text.to(dtype), pooled.to(dtype), torch.full((1,), 3.5, dtype=dtype) if guidance else None)
        return pipeline.run(noise.to(dtype), FlowEuler().plan(pipeline.schedule, STEPS, "flow"), cond=cond,
                            progress=False)
    _assert_trajectory(run, theirs)


def test_flux_packing_is_diffusers():
    latents = randn((2, 3, 6, 8))
    packed = diffusers.FluxPipeline._pack_latents(latents, 2, 3, 6, 8)
    assert torch.equal(pack_latents(latents), packed)
    assert torch.equal(unpack_latents(packed, 6, 8), latents)
    img_ids, txt_ids = flux_ids(6, 8, 5)
    assert torch.equal(img_ids, diffusers.FluxPipeline._prepare_latent_image_ids(1, 3, 4, "cpu", torch.float32))
    assert torch.equal(txt_ids, torch.zeros(5, 3))


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["sd3", "flux"])
@torch.no_grad()
def test_graphed_transformers_match_eager(family):
    """On CUDA each step of SD3 (CFG) and Flux (embedded guidance) is captured in one CUDA graph
    and replays what the eager loop computes."""
    import warnings

    torch.manual_seed(0)
    if family == "sd3":
        model = _randomized(MMDiT(MMDiTConfig(sample_size=8, in_channels=4, out_channels=4, num_layers=2,
                                              attention_head_dim=64, num_attention_heads=2, joint_attention_dim=12,
                                              caption_projection_dim=128, pooled_projection_dim=10,
                                              pos_embed_max_size=6, qk_norm="rms_norm"))).cuda()
        torch.nn.init.normal_(model.pos_embed)
        denoise, schedule, shape = sd3_denoiser(model), FlowSchedule.sd3(), (1, 4, 6, 4)
        cond, scale = (randn((2, 7, 12), device="cuda"), randn((2, 10), device="cuda")), 5.0
    else:
        model = _randomized(Flux(FluxConfig(in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                            num_attention_heads=2, joint_attention_dim=12, pooled_projection_dim=10,
                                            axes_dims_rope=(4, 6, 6)))).cuda()
        img_ids, txt_ids = flux_ids(6, 8, 5, device="cuda")
        denoise, schedule, shape = flux_denoiser(model, img_ids, txt_ids), FlowSchedule.flux(12), (1, 12, 8)
        cond, scale = (randn((1, 5, 12), device="cuda"), randn((1, 10), device="cuda"),
                       torch.full((1,), 3.5, device="cuda")), None
    graphed = Pipeline(denoise, schedule, prediction_type="flow")
    eager = Pipeline(denoise, schedule, prediction_type="flow", cuda_graph=False)
    kw = dict(cond=cond, guidance_scale=scale, seed=3, device="cuda", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture would warn and run eagerly
        got = graphed.sample(shape, FlowEuler(), STEPS, **kw)
    assert graphed.captured_graphs == 1
    torch.testing.assert_close(got, eager.sample(shape, FlowEuler(), STEPS, **kw), rtol=1e-5, atol=1e-5)
