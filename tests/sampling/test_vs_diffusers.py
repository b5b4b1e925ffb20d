"""Every sampler's whole trajectory against the matching diffusers scheduler, fed the same model
(a fixed random function of x and t) and the same noise (one generator, the same draw order).

Where diffusers keeps the sample's dtype (DDPM, DDIM), both sides run in float64 on the same
float64 alphas_cumprod and agree to ~1e-10. LCM's boundary scalings and Heun's sigmas are rounded
to float32 by diffusers (1e-6); Euler,
Euler ancestral, DPM-Solver++ and flow-matching Euler cast the sample to float32, so both run in
float32 there and agree to float32 accuracy over the trajectory.
"""
import inspect

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from fastdiff.sampling import (DDIM, DDPM, LCM, DPMSolverPP2M, Euler, EulerAncestral, FlowEuler,  # noqa: E402
                               FlowSchedule, Heun, NoiseSchedule, Pipeline)

SHAPE = (2, 3, 5, 4)


def _model(dtype):
    """A fixed random 'model': linear in x with a timestep-dependent offset, like a real one."""
    w = torch.randn(SHAPE, dtype=torch.float64) * 0.3 + 0.5
    bias = torch.randn(SHAPE, dtype=torch.float64) + 0.5

    def model(x, t):
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)[0]
        return (w * x.to(torch.float64) + bias * torch.cos(t / 300)).to(dtype)
    return model


def _diffusers_run(sched, x, model, steps, seed, step_kw, **set_kw):
    sched.set_timesteps(steps, **set_kw)
    gen = torch.Generator().manual_seed(seed)
    if "generator" in inspect.signature(sched.step).parameters:
        step_kw = {**step_kw, "generator": gen}
    out = []
    for t in sched.timesteps:
        m = model(sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x, t)
        x = sched.step(m, t, x, **step_kw).prev_sample
        out.append(x)
    return torch.stack(out)


def _fastdiff_run(schedule, sampler, x_T, model, steps, seed, prediction_type):
    plan = sampler.plan(schedule, steps, prediction_type)
    out = []
    pipe = Pipeline(model, schedule, prediction_type=prediction_type)
    pipe.run(x_T / plan.init_sigma, plan, generator=torch.Generator().manual_seed(seed), progress=False,
             callback=lambda i, x: out.append(x.clone()))
    return torch.stack(out)


def _compare(sched, sampler, schedule, steps, prediction_type, dtype, rtol, step_kw=(), **set_kw):
    model = _model(dtype)
    x_T = (torch.randn(SHAPE, dtype=torch.float64) * 3 + 0.5).to(dtype)
    seed = int(torch.randint(0, 2 ** 31, ()))
    want = _diffusers_run(sched, x_T.clone(), model, steps, seed, dict(step_kw), **set_kw)
    got = _fastdiff_run(schedule, sampler, x_T, model, steps, seed, prediction_type)
    assert got.shape == want.shape, f"{len(got)} evaluations, diffusers ran {len(want)}"
    err = ((got.double() - want.double()).abs().amax(dim=(1, 2, 3, 4)) / want.double().abs().amax())
    assert torch.isfinite(got).all() and err.max() <= rtol, f"relative error per step {err.tolist()}"


def _float64_tables(sched):
    """diffusers' VP schedulers compute in their alphas_cumprod dtype: make it float64."""
    for name in ("alphas_cumprod", "final_alpha_cumprod", "one"):
        if isinstance(getattr(sched, name, None), torch.Tensor):
            setattr(sched, name, getattr(sched, name).double())
    return NoiseSchedule(sched.alphas_cumprod.double())


def _vp_schedule(sched):
    return NoiseSchedule(sched.alphas_cumprod.double())


@pytest.mark.parametrize("beta_schedule,spacing,prediction,variance,steps", [
    ("linear", "leading", "epsilon", "fixed_small", 10),
    ("scaled_linear", "trailing", "v_prediction", "fixed_large", 7),
    ("squaredcos_cap_v2", "linspace", "sample", "fixed_small", 12),
    ("sigmoid", "leading", "epsilon", "fixed_large", 5),
])
def test_ddpm(beta_schedule, spacing, prediction, variance, steps):
    sched = diffusers.DDPMScheduler(beta_schedule=beta_schedule, timestep_spacing=spacing, prediction_type=prediction,
                                    variance_type=variance, clip_sample=False)
    _compare(sched, DDPM(variance=variance, spacing=spacing), _float64_tables(sched), steps, prediction,
             torch.float64, 1e-10)


@pytest.mark.parametrize("beta_schedule,spacing,prediction,eta,zero_snr,alpha_one,steps", [
    ("scaled_linear", "leading", "epsilon", 0.0, False, True, 10),
    ("linear", "trailing", "v_prediction", 0.5, False, False, 8),
    ("scaled_linear", "trailing", "v_prediction", 1.0, True, True, 6),
    ("squaredcos_cap_v2", "linspace", "sample", 0.3, False, True, 9),
])
def test_ddim(beta_schedule, spacing, prediction, eta, zero_snr, alpha_one, steps):
    sched = diffusers.DDIMScheduler(beta_schedule=beta_schedule, timestep_spacing=spacing, prediction_type=prediction,
                                    rescale_betas_zero_snr=zero_snr, set_alpha_to_one=alpha_one, clip_sample=False,
                                    beta_start=0.00085, beta_end=0.012)
    _compare(sched, DDIM(eta=eta, spacing=spacing, set_alpha_to_one=alpha_one), _float64_tables(sched), steps,
             prediction, torch.float64, 1e-10, step_kw={"eta": eta})


@pytest.mark.parametrize("prediction,steps,original", [("epsilon", 4, 50), ("v_prediction", 1, 50),
                                                       ("sample", 8, 25)])
def test_lcm(prediction, steps, original):
    sched = diffusers.LCMScheduler(prediction_type=prediction, original_inference_steps=original)
    _compare(sched, LCM(original_steps=original), _float64_tables(sched), steps, prediction, torch.float64, 1e-6)


@pytest.mark.parametrize("beta_schedule,spacing,offset,prediction,karras,zero_snr", [
    ("scaled_linear", "linspace", 0, "epsilon", False, False),
    ("scaled_linear", "leading", 1, "v_prediction", False, False),
    ("linear", "trailing", 0, "epsilon", True, False),
    ("scaled_linear", "trailing", 0, "v_prediction", False, True),
])
def test_euler(beta_schedule, spacing, offset, prediction, karras, zero_snr):
    sched = diffusers.EulerDiscreteScheduler(beta_schedule=beta_schedule, timestep_spacing=spacing, steps_offset=offset,
                                             prediction_type=prediction, use_karras_sigmas=karras,
                                             rescale_betas_zero_snr=zero_snr, beta_start=0.00085, beta_end=0.012)
    _compare(sched, Euler(spacing=spacing, steps_offset=offset, karras=karras), _vp_schedule(sched), 9, prediction,
             torch.float32, 2e-5)


@pytest.mark.parametrize("beta_schedule,spacing,prediction", [
    ("scaled_linear", "linspace", "epsilon"), ("linear", "trailing", "v_prediction"),
    ("squaredcos_cap_v2", "leading", "epsilon"),
])
def test_euler_ancestral(beta_schedule, spacing, prediction):
    sched = diffusers.EulerAncestralDiscreteScheduler(beta_schedule=beta_schedule, timestep_spacing=spacing,
                                                      prediction_type=prediction)
    _compare(sched, EulerAncestral(spacing=spacing), _vp_schedule(sched), 8, prediction, torch.float32, 2e-5)


@pytest.mark.parametrize("beta_schedule,spacing,prediction,karras,steps", [
    ("scaled_linear", "linspace", "epsilon", False, 6), ("linear", "trailing", "v_prediction", True, 5),
    ("scaled_linear", "leading", "sample", False, 4), ("scaled_linear", "linspace", "epsilon", True, 1),
])
def test_heun(beta_schedule, spacing, prediction, karras, steps):
    sched = diffusers.HeunDiscreteScheduler(beta_schedule=beta_schedule, timestep_spacing=spacing,
                                            prediction_type=prediction, use_karras_sigmas=karras,
                                            beta_start=0.00085, beta_end=0.012)
    _compare(sched, Heun(spacing=spacing, karras=karras), _vp_schedule(sched), steps, prediction, torch.float64, 1e-6)


@pytest.mark.parametrize("beta_schedule,spacing,prediction,karras,steps", [
    ("scaled_linear", "linspace", "epsilon", False, 20), ("scaled_linear", "leading", "v_prediction", False, 7),
    ("linear", "trailing", "sample", False, 10), ("scaled_linear", "linspace", "epsilon", True, 12),
    ("linear", "linspace", "v_prediction", True, 2),
])
def test_dpm_solver_pp_2m(beta_schedule, spacing, prediction, karras, steps):
    sched = diffusers.DPMSolverMultistepScheduler(beta_schedule=beta_schedule, timestep_spacing=spacing,
                                                  prediction_type=prediction, use_karras_sigmas=karras,
                                                  beta_start=0.00085, beta_end=0.012)
    _compare(sched, DPMSolverPP2M(karras=karras, spacing=spacing), _vp_schedule(sched), steps, prediction,
             torch.float32, 2e-5)


@pytest.mark.parametrize("shift,mu,stochastic,steps", [(1.0, None, False, 10), (3.0, None, False, 8),
                                                        (1.0, 0.9, False, 6), (3.0, None, True, 5)])
def test_flow_euler(shift, mu, stochastic, steps):
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift, use_dynamic_shifting=mu is not None,
                                                      stochastic_sampling=stochastic)
    _compare(sched, FlowEuler(stochastic=stochastic), FlowSchedule(shift=shift, mu=mu), steps, "flow",
             torch.float32, 2e-5, **({"mu": mu} if mu is not None else {}))
