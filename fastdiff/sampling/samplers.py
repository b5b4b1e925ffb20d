"""Samplers as coefficient recipes for fastdiff.ops.sampler_step.

A sampler is pure: given a schedule, a step count and the model's prediction type, it returns a
Plan, one row per model evaluation, computed up front on the host in float64:

    model input  = scale_in * x, at model timestep t
    d            = p x + q m          the data prediction x0 from the model output m
    x_next       = a x + b d + c prev + e noise

where prev is the d of the previous evaluation and noise a fresh N(0, I) draw (only where e != 0).
The state of a run (x, prev, the generator) lives in the run, never in the sampler.

Each sampler works in a frame x = alpha x0 + sigma eps: VP (alpha^2 + sigma^2 = 1), sigma space
(alpha = 1, Karras/EDM) or flow (alpha = 1 - sigma). The prediction types map to (p, q) in any
frame, and the first-order step to the next noise level is the same DDIM/Euler update in all of
them: keep the predicted eps, move x0's weight to alpha_next.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Union

import numpy as np
import torch

from .schedules import F64, FlowSchedule, NoiseSchedule, karras_sigmas, timesteps

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")


@dataclass(frozen=True)
class Plan:
    """One row per model evaluation: t (n,), scale_in (n,) and coeffs (n, 6) = (p, q, a, b, c, e),
    all float64; x_T = init_sigma * N(0, I). Heun evaluates twice per step, the others once."""
    t: torch.Tensor
    scale_in: torch.Tensor
    coeffs: torch.Tensor
    init_sigma: float

    def __len__(self) -> int:
        return self.coeffs.shape[0]

    @property
    def uses_prev(self) -> bool:
        return bool((self.coeffs[:, 4] != 0).any())

    @property
    def noisy(self) -> list[bool]:
        return (self.coeffs[:, 5] != 0).tolist()


def data_prediction(prediction_type: str, alpha: float, sigma: float) -> tuple[float, float]:
    """(p, q) with x0 = p x + q m for x = alpha x0 + sigma eps and model output m."""
    if prediction_type == "epsilon":  # m = eps
        if alpha == 0:
            raise ValueError("fastdiff.sampling: an epsilon prediction cannot give x0 at zero SNR (alpha = 0); "
                             "a zero-terminal-SNR schedule needs v_prediction, sample or flow")
        return 1 / alpha, -sigma / alpha
    if prediction_type == "v_prediction":  # m = v = alpha' eps - sigma' x0 in the unit-variance frame
        r2 = alpha * alpha + sigma * sigma
        return alpha / r2, -sigma / math.sqrt(r2)
    if prediction_type == "sample":  # m = x0
        return 0.0, 1.0
    if prediction_type == "flow":  # m = eps - x0, the rectified-flow velocity
        return 1 / (alpha + sigma), -sigma / (alpha + sigma)
    raise ValueError(f"fastdiff.sampling: unknown prediction type {prediction_type!r}; expected one of "
                     f"{', '.join(PREDICTION_TYPES)}")


def first_order(alpha: float, sigma: float, alpha_next: float, sigma_next: float) -> tuple[float, float]:
    """(a, b) of x_next = alpha_next d + sigma_next eps_hat, eps_hat = (x - alpha d) / sigma: DDIM
    (eta 0), Euler, flow-matching Euler and first-order DPM-Solver++ alike."""
    a = sigma_next / sigma
    return a, alpha_next - a * alpha


def _plan(rows: list, init_sigma: float, name: str) -> Plan:
    table = torch.tensor(rows, dtype=F64).reshape(-1, 8)
    if not torch.isfinite(table).all():
        bad = int((~torch.isfinite(table)).any(1).nonzero()[0])
        raise ValueError(f"fastdiff.sampling.{name}: non-finite coefficients at evaluation {bad}: "
                         f"{table[bad].tolist()} (t, scale_in, p, q, a, b, c, e)")
    return Plan(t=table[:, 0], scale_in=table[:, 1], coeffs=table[:, 2:].contiguous(),
                init_sigma=init_sigma)


def _need(schedule, kind, name):
    if not isinstance(schedule, kind):
        raise TypeError(f"fastdiff.sampling.{name}: needs a {kind.__name__}, got {type(schedule).__name__}")
    return schedule


def _discrete_timesteps(schedule: NoiseSchedule, n: int, spacing: str, steps_offset: int) -> list[int]:
    return [int(t) for t in np.round(timesteps(n, schedule.num_train_timesteps, spacing, steps_offset).numpy())]


def _vp(schedule: NoiseSchedule, t: int) -> tuple[float, float, float]:
    ab = schedule.alphas_cumprod[t].item()
    return ab, math.sqrt(ab), math.sqrt(1 - ab)


@dataclass(frozen=True)
class DDPM:
    """Ho et al. (2020) ancestral sampling; variance 'fixed_small' (posterior) or 'fixed_large' (beta_t)."""
    variance: str = "fixed_small"
    spacing: str = "leading"
    steps_offset: int = 0

    def plan(self, schedule, steps: int, prediction_type: str = "epsilon") -> Plan:
        _need(schedule, NoiseSchedule, "DDPM")
        if self.variance not in ("fixed_small", "fixed_large"):
            raise ValueError(f"fastdiff.sampling.DDPM: variance must be 'fixed_small' or 'fixed_large', "
                             f"got {self.variance!r}")
        ts = _discrete_timesteps(schedule, steps, self.spacing, self.steps_offset)
        rows = []
        for i, t in enumerate(ts):
            ab, alpha, sigma = _vp(schedule, t)
            ab_prev = schedule.alphas_cumprod[ts[i + 1]].item() if i + 1 < len(ts) else 1.0
            beta = 1 - ab / ab_prev
            a = math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)  # the posterior mean of q(x_prev | x, x0)
            b = math.sqrt(ab_prev) * beta / (1 - ab)
            var = max((1 - ab_prev) / (1 - ab) * beta, 1e-20) if self.variance == "fixed_small" else beta
            e = math.sqrt(var) if t > 0 else 0.0
            rows.append((t, 1.0, *data_prediction(prediction_type, alpha, sigma), a, b, 0.0, e))
        return _plan(rows, 1.0, "DDPM")


@dataclass(frozen=True)
class DDIM:
    """Song et al. (2021); eta = 0 is deterministic, eta = 1 matches DDPM's posterior variance.
    The previous timestep is t - T // steps, as in the DDIM paper's code."""
    eta: float = 0.0
    spacing: str = "leading"
    steps_offset: int = 0
    set_alpha_to_one: bool = True

    def plan(self, schedule, steps: int, prediction_type: str = "epsilon") -> Plan:
        _need(schedule, NoiseSchedule, "DDIM")
        stride = schedule.num_train_timesteps // steps
        final = 1.0 if self.set_alpha_to_one else schedule.alphas_cumprod[0].item()
        rows = []
        for t in _discrete_timesteps(schedule, steps, self.spacing, self.steps_offset):
            ab, alpha, sigma = _vp(schedule, t)
            ab_prev = schedule.alphas_cumprod[t - stride].item() if t - stride >= 0 else final
            std = self.eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
            k = math.sqrt(1 - ab_prev - std * std)  # weight of the predicted eps
            rows.append((t, 1.0, *data_prediction(prediction_type, alpha, sigma),
                         k / sigma, math.sqrt(ab_prev) - k * alpha / sigma, 0.0, std))
        return _plan(rows, 1.0, "DDIM")


@dataclass(frozen=True)
class LCM:
    """Latent consistency models (Luo et al., 2023): denoise with the boundary-condition scalings,
    then re-noise to the next timestep. Timesteps are taken from an `original_steps` skip grid."""
    original_steps: int = 50
    timestep_scaling: float = 10.0
    sigma_data: float = 0.5

    def boundary(self, t):
        """(c_skip, c_out) at timestep t (a number or a tensor): the consistency function is
        c_skip x_t + c_out x0_pred, which is x_t itself at t = 0."""
        st = t * self.timestep_scaling
        return self.sigma_data ** 2 / (st * st + self.sigma_data ** 2), st / (st * st + self.sigma_data ** 2) ** 0.5

    def plan(self, schedule, steps: int, prediction_type: str = "epsilon") -> Plan:
        _need(schedule, NoiseSchedule, "LCM")
        k = schedule.num_train_timesteps // self.original_steps
        if not 1 <= steps <= self.original_steps:
            raise ValueError(f"fastdiff.sampling.LCM: steps must be in 1..{self.original_steps}, got {steps}")
        origin = (np.arange(1, self.original_steps + 1) * k - 1)[::-1]
        ts = [int(t) for t in origin[np.floor(np.linspace(0, len(origin), steps, endpoint=False)).astype(np.int64)]]
        rows = []
        for i, t in enumerate(ts):
            ab, alpha, sigma = _vp(schedule, t)
            c_skip, c_out = self.boundary(t)
            p, q = data_prediction(prediction_type, alpha, sigma)
            if i + 1 < len(ts):
                ab_next = schedule.alphas_cumprod[ts[i + 1]].item()
                b, e = math.sqrt(ab_next), math.sqrt(1 - ab_next)
            else:
                b, e = 1.0, 0.0
            rows.append((t, 1.0, c_out * p + c_skip, c_out * q, 0.0, b, 0.0, e))
        return _plan(rows, 1.0, "LCM")


def _sigma_grid(schedule: NoiseSchedule, steps: int, spacing: str, steps_offset: int, karras: bool):
    """Sigma-space samplers: descending sigmas (steps + 1, ending in 0) and the model timesteps."""
    t = timesteps(steps, schedule.num_train_timesteps, spacing, steps_offset)
    sigmas = torch.from_numpy(np.interp(t.numpy(), np.arange(schedule.num_train_timesteps),
                                        schedule.sigmas().numpy()))
    if karras:
        sigmas = karras_sigmas(sigmas[-1].item(), sigmas[0].item(), steps)
        t = schedule.sigma_to_t(sigmas)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).tolist(), t.tolist()


@dataclass(frozen=True)
class _SigmaSampler:
    spacing: str = "linspace"
    steps_offset: int = 0
    karras: bool = False

    def _row(self, schedule, t, sigma, prediction_type, a, b, c=0.0, e=0.0):
        return (t, schedule.input_scale(1.0, sigma), *data_prediction(prediction_type, 1.0, sigma), a, b, c, e)


class Euler(_SigmaSampler):
    """Karras et al. (2022) Euler steps in sigma space (x = x0 + sigma eps)."""

    def plan(self, schedule, steps: int, prediction_type: str = "epsilon") -> Plan:
        _need(schedule, NoiseSchedule, "Euler")
        s, ts = _sigma_grid(schedule, steps, self.spacing, self.steps_offset, self.karras)
        rows = [self._row(schedule, ts[i], s[i], prediction_type, *first_order(1.0, s[i], 1.0, s[i + 1]))
                for i in range(steps)]
        return _plan(rows, math.sqrt(1 + s[0] ** 2), "Euler")


class EulerAncestral(_SigmaSampler):
    """Euler down to sigma_down, then fresh noise of std sigma_up (k-diffusion's ancestral step)."""

    def plan(self, schedule, steps: int, prediction_type: str = "epsilon") -> Plan:
        _need(schedule, NoiseSchedule, "EulerAncestral")
        s, ts = _sigma_grid(schedule, steps, self.spacing, self.steps_offset, self.karras)
        rows = []
        for i in range(steps):
            up = math.sqrt(s[i + 1] ** 2 * (s[i] ** 2 - s[i + 1] ** 2) / s[i] ** 2)
            down = math.sqrt(s[i + 1] ** 2 - up * up)
            rows.append(self._row(schedule, ts[i], s[i], prediction_type, *first_order(1.0, s[i], 1.0, down),
                                  e=up))
        return _plan(rows, math.sqrt(1 + s[0] ** 2), "EulerAncestral")


class Heun(_SigmaSampler):
    """Karras et al. (2022) Algorithm 1: an Euler step, then a correction from a second evaluation
    at the new sigma; the last step, to sigma 0, is plain Euler.

    With x' the Euler result and prev = d1 the first evaluation's data prediction, the corrected
    x_next = x + dt/2 (D1 + D2), D = (x - d)/sigma, reduces to x' + dt / (2 sigma') (d1 - d2)."""

    def plan(self, schedule, steps: int, prediction_type: str = "epsilon") -> Plan:
        _need(schedule, NoiseSchedule, "Heun")
        s, ts = _sigma_grid(schedule, steps, self.spacing, self.steps_offset, self.karras)
        rows = []
        for i in range(steps):
            rows.append(self._row(schedule, ts[i], s[i], prediction_type, *first_order(1.0, s[i], 1.0, s[i + 1])))
            if s[i + 1] > 0:
                k = (s[i + 1] - s[i]) / (2 * s[i + 1])
                rows.append(self._row(schedule, ts[i + 1], s[i + 1], prediction_type, 1.0, -k, k))
        return _plan(rows, math.sqrt(1 + s[0] ** 2), "Heun")


@dataclass(frozen=True)
class DPMSolverPP2M:
    """DPM-Solver++(2M) (Lu et al., 2022), midpoint form, in the VP frame. The first step and the
    last (to sigma 0) are first order. `spacing` as in DPM-Solver: linspace and leading spread
    steps + 1 points and drop t = 0; `karras` spreads the sigmas over the whole training range."""
    karras: bool = False
    spacing: str = "linspace"
    steps_offset: int = 0

    def plan(self, schedule, steps: int, prediction_type: str = "epsilon") -> Plan:
        _need(schedule, NoiseSchedule, "DPMSolverPP2M")
        table = schedule.sigmas()
        if self.karras:
            s = karras_sigmas(table[0].item(), table[-1].item(), steps)
            t = schedule.sigma_to_t(s).round()
        else:
            n = steps if self.spacing == "trailing" else steps + 1
            t = timesteps(n, schedule.num_train_timesteps, self.spacing, self.steps_offset)[:steps].round()
            s = table[t.long()]
        s = s.tolist() + [0.0]
        alpha = [1 / math.sqrt(1 + v * v) for v in s]
        sigma = [v * al for v, al in zip(s, alpha)]
        lam = [math.log(al) - math.log(sg) if sg > 0 else math.inf for al, sg in zip(alpha, sigma)]
        rows = []
        for i in range(steps):
            p, q = data_prediction(prediction_type, alpha[i], sigma[i])
            a, b = first_order(alpha[i], sigma[i], alpha[i + 1], sigma[i + 1])
            c = 0.0
            if 0 < i < steps - 1:  # D1 = (d - prev) / r0 extrapolates the data prediction
                h = lam[i + 1] - lam[i]
                r0 = (lam[i] - lam[i - 1]) / h
                phi = alpha[i + 1] * math.expm1(-h)
                b, c = -phi * (1 + 0.5 / r0), 0.5 * phi / r0
            rows.append((t[i].item(), 1.0, p, q, a, b, c, 0.0))
        return _plan(rows, 1.0, "DPMSolverPP2M")


@dataclass(frozen=True)
class FlowEuler:
    """Flow-matching Euler (SD3, Flux): x_next = x + (s_next - s) v. `stochastic` re-noises instead:
    x_next = (1 - s_next) x0 + s_next noise."""
    stochastic: bool = False

    def plan(self, schedule, steps: int, prediction_type: str = "flow") -> Plan:
        _need(schedule, FlowSchedule, "FlowEuler")
        s = schedule.sigmas(steps).tolist()
        rows = []
        for i in range(steps):
            alpha, sigma, alpha_n, sigma_n = 1 - s[i], s[i], 1 - s[i + 1], s[i + 1]
            if self.stochastic:
                abce = (0.0, alpha_n, 0.0, sigma_n)
            else:
                abce = (*first_order(alpha, sigma, alpha_n, sigma_n), 0.0, 0.0)
            rows.append((s[i] * schedule.num_train_timesteps, schedule.input_scale(alpha, sigma),
                         *data_prediction(prediction_type, alpha, sigma), *abce))
        return _plan(rows, 1.0, "FlowEuler")


SAMPLERS = {
    "ddpm": DDPM, "ddim": DDIM, "euler": Euler, "euler_a": EulerAncestral, "heun": Heun,
    "dpmpp_2m": DPMSolverPP2M, "dpmpp_2m_karras": partial(DPMSolverPP2M, karras=True),
    "lcm": LCM, "flow_euler": FlowEuler,
}

Sampler = Union[DDPM, DDIM, Euler, EulerAncestral, Heun, DPMSolverPP2M, LCM, FlowEuler]


def get_sampler(name: str, **options) -> Sampler:
    """A sampler by its name in SAMPLERS, with options (eta, spacing, karras, ...)."""
    if name not in SAMPLERS:
        raise ValueError(f"fastdiff.sampling: unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](**options)
