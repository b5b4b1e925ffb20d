"""The accelerated call of StableDiffusionImg2ImgPipeline: diffusers encodes the image and noises
it to the strength's first timestep (its own VAE encoder and scheduler.add_noise, so the start
is diffusers' to the bit); fastdiff runs the remaining rows of the sampler's plan."""
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


def prepare_sd_img2img(pipe, acc, a: dict) -> Callable:
    """StableDiffusionImg2ImgPipeline: the sampler's plan from the strength's first step on."""
    calls.unserved(a, *calls.SD_UNSERVED)
    steps, strength = a["num_inference_steps"], a["strength"]
    pipe.check_inputs(a["prompt"], strength, None, a["negative_prompt"], a["prompt_embeds"],
                      a["negative_prompt_embeds"], callback_on_step_end_tensor_inputs=["latents"])
    plan = calls.plan_for(pipe.scheduler, steps, a["eta"])
    first = max(steps - min(int(steps * strength), steps), 0) * pipe.scheduler.order
    rows = tail(plan, first)
    unet = acc.model("unet", pipe.scheduler.config.get("prediction_type", "epsilon"))
    device = pipe._execution_device
    calls.check_generator(a["generator"], rows, device)

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
