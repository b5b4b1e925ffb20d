"""The accelerated calls of the diffusers pipelines fastdiff serves: each takes the call's
arguments as diffusers' __call__ binds them, does what diffusers does around the denoising loop
with diffusers' own helpers (input checks, prompt encoding, latent draws, safety checker,
postprocessing), and runs the loop on fastdiff's model and fused sampler_step. prepare() raises
NotAccelerated, naming what it cannot serve, before anything has run."""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from .schedulers import NotAccelerated, sampler_for

# StableDiffusionPipeline.__call__ arguments the fused loop does not serve while not None.
SD_UNSERVED = ("timesteps", "sigmas", "ip_adapter_image", "ip_adapter_image_embeds", "cross_attention_kwargs",
                "callback_on_step_end")


def plan_for(scheduler, steps: int, eta: float = 0.0):
    """The plan of the sampler the scheduler maps to, from diffusers' initial noise scale: its
    Euler-type schedulers start at sigma_max with linspace and trailing spacings, where the
    sampler's own start is sqrt(1 + sigma_max^2)."""
    sampler, schedule, prediction = sampler_for(scheduler, eta)
    try:
        plan = sampler.plan(schedule, steps, prediction)
        scheduler.set_timesteps(steps)
    except ValueError as e:
        raise NotAccelerated(str(e)) from None
    return dataclasses.replace(plan, init_sigma=float(scheduler.init_noise_sigma))


def check_generator(generator, plan, device: torch.device) -> None:
    if isinstance(generator, list):
        raise NotAccelerated("a list of generators")
    if any(plan.noisy) and generator is not None and generator.device.type != device.type:
        raise NotAccelerated(f"a {generator.device.type} generator for a stochastic sampler on {device.type}")


def prepare_sd(pipe, acc, a: dict) -> Callable:
    """StableDiffusionPipeline (epsilon, v-prediction or sample U-Nets)."""
    unserved(a, *SD_UNSERVED)
    plan = plan_for(pipe.scheduler, a["num_inference_steps"], a["eta"])
    unet = acc.model("unet", pipe.scheduler.config.get("prediction_type", "epsilon"))
    device = pipe._execution_device
    check_generator(a["generator"], plan, device)
    height = a["height"] or pipe.unet.config.sample_size * pipe.vae_scale_factor
    width = a["width"] or pipe.unet.config.sample_size * pipe.vae_scale_factor
    pipe.check_inputs(a["prompt"], height, width, None, a["negative_prompt"], a["prompt_embeds"],
                      a["negative_prompt_embeds"], callback_on_step_end_tensor_inputs=["latents"])

    def run():
        cond, batch, cfg = sd_prompt(pipe, a, device)
        shape = (batch * a["num_images_per_prompt"], pipe.unet.config.in_channels, height // pipe.vae_scale_factor,
                 width // pipe.vae_scale_factor)
        noise = draw(shape, a["generator"], device, cond.dtype, a["latents"])
        latents = acc.loop(unet, noise, plan, (cond,), a["guidance_scale"] if cfg else None, a["generator"], pipe)
        return sd_output(pipe, acc, a, latents, device, cond.dtype)
    return run


def sd_prompt(pipe, a: dict, device):
    """(text conditioning, [uncond; cond] under CFG, the prompt batch, whether CFG is on), as
    Stable Diffusion's pipelines encode it, their call state set as they set it."""
    pipe._guidance_scale, pipe._guidance_rescale, pipe._clip_skip = a["guidance_scale"], 0.0, a["clip_skip"]
    pipe._cross_attention_kwargs, pipe._interrupt = None, False
    cfg, prompt = pipe.do_classifier_free_guidance, a["prompt"]
    batch = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else a["prompt_embeds"].shape[0]
    embeds, negative = pipe.encode_prompt(prompt, device, a["num_images_per_prompt"], cfg, a["negative_prompt"],
                                          prompt_embeds=a["prompt_embeds"],
                                          negative_prompt_embeds=a["negative_prompt_embeds"], lora_scale=None,
                                          clip_skip=a["clip_skip"])
    return (torch.cat([negative, embeds]) if cfg else embeds), batch, cfg


def sd_output(pipe, acc, a: dict, latents, device, dtype):
    """Stable Diffusion's pipeline output from the final latents: decode, safety checker,
    postprocessing, as diffusers does them."""
    if a["output_type"] == "latent":
        image, nsfw = latents, None
    else:
        image = acc.decode(pipe, latents / pipe.vae.config.scaling_factor, a["generator"])
        image, nsfw = pipe.run_safety_checker(image, device, dtype)
    denormalize = [True] * image.shape[0] if nsfw is None else [not x for x in nsfw]
    image = pipe.image_processor.postprocess(image, output_type=a["output_type"], do_denormalize=denormalize)
    pipe.maybe_free_model_hooks()
    if not a["return_dict"]:
        return image, nsfw
    from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
    return StableDiffusionPipelineOutput(images=image, nsfw_content_detected=nsfw)


def unserved(a: dict, *names: str) -> None:
    unserved = [k for k in names if a[k] is not None] + list(a["kwargs"])
    if a.get("guidance_rescale", 0) > 0:
        unserved.append("guidance_rescale")
    if unserved:
        raise NotAccelerated(", ".join(unserved))


class WithAddedCond:
    """SDXL's U-Net as the fused loop calls a denoiser, every conditioning input a tensor."""

    def __init__(self, unet):
        self.unet = unet

    def __call__(self, x, t, context, text_embeds, time_ids):
        return self.unet(x, t, context, {"text_embeds": text_embeds, "time_ids": time_ids})


def prepare_sdxl(pipe, acc, a: dict) -> Callable:
    """StableDiffusionXLPipeline: two text encoders, pooled text embeds and size/crop time ids."""
    unserved(a, *SD_UNSERVED, "denoising_end")
    plan = plan_for(pipe.scheduler, a["num_inference_steps"], a["eta"])
    unet = acc.model("unet", pipe.scheduler.config.get("prediction_type", "epsilon"))
    device = pipe._execution_device
    generator = a["generator"]
    check_generator(generator, plan, device)
    height = a["height"] or pipe.default_sample_size * pipe.vae_scale_factor
    width = a["width"] or pipe.default_sample_size * pipe.vae_scale_factor
    pipe.check_inputs(a["prompt"], a["prompt_2"], height, width, None, a["negative_prompt"], a["negative_prompt_2"],
                      a["prompt_embeds"], a["negative_prompt_embeds"], a["pooled_prompt_embeds"],
                      a["negative_pooled_prompt_embeds"], None, None, ["latents"])

    def run():
        embeds, negative, pooled, negative_pooled, batch, cfg = sdxl_prompt(pipe, a, device)
        projection = sdxl_projection_dim(pipe, pooled)
        time_ids = pipe._get_add_time_ids(a["original_size"] or (height, width), a["crops_coords_top_left"],
                                          a["target_size"] or (height, width), dtype=embeds.dtype,
                                          text_encoder_projection_dim=projection)
        negative_time_ids = time_ids
        if a["negative_original_size"] is not None and a["negative_target_size"] is not None:
            negative_time_ids = pipe._get_add_time_ids(a["negative_original_size"],
                                                       a["negative_crops_coords_top_left"], a["negative_target_size"],
                                                       dtype=embeds.dtype, text_encoder_projection_dim=projection)
        n = batch * a["num_images_per_prompt"]
        # diffusers repeats the [negative; positive] pair of time ids here, one row pair per image
        cond = sdxl_cond(embeds, negative, pooled, negative_pooled, time_ids, negative_time_ids, cfg, device, n)
        shape = (n, pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
        noise = draw(shape, generator, device, embeds.dtype, a["latents"])
        latents = acc.loop(unet, noise, plan, cond, a["guidance_scale"] if cfg else None, generator, pipe,
                           wrap=WithAddedCond)
        return sdxl_output(pipe, acc, a, latents)
    return run


def sdxl_prompt(pipe, a: dict, device):
    """(embeds, negative, pooled, negative pooled, the prompt batch, whether CFG is on), as SDXL's
    pipelines encode them, their call state set as they set it."""
    pipe._guidance_scale, pipe._guidance_rescale, pipe._clip_skip = a["guidance_scale"], 0.0, a["clip_skip"]
    pipe._cross_attention_kwargs, pipe._denoising_end, pipe._interrupt = None, None, False
    cfg, prompt = pipe.do_classifier_free_guidance, a["prompt"]
    batch = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else a["prompt_embeds"].shape[0]
    encoded = pipe.encode_prompt(
        prompt=prompt, prompt_2=a["prompt_2"], device=device, num_images_per_prompt=a["num_images_per_prompt"],
        do_classifier_free_guidance=cfg, negative_prompt=a["negative_prompt"],
        negative_prompt_2=a["negative_prompt_2"], prompt_embeds=a["prompt_embeds"],
        negative_prompt_embeds=a["negative_prompt_embeds"], pooled_prompt_embeds=a["pooled_prompt_embeds"],
        negative_pooled_prompt_embeds=a["negative_pooled_prompt_embeds"], lora_scale=None, clip_skip=a["clip_skip"])
    return (*encoded, batch, cfg)


def sdxl_projection_dim(pipe, pooled) -> int:
    return int(pooled.shape[-1]) if pipe.text_encoder_2 is None else pipe.text_encoder_2.config.projection_dim


def sdxl_cond(embeds, negative, pooled, negative_pooled, time_ids, negative_time_ids, cfg: bool, device,
              repeat: int = 1) -> tuple:
    """The U-Net's conditioning tensors for WithAddedCond, [uncond; cond] under CFG; the time ids
    then repeated `repeat` times."""
    if cfg:
        embeds, pooled = torch.cat([negative, embeds]), torch.cat([negative_pooled, pooled])
        time_ids = torch.cat([negative_time_ids, time_ids])
    return embeds.to(device), pooled.to(device), time_ids.to(device).repeat(repeat, 1)


def sdxl_output(pipe, acc, a: dict, latents):
    """SDXL's pipeline output from the final latents: decode, watermark, postprocessing."""
    if a["output_type"] == "latent":
        image = latents
    else:
        image = _decode_sdxl(pipe, acc, latents)
        if pipe.watermark is not None:
            image = pipe.watermark.apply_watermark(image)
        image = pipe.image_processor.postprocess(image, output_type=a["output_type"])
    pipe.maybe_free_model_hooks()
    if not a["return_dict"]:
        return (image,)
    from diffusers.pipelines.stable_diffusion_xl import StableDiffusionXLPipelineOutput
    return StableDiffusionXLPipelineOutput(images=image)


def _decode_sdxl(pipe, acc, latents):
    """As diffusers decodes SDXL latents: an fp16 VAE that asks for it decodes in float32 (diffusers'
    own VAE then), and latents_mean / latents_std unscale the latents where the VAE has them."""
    config = pipe.vae.config
    upcast = pipe.vae.dtype == torch.float16 and config.force_upcast
    if upcast:
        pipe.upcast_vae()
        latents = latents.to(next(iter(pipe.vae.post_quant_conv.parameters())).dtype)
    if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
        mean = torch.tensor(config.latents_mean).view(1, 4, 1, 1).to(latents.device, latents.dtype)
        std = torch.tensor(config.latents_std).view(1, 4, 1, 1).to(latents.device, latents.dtype)
        latents = latents * std / config.scaling_factor + mean
    else:
        latents = latents / config.scaling_factor
    if not upcast:
        return acc.decode(pipe, latents, None)
    image = pipe.vae.decode(latents, return_dict=False)[0]
    pipe.vae.to(dtype=torch.float16)
    return image


def prepare_dit(pipe, acc, a: dict) -> Callable:
    """DiTPipeline: diffusers puts the conditional half first and uses label 1000 as the null class."""
    plan = plan_for(pipe.scheduler, a["num_inference_steps"])
    dit = acc.model("transformer")
    scale, generator = a["guidance_scale"], a["generator"]
    cfg = scale > 1
    device = pipe._execution_device
    check_generator(generator, plan, device)
    if bool((plan.scale_in != 1).any()):
        raise NotAccelerated(f"{type(pipe.scheduler).__name__} scales the model input, and diffusers' DiT loop then "
                             "steps the scaled input; fastdiff does not reproduce that")
    if cfg and any(plan.noisy):
        raise NotAccelerated("a stochastic sampler under guidance (diffusers steps both halves of the batch)")
    if cfg and pipe.transformer.config.num_embeds_ada_norm != 1000:
        raise NotAccelerated("guidance with a null class other than 1000")

    def run():
        labels = torch.tensor(a["class_labels"], device=device).reshape(-1)
        c = pipe.transformer.config
        shape = (len(labels), c.in_channels, c.sample_size, c.sample_size)
        noise = draw(shape, generator, device, pipe.transformer.dtype, None)
        y = torch.cat([torch.full_like(labels, 1000), labels]) if cfg else labels
        # diffusers' DiT loop steps its scheduler without the generator: step noise is global
        latents = acc.loop(dit, noise, plan, (y,), scale if cfg else None, None, pipe)
        samples = acc.decode(pipe, 1 / pipe.vae.config.scaling_factor * latents, None)
        samples = (samples / 2 + 0.5).clamp(0, 1)
        if a["output_type"] != "pt":
            samples = samples.cpu().permute(0, 2, 3, 1).float().numpy()
            if a["output_type"] == "pil":
                samples = pipe.numpy_to_pil(samples)
        pipe.maybe_free_model_hooks()
        if not a["return_dict"]:
            return (samples,)
        from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
        return ImagePipelineOutput(images=samples)
    return run


def draw(shape, generator, device, dtype, latents):
    from diffusers.utils.torch_utils import randn_tensor

    if latents is not None:
        return latents.to(device)
    return randn_tensor(shape, generator=generator, device=device, dtype=dtype)
