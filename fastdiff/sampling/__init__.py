"""Sampling: noise schedules, samplers as coefficient recipes for fastdiff.ops.sampler_step, the
pipeline that runs them over any fastdiff model (CFG batching, CUDA graphs, VAE decode), and
SamplingModel, a model with its sampling defaults and the one path from prompts or class labels
to images."""
from .defaults import SamplingDefaults
from .flow_models import flux_denoiser, flux_ids, pack_latents, sd3_denoiser, unpack_latents
from .model import SamplingModel
from .pipeline import Pipeline
from .samplers import (DDIM, DDPM, LCM, SAMPLERS, DPMSolverPP2M, Euler, EulerAncestral, FlowEuler, Heun, Plan,
                       data_prediction, get_sampler)
from .schedules import FlowSchedule, NoiseSchedule

__all__ = ["Pipeline", "Plan", "NoiseSchedule", "FlowSchedule", "SAMPLERS", "get_sampler", "data_prediction",
           "DDPM", "DDIM", "Euler", "EulerAncestral", "Heun", "DPMSolverPP2M", "LCM", "FlowEuler",
           "SamplingModel", "SamplingDefaults", "sd3_denoiser", "flux_denoiser", "flux_ids", "pack_latents",
           "unpack_latents"]
