"""Sampling defaults: the sampler, step count and guidance scale a model samples with unless the
caller says otherwise. Every default of fastdiff.sampling lives here; the built-in models declare
theirs in fastdiff.builtin."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingDefaults:
    """sampler: a name in fastdiff.sampling.SAMPLERS; guidance_scale 1 turns guidance off. The
    field defaults are those of a model that declares none."""
    sampler: str = "dpmpp_2m"
    steps: int = 20
    guidance_scale: float = 5.0


GENERIC = SamplingDefaults()
# Stable Diffusion U-Nets: DPM-Solver++ 2M, 20 steps, at the usual CFG 7.5.
UNET = SamplingDefaults("dpmpp_2m", 20, 7.5)
# Class-conditional DiTs: DDIM, 50 steps, CFG 4.
DIT = SamplingDefaults("ddim", 50, 4.0)
