"""Noise schedules: betas, alphas_cumprod, timestep spacings, Karras and flow-matching sigmas.

Every table is float64 on the CPU: a run computes its schedule once, on the host, up front.
A VP model is trained on x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps (ab = alphas_cumprod); a
rectified-flow model on x_s = (1 - s) x0 + s eps with s in [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

F64 = torch.float64
BETA_SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")
SPACINGS = ("leading", "trailing", "linspace")


def betas(schedule: str = "scaled_linear", num_train_timesteps: int = 1000, beta_start: float = 0.00085,
          beta_end: float = 0.012, *, max_beta: float = 0.999) -> torch.Tensor:
    """The per-step noise variances beta_t, t = 0 .. num_train_timesteps - 1."""
    n = num_train_timesteps
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=F64)
    if schedule == "scaled_linear":  # latent diffusion: linear in sqrt(beta)
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=F64) ** 2
    if schedule == "cosine":  # improved DDPM: ab(t) = cos^2((t/T + s) / (1 + s) pi/2), s = 0.008
        ab = torch.cos((torch.arange(n + 1, dtype=F64) / n + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - ab[1:] / ab[:-1]).clamp(max=max_beta)
    if schedule == "sigmoid":  # GeoDiff
        return torch.sigmoid(torch.linspace(-6, 6, n, dtype=F64)) * (beta_end - beta_start) + beta_start
    raise ValueError(f"fastdiff.sampling.schedules: unknown beta schedule {schedule!r}; expected one of "
                     f"{', '.join(BETA_SCHEDULES)}")


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    return torch.cumprod(1 - betas.to(F64), 0)


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(ab) so the last timestep has zero SNR and the first keeps its value
    (Lin et al., "Common diffusion noise schedules and sample steps are flawed", Algorithm 1)."""
    s = alphas_cumprod.to(F64).sqrt()
    first, last = s[0].item(), s[-1].item()
    return ((s - last) * (first / (first - last))) ** 2


def timesteps(num_steps: int, num_train_timesteps: int = 1000, spacing: str = "leading",
              steps_offset: int = 0) -> torch.Tensor:
    """Descending float64 timesteps of a num_steps run (Lin et al., Table 2). `linspace` gives
    fractional values: discrete samplers round them, sigma-space samplers interpolate."""
    n, big_t = num_steps, num_train_timesteps
    if not 1 <= n <= big_t:
        raise ValueError(f"fastdiff.sampling.schedules: num_steps must be in 1..{big_t}, got {n}")
    i = np.arange(n)
    if spacing == "leading":
        t = (i * (big_t // n)).astype(np.float64)[::-1] + steps_offset
    elif spacing == "trailing":
        t = np.round(big_t - i * (big_t / n)) - 1
    elif spacing == "linspace":
        t = np.linspace(0, big_t - 1, n)[::-1]
    else:
        raise ValueError(f"fastdiff.sampling.schedules: unknown timestep spacing {spacing!r}; expected one "
                         f"of {', '.join(SPACINGS)}")
    return torch.from_numpy(t.copy())


def karras_sigmas(sigma_min: float, sigma_max: float, num_steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: descending sigmas evenly spaced in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, num_steps, dtype=F64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's static timestep shift: s' = shift s / (1 + (shift - 1) s)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def time_shift(sigmas: torch.Tensor, mu: float) -> torch.Tensor:
    """Flux's resolution-dependent shift: s' = e^mu / (e^mu + (1/s - 1))."""
    return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))


def flux_mu(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5,
            max_shift: float = 1.15) -> float:
    """Flux's mu, linear in the number of image tokens."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return base_shift + slope * (image_seq_len - base_seq_len)


@dataclass(frozen=True)
class NoiseSchedule:
    """The forward process of a VP model, given by its training table alphas_cumprod (float64, (T,))."""
    alphas_cumprod: torch.Tensor

    @classmethod
    def from_betas(cls, schedule: str = "scaled_linear", num_train_timesteps: int = 1000,
                   beta_start: float = 0.00085, beta_end: float = 0.012, *,
                   zero_terminal_snr: bool = False) -> "NoiseSchedule":
        ab = alphas_cumprod(betas(schedule, num_train_timesteps, beta_start, beta_end))
        return cls(rescale_zero_terminal_snr(ab) if zero_terminal_snr else ab)

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    def sigmas(self) -> torch.Tensor:
        """sigma_t = sqrt((1 - ab_t) / ab_t), the noise level of x_t / sqrt(ab_t). ab is floored at
        2^-24 so a zero-terminal-SNR schedule keeps a finite sigma_max."""
        ab = self.alphas_cumprod.clamp(min=2.0 ** -24)
        return ((1 - ab) / ab).sqrt()

    def sigma_to_t(self, sigmas: torch.Tensor) -> torch.Tensor:
        """Fractional timesteps of the given sigmas, linear in log sigma between training steps."""
        log_table = self.sigmas().log().numpy()
        log_s = np.log(np.maximum(np.asarray(sigmas, dtype=np.float64), 1e-10))
        return torch.from_numpy(np.interp(log_s, log_table, np.arange(len(log_table), dtype=np.float64)))

    def input_scale(self, alpha, sigma):
        """The model sees x / sqrt(alpha^2 + sigma^2): its own x_t for x = alpha x0 + sigma eps."""
        return 1 / math.sqrt(alpha * alpha + sigma * sigma)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A draw of q(x_t | x_0) in closed form; t holds one integer timestep per batch item."""
        ab = self.alphas_cumprod.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
        return (ab.sqrt() * x0.to(F64) + (1 - ab).sqrt() * noise.to(F64)).to(x0.dtype)


@dataclass(frozen=True)
class FlowSchedule:
    """A rectified-flow model, x_s = (1 - s) x0 + s eps, fed the timestep s * num_train_timesteps.

    shift: SD3's static shift; mu: Flux's dynamic shift (see flux_mu), used instead when given.
    steps_grid: the unshifted grid ends at 1/steps, as FluxPipeline sets it, rather than at the
    smallest training sigma, as the scheduler does by itself.
    """
    num_train_timesteps: int = 1000
    shift: float = 1.0
    mu: Optional[float] = None
    steps_grid: bool = False

    @classmethod
    def sd3(cls, shift: float = 3.0) -> "FlowSchedule":
        """SD3's static shift (3.0 in the released scheduler configs)."""
        return cls(shift=shift)

    @classmethod
    def flux(cls, image_seq_len: int) -> "FlowSchedule":
        """FluxPipeline's schedule for an image of image_seq_len packed tokens ((H/16) (W/16))."""
        return cls(mu=flux_mu(image_seq_len), steps_grid=True)

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """num_steps + 1 descending sigmas ending in 0. The grid runs from 1 to the model's
        smallest training sigma (1/T, shifted when the shift is static), or to 1/num_steps with
        steps_grid, before it is shifted."""
        lowest = torch.tensor([1 / (num_steps if self.steps_grid else self.num_train_timesteps)], dtype=F64)
        if self.mu is None and not self.steps_grid:
            lowest = shift_sigmas(lowest, self.shift)
        grid = torch.linspace(1.0, lowest.item(), num_steps, dtype=F64)
        s = time_shift(grid, self.mu) if self.mu is not None else shift_sigmas(grid, self.shift)
        return torch.cat([s, s.new_zeros(1)])

    def input_scale(self, alpha, sigma):
        """The model sees x / (alpha + sigma): its own x_s for x = alpha x0 + sigma eps."""
        return 1 / (alpha + sigma)
