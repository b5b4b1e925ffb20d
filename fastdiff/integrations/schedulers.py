"""The fastdiff sampler a diffusers scheduler maps to, with the scheduler's own alphas_cumprod, or
the reason it maps to none.

A scheduler maps only with the config flags whose trajectories tests/sampling/test_vs_diffusers.py
checks against diffusers; anything else (clipping, thresholding, other sigma spacings, SDE
variants, ...) runs diffusers' own loop."""
from __future__ import annotations

import math

import torch

from ..sampling import DDIM, DDPM, LCM, DPMSolverPP2M, Euler, EulerAncestral, Heun, NoiseSchedule

PREDICTIONS = ("epsilon", "v_prediction", "sample")

# The config values each scheduler must have (absent keys take diffusers' default, which fits).
_COMMON = dict(trained_betas=None, thresholding=False, clip_sample=False)
_SIGMAS = dict(use_exponential_sigmas=False, use_beta_sigmas=False)
_FIXED = {
    "DDPMScheduler": dict(_COMMON, rescale_betas_zero_snr=False),
    "DDIMScheduler": dict(_COMMON),
    "EulerDiscreteScheduler": dict(_COMMON, **_SIGMAS, interpolation_type="linear", timestep_type="discrete",
                                   final_sigmas_type="zero", sigma_min=None, sigma_max=None),
    "EulerAncestralDiscreteScheduler": dict(_COMMON, rescale_betas_zero_snr=False),
    "HeunDiscreteScheduler": dict(_COMMON, **_SIGMAS),
    "DPMSolverMultistepScheduler": dict(_COMMON, **_SIGMAS, solver_order=2, algorithm_type="dpmsolver++",
                                        solver_type="midpoint", lower_order_final=True, euler_at_final=False,
                                        use_lu_lambdas=False, use_flow_sigmas=False, final_sigmas_type="zero",
                                        lambda_min_clipped=-math.inf, variance_type=None,
                                        rescale_betas_zero_snr=False, use_dynamic_shifting=False),
    "LCMScheduler": dict(_COMMON, rescale_betas_zero_snr=False),
}


class NotAccelerated(Exception):
    """What keeps a call, a module or a scheduler on diffusers' own path, in a few words."""


def _sampler(name: str, c: dict, eta: float):
    spacing, offset = c.get("timestep_spacing"), c.get("steps_offset", 0)
    karras = bool(c.get("use_karras_sigmas"))
    if name == "DDPMScheduler":
        return DDPM(variance=c.get("variance_type", "fixed_small"), spacing=spacing, steps_offset=offset)
    if name == "DDIMScheduler":
        return DDIM(eta=eta, spacing=spacing, steps_offset=offset, set_alpha_to_one=c.get("set_alpha_to_one", True))
    if name == "EulerDiscreteScheduler":
        return Euler(spacing=spacing, steps_offset=offset, karras=karras)
    if name == "EulerAncestralDiscreteScheduler":
        return EulerAncestral(spacing=spacing, steps_offset=offset)
    if name == "HeunDiscreteScheduler":
        return Heun(spacing=spacing, steps_offset=offset, karras=karras)
    if name == "DPMSolverMultistepScheduler":
        return DPMSolverPP2M(karras=karras, spacing=spacing, steps_offset=offset)
    return LCM(original_steps=c.get("original_inference_steps", 50), timestep_scaling=c.get("timestep_scaling", 10.0))


def sampler_for(scheduler, eta: float = 0.0):
    """(sampler, schedule, prediction_type) of a diffusers scheduler; raises NotAccelerated."""
    name = type(scheduler).__name__
    if name not in _FIXED:
        raise NotAccelerated(f"{name} has no fastdiff sampler")
    c = dict(scheduler.config)
    bad = [f"{k}={c[k]!r}" for k, v in _FIXED[name].items() if k in c and c[k] != v]
    if name == "DDPMScheduler" and c.get("variance_type", "fixed_small") not in ("fixed_small", "fixed_large"):
        bad.append(f"variance_type={c['variance_type']!r}")
    prediction = c.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        bad.append(f"prediction_type={prediction!r}")
    if bad:
        raise NotAccelerated(f"{name} with " + ", ".join(bad))
    schedule = NoiseSchedule(scheduler.alphas_cumprod.detach().to("cpu", torch.float64))
    return _sampler(name, c, eta), schedule, prediction
