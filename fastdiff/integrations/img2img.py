"""The accelerated calls of StableDiffusionImg2ImgPipeline and StableDiffusionXLImg2ImgPipeline:
diffusers encodes the image and noises it to the strength's first timestep (its own VAE encoder
and scheduler.add_noise, so the start is diffusers' to the bit); fastdiff runs the remaining rows
of the sampler's plan."""
from __future__ import annotations

from typing import Callable

from ..sampling import Plan
from . import calls
from .schedulers import NotAccelerated


def tail(plan: Plan, start: int) -> Plan:
    """The plan's rows from `start` on, begun from the given latents as they are. A multistep
    solver has no previous prediction at its first row, so that row takes the first-order step,
    as diffusers' scheduler does: x_next = a x + b d + c prev becomes a x + (b + c) d."""
    if start >= len(plan):
        raise NotAccelerated("no denoising step at this strength")
    coeffs = plan.coeffs[start:].clone()
    coeffs[0, 3] += coeffs[0, 4]
    coeffs[0, 4] = 0.0
    return Plan(t=plan.t[start:], scale_in=plan.scale_in[start:], coeffs=coeffs, init_sigma=1.0)


def _from_strength(pipe, acc, a: dict):
    """(the plan's rows from the strength's first step on, the fastdiff U-Net, the device)."""
    steps = a["num_inference_steps"]
    plan = calls.plan_for(pipe.scheduler, steps, a["eta"])
    first = max(steps - min(int(steps * a["strength"]), steps), 0) * pipe.scheduler.order
    rows = tail(plan, first)
    unet = acc.model("unet", pipe.scheduler.config.get("prediction_type", "epsilon"))
    device = pipe._execution_device
    calls.check_generator(a["generator"], rows, device)
    return rows, unet, device


def prepare_sd_img2img(pipe, acc, a: dict) -> Callable:
    """StableDiffusionImg2ImgPipeline: the sampler's plan from the strength's first step on."""
    calls.unserved(a, *calls.SD_UNSERVED)
    steps, strength = a["num_inference_steps"], a["strength"]
    pipe.check_inputs(a["prompt"], strength, None, a["negative_prompt"], a["prompt_embeds"],
                      a["negative_prompt_embeds"], callback_on_step_end_tensor_inputs=["latents"])
    rows, unet, device = _from_strength(pipe, acc, a)

    def run():
        cond, batch, cfg = calls.sd_prompt(pipe, a, device)
        image = pipe.image_processor.preprocess(a["image"])
        pipe.scheduler.set_timesteps(steps, device=device)
        timesteps, _ = pipe.get_timesteps(steps, strength, device)
        n = a["num_images_per_prompt"]
        start = pipe.prepare_latents(image, timesteps[:1].repeat(batch * n), batch, n, cond.dtype, device,
                                     a["generator"])
        latents = acc.loop(unet, start, rows, (cond,), a["guidance_scale"] if cfg else None, a["generator"], pipe)
        return calls.sd_output(pipe, acc, a, latents, device, cond.dtype)
    return run


def prepare_sdxl_img2img(pipe, acc, a: dict) -> Callable:
    """StableDiffusionXLImg2ImgPipeline: SDXL's conditioning with aesthetic-score time ids, from
    the strength's first step on."""
    calls.unserved(a, *calls.SD_UNSERVED, "denoising_start", "denoising_end")
    steps, strength = a["num_inference_steps"], a["strength"]
    pipe.check_inputs(a["prompt"], a["prompt_2"], strength, steps, None, a["negative_prompt"],
                      a["negative_prompt_2"], a["prompt_embeds"], a["negative_prompt_embeds"], None, None, ["latents"])
    rows, unet, device = _from_strength(pipe, acc, a)

    def run():
        embeds, negative, pooled, negative_pooled, batch, cfg = calls.sdxl_prompt(pipe, a, device)
        pipe._denoising_start = None
        image = pipe.image_processor.preprocess(a["image"])
        pipe.scheduler.set_timesteps(steps, device=device)
        timesteps, _ = pipe.get_timesteps(steps, strength, device)
        n = batch * a["num_images_per_prompt"]
        start = a["latents"]
        if start is None:
            start = pipe.prepare_latents(image, timesteps[:1].repeat(n), batch, a["num_images_per_prompt"],
                                         embeds.dtype, device, a["generator"], True)
        height, width = (s * pipe.vae_scale_factor for s in start.shape[-2:])
        original, target = a["original_size"] or (height, width), a["target_size"] or (height, width)
        time_ids, negative_time_ids = pipe._get_add_time_ids(
            original, a["crops_coords_top_left"], target, a["aesthetic_score"], a["negative_aesthetic_score"],
            a["negative_original_size"] or original, a["negative_crops_coords_top_left"],
            a["negative_target_size"] or target, dtype=embeds.dtype,
            text_encoder_projection_dim=calls.sdxl_projection_dim(pipe, pooled))
        # diffusers repeats each set of time ids per image before pairing them
        cond = calls.sdxl_cond(embeds, negative, pooled, negative_pooled, time_ids.repeat(n, 1),
                               negative_time_ids.repeat(n, 1), cfg, device)
        latents = acc.loop(unet, start.to(device), rows, cond, a["guidance_scale"] if cfg else None,
                           a["generator"], pipe, wrap=calls.WithAddedCond)
        return calls.sdxl_output(pipe, acc, a, latents)
    return run
