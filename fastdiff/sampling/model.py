"""A model ready to sample: the denoiser with its schedule, prediction type, latent shape, VAE and
the way prompts or class labels become its conditioning inputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from .schedules import NoiseSchedule


@dataclass
class SamplingModel:
    """denoise(x_in, t, *cond) -> model output (a learned-sigma output with twice the latent channels
    is fine: the Pipeline keeps its first half); condition(items, guidance) -> cond, where items are
    N prompts (takes = "prompt") or class labels (takes = "class") and, with guidance, cond holds
    [uncond; cond] (2N rows). vae is None when the model works on pixels; dtype is the latents'.
    defaults may hold sampler, steps and guidance_scale."""
    denoise: Callable[..., torch.Tensor]
    schedule: Any
    latent_shape: tuple
    condition: Callable[[Sequence, bool], tuple]
    prediction_type: str = "epsilon"
    vae: Any = None
    takes: str = "prompt"
    dtype: torch.dtype = torch.float32
    defaults: dict = field(default_factory=dict)

    @classmethod
    def from_dit(cls, dit, vae=None, schedule=None) -> "SamplingModel":
        """A class-conditional DiT: the null class is label num_classes. The DiT itself is the
        denoiser; the Pipeline drops the variance half of a learned-sigma output."""
        c = dit.config
        channels = c.in_channels

        def condition(labels, guidance):
            device = next(dit.parameters()).device
            y = torch.as_tensor([int(v) for v in labels], device=device)
            return (torch.cat([torch.full_like(y, c.num_classes), y]) if guidance else y,)
        return cls(dit, schedule or NoiseSchedule.from_betas("linear", 1000, 1e-4, 0.02),
                   (channels, c.input_size, c.input_size), condition, "epsilon", vae, "class",
                   next(dit.parameters()).dtype, {"sampler": "ddim", "steps": 50, "guidance_scale": 4.0})

    @classmethod
    def from_unet(cls, unet, encode_prompt: Callable[[list], torch.Tensor], vae=None,
                  schedule: Optional[NoiseSchedule] = None) -> "SamplingModel":
        """A text-conditioned U-Net; the empty prompt is the unconditional input."""
        c = unet.config

        def condition(prompts, guidance):
            prompts = [str(p) for p in prompts]
            ctx = encode_prompt(prompts)
            return (torch.cat([encode_prompt([""] * len(prompts)), ctx]) if guidance else ctx,)
        return cls(unet, schedule or NoiseSchedule.from_betas("scaled_linear"),
                   (c.in_channels, c.sample_size, c.sample_size), condition,
                   getattr(c, "prediction_type", "epsilon"), vae, "prompt", next(unet.parameters()).dtype,
                   {"sampler": "dpmpp_2m", "steps": 20, "guidance_scale": 7.5})
