"""Schedules against their closed forms and diffusers' tables; the forward process q(x_t | x_0)
in closed form against iterating the per-step chain."""
import math

import pytest
import torch

from fastdiff.sampling import schedules as S

F64 = torch.float64


def test_beta_schedules_closed_forms():
    t = torch.arange(1000, dtype=F64)
    lin = S.betas("linear", 1000, 1e-4, 0.02)
    assert torch.allclose(lin, 1e-4 + t / 999 * (0.02 - 1e-4), rtol=1e-13, atol=0)
    scaled = S.betas("scaled_linear", 1000, 0.00085, 0.012)
    assert torch.allclose(scaled.sqrt(), 0.00085 ** 0.5 + t / 999 * (0.012 ** 0.5 - 0.00085 ** 0.5), rtol=1e-13)
    sig = S.betas("sigmoid", 1000, 1e-4, 0.02)
    assert torch.allclose(sig, 1e-4 + 0.0199 / (1 + torch.exp(-(-6 + 12 * t / 999))), rtol=1e-13)
    # cosine: the cumulative product telescopes back to the ratio of cos^2, until beta is clipped
    ab = S.alphas_cumprod(S.betas("cosine", 1000))
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    want = torch.tensor([f((i + 1) / 1000) / f(0) for i in range(1000)], dtype=F64)
    assert torch.allclose(ab[:990], want[:990], rtol=1e-11)
    assert S.betas("cosine", 1000).max().item() == 0.999


@pytest.mark.parametrize("name,diffusers_name", [("linear", "linear"), ("scaled_linear", "scaled_linear"),
                                                 ("cosine", "squaredcos_cap_v2"), ("sigmoid", "sigmoid")])
def test_betas_match_diffusers(name, diffusers_name):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(beta_schedule=diffusers_name, beta_start=0.00085, beta_end=0.012)
    sched = S.NoiseSchedule.from_betas(name, 1000, 0.00085, 0.012)
    assert torch.allclose(sched.alphas_cumprod, ref.alphas_cumprod.double(), rtol=2e-5, atol=0)  # diffusers: fp32


def test_zero_terminal_snr():
    ab = S.NoiseSchedule.from_betas("scaled_linear").alphas_cumprod
    z = S.rescale_zero_terminal_snr(ab)
    assert z[-1].item() == 0 and abs(z[0].item() - ab[0].item()) < 1e-15
    # sqrt(ab) is mapped by one affine function
    slope = (z.sqrt() - z.sqrt()[-1])[:-1] / (ab.sqrt() - ab.sqrt()[-1])[:-1]
    assert torch.allclose(slope, slope[0].expand_as(slope), rtol=1e-10)
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                  rescale_betas_zero_snr=True)
    assert torch.allclose(z, ref.alphas_cumprod.double(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("n", [1, 7, 10, 50, 999])
def test_spacings(n):
    lead = S.timesteps(n, 1000, "leading", steps_offset=1)
    assert lead.tolist() == [float(i * (1000 // n) + 1) for i in reversed(range(n))]
    trail = S.timesteps(n, 1000, "trailing")
    assert trail[0].item() == 999 and len(trail) == n and (trail.diff() < 0).all()
    assert torch.allclose(trail + 1, (1000 - torch.arange(n, dtype=F64) * 1000 / n).round())
    lin = S.timesteps(n, 1000, "linspace")
    assert lin[0].item() == (999 if n > 1 else 0) and lin[-1].item() == 0
    diffusers = pytest.importorskip("diffusers")
    for spacing in ("leading", "trailing", "linspace"):
        ref = diffusers.DDPMScheduler(timestep_spacing=spacing)
        ref.set_timesteps(n)
        assert S.timesteps(n, 1000, spacing).round().long().tolist() == ref.timesteps.tolist()


def test_karras_sigmas():
    s = S.karras_sigmas(0.03, 14.6, 11, rho=7.0)
    assert abs(s[0].item() - 14.6) < 1e-12 and abs(s[-1].item() - 0.03) < 1e-14
    root = s ** (1 / 7)
    assert torch.allclose(root.diff(), root.diff()[0].expand(10), rtol=1e-10)


def test_sigma_to_t_inverts_the_table():
    sched = S.NoiseSchedule.from_betas("scaled_linear")
    sig = sched.sigmas()
    assert torch.allclose(sched.sigma_to_t(sig[[0, 17, 500, 999]]), torch.tensor([0, 17, 500, 999.0], dtype=F64))
    mid = (sig[10].log() + sig[11].log()).div(2).exp()
    assert abs(sched.sigma_to_t(mid.reshape(1)).item() - 10.5) < 1e-9


def test_flow_sigmas():
    s = torch.rand(100, dtype=F64) * 0.98 + 0.01
    shifted = S.shift_sigmas(s, 3.0)
    # the shift is the change of SNR by a constant factor: (1 - s') / s' = ((1 - s) / s) / shift
    assert torch.allclose((1 - shifted) / shifted, (1 - s) / s / 3.0, rtol=1e-12)
    mu = S.flux_mu(1024)
    assert abs(mu - (0.5 + 0.65 * 768 / 3840)) < 1e-12
    assert torch.allclose((1 - S.time_shift(s, mu)) / S.time_shift(s, mu), (1 - s) / s / math.exp(mu), rtol=1e-12)
    grid = S.FlowSchedule(shift=3.0).sigmas(8)
    assert grid[0].item() == 1.0 and grid[-1].item() == 0.0 and (grid.diff() < 0).all() and len(grid) == 9


def test_forward_process_closed_form_matches_the_chain():
    """x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps_t, iterated, is N(sqrt(ab_t) x0, 1 - ab_t)."""
    sched = S.NoiseSchedule.from_betas("linear", 1000, 1e-4, 0.02)
    beta = 1 - sched.alphas_cumprod / torch.cat([torch.ones(1, dtype=F64), sched.alphas_cumprod[:-1]])
    # exact recursion of the mean coefficient and the variance
    mean, var = 1.0, 0.0
    for t in range(1000):
        mean, var = mean * math.sqrt(1 - beta[t].item()), (1 - beta[t].item()) * var + beta[t].item()
        if t in (0, 99, 500, 999):
            ab = sched.alphas_cumprod[t].item()
            assert abs(mean - math.sqrt(ab)) < 1e-12 and abs(var - (1 - ab)) < 1e-12
    # sampled: the chain's and the closed form's draws agree in distribution
    x0 = torch.randn(20000, dtype=F64) + 0.5
    x = x0.clone()
    for t in range(300):
        x = (1 - beta[t]).sqrt() * x + beta[t].sqrt() * torch.randn_like(x)
    direct = sched.add_noise(x0, torch.randn_like(x0), torch.full((20000,), 299))
    ab = sched.alphas_cumprod[299].item()
    for draw in (x, direct):
        resid = draw - math.sqrt(ab) * x0
        assert abs(resid.mean().item()) < 5 * math.sqrt((1 - ab) / 20000)
        assert abs(resid.var().item() / (1 - ab) - 1) < 5 * math.sqrt(2 / 20000)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample", "flow"])
@pytest.mark.parametrize("frame", ["vp", "sigma", "flow"])
def test_data_prediction_recovers_x0(prediction, frame):
    """d = p x + q m is x0 for x = alpha x0 + sigma eps in every frame and prediction type."""
    from fastdiff.sampling import data_prediction

    x0, eps = torch.randn(50, dtype=F64) + 0.5, torch.randn(50, dtype=F64)
    for u in torch.rand(5, dtype=F64) * 0.98 + 0.01:
        alpha, sigma = {"vp": (u.sqrt(), (1 - u).sqrt()), "sigma": (1.0, 20 * u), "flow": (1 - u, u)}[frame]
        alpha, sigma = float(alpha), float(sigma)
        x = alpha * x0 + sigma * eps
        r = math.sqrt(alpha ** 2 + sigma ** 2)
        m = {"epsilon": eps, "v_prediction": (alpha * eps - sigma * x0) / r, "sample": x0, "flow": eps - x0}[prediction]
        p, q = data_prediction(prediction, alpha, sigma)
        assert torch.allclose(p * x + q * m, x0, rtol=0, atol=1e-12)
