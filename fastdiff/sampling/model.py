"""A model ready to sample: the denoiser with its schedule, prediction type, latent shape, VAE,
sampling defaults and the way prompts or class labels become its conditioning inputs; and the one
path from prompts or labels to images (generate), through a Pipeline built once per model."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import torch

from . import defaults as _defaults
from .defaults import SamplingDefaults
from .pipeline import Pipeline
from .samplers import Sampler, get_sampler
from .schedules import NoiseSchedule


@dataclass
class SamplingModel:
    """denoise(x_in, t, *cond) -> model output (a learned-sigma output with twice the latent channels
    is fine: the Pipeline keeps its first half); condition(items, guidance) -> cond, where items are
    N prompts (takes = "prompt") or class labels (takes = "class") and, with guidance, cond holds
    [uncond; cond] (2N rows). vae is None when the model works on pixels; dtype is the latents'.
    defaults: the SamplingDefaults of generate (a dict of some of its fields is taken too, the
    others being the generic defaults)."""
    denoise: Callable[..., torch.Tensor]
    schedule: Any
    latent_shape: tuple
    condition: Callable[[Sequence, bool], tuple]
    prediction_type: str = "epsilon"
    vae: Any = None
    takes: str = "prompt"
    dtype: torch.dtype = torch.float32
    defaults: SamplingDefaults = _defaults.GENERIC
    # the Pipeline of each cuda_graph setting, built by the first generate
    _pipelines: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if isinstance(self.defaults, dict):
            self.defaults = SamplingDefaults(**self.defaults)

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
                   next(dit.parameters()).dtype, _defaults.DIT)

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
                   _defaults.UNET)

    def pipeline(self, cuda_graph: bool = True) -> Pipeline:
        """This model's Pipeline, built on first use and kept: its buffers and captured CUDA graphs
        serve every later run of the same shape. A denoiser moved or rebuilt needs a new
        SamplingModel (dataclasses.replace makes one)."""
        if cuda_graph not in self._pipelines:
            self._pipelines[cuda_graph] = Pipeline(self.denoise, self.schedule, prediction_type=self.prediction_type,
                                                   vae=self.vae, cuda_graph=cuda_graph)
        return self._pipelines[cuda_graph]

    @torch.no_grad()
    def generate(self, items: Sequence, *, sampler: Union[str, Sampler, None] = None, steps: Optional[int] = None,
                 guidance_scale: Optional[float] = None, seed: int = 0, device=None, progress: bool = False,
                 cuda_graph: bool = True) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] for N prompts or class labels (as `takes` says): their
        conditioning, the sampling run, the VAE decode (a model without a VAE samples pixels).

        sampler (a name or a Sampler), steps and guidance_scale default to self.defaults; a
        guidance_scale of 1 turns guidance off. seed seeds x_T and every step's noise. device: the
        conditioning's by default. cuda_graph: replay each step as a CUDA graph on CUDA devices."""
        d = self.defaults
        if sampler is None or isinstance(sampler, str):
            sampler = get_sampler(sampler or d.sampler)
        scale = d.guidance_scale if guidance_scale is None else guidance_scale
        guidance = None if scale == 1 else scale
        cond = self.condition(list(items), guidance is not None)
        if device is None:
            device = next((c.device for c in cond if c is not None), "cpu")
        pipe = self.pipeline(cuda_graph)
        latents = pipe.sample((len(items), *self.latent_shape), sampler, steps or d.steps, cond=cond,
                              guidance_scale=guidance, seed=seed, device=device, dtype=self.dtype, progress=progress)
        images = pipe.decode(latents) if self.vae is not None else latents
        return images.clamp(-1, 1)
