"""The sampling pipeline with small stand-in models: CFG batching, seeding, callbacks, decoding,
errors, no host reads inside the loop, learned-sigma outputs; on a GPU, the CUDA-graphed loop
against the eager one and without a host sync."""
import types
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from fastdiff import reference
from fastdiff.sampling import (DDIM, DPMSolverPP2M, EulerAncestral, FlowEuler, Heun, NoiseSchedule, Pipeline,
                               get_sampler)
from fastdiff.sampling.images import save_image, to_pil

SAMPLER_NAMES = ["ddpm", "ddim", "euler", "euler_a", "heun", "dpmpp_2m", "dpmpp_2m_karras", "lcm"]


class TinyUNet(nn.Module):
    """A stand-in denoiser with the UNet call signature (x, t, context)."""

    def __init__(self, channels=4, ctx_dim=8):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.temb = nn.Linear(1, channels)
        self.ctx = nn.Linear(ctx_dim, channels)
        self.calls = []

    def forward(self, x, t, context):
        self.calls.append(x.shape[0])
        emb = self.temb(t[:, None].to(x.dtype) / 1000) + self.ctx(context.mean(1))
        return torch.tanh(self.conv(x)) + emb[:, :, None, None]


class TinyVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = types.SimpleNamespace(scaling_factor=0.18215)
        self.up = nn.Conv2d(4, 3, 1)

    def decode(self, z):
        return torch.tanh(nn.functional.interpolate(self.up(z), scale_factor=2))


def _setup(n=2, dtype=torch.float32, device="cpu"):
    model = TinyUNet().to(device, dtype)
    ctx = torch.randn(2 * n, 5, 8, device=device, dtype=dtype) + 0.5  # [uncond; cond]
    return model, ctx


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_cfg_batched_matches_separate_passes(name):
    """One forward over [uncond; cond] plus the fused step equals two forwards, the CFG combine and
    the step written out, evaluation by evaluation."""
    model, ctx = _setup()
    schedule = NoiseSchedule.from_betas()
    plan = get_sampler(name).plan(schedule, 5, "epsilon")
    noise = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    pipe = Pipeline(model.double(), schedule)
    ctx = ctx.double()
    got = pipe.run(noise, plan, cond=(ctx,), guidance_scale=4.5, generator=torch.Generator().manual_seed(1),
                   progress=False)
    assert model.calls == [4] * len(plan)

    gen, x, prev = torch.Generator().manual_seed(1), noise * plan.init_sigma, torch.zeros_like(noise)
    for i in range(len(plan)):
        t = plan.t[i].expand(2)
        x_in = plan.scale_in[i] * x
        u, c = model(x_in, t, ctx[:2]), model(x_in, t, ctx[2:])
        m = reference.cfg_combine(u, c, 4.5)
        eps = torch.randn(x.shape, generator=gen, dtype=x.dtype) if plan.coeffs[i, 5] != 0 else None
        x, prev = reference.sampler_step(x, m, plan.coeffs[i].tolist(), prev=prev, noise=eps)
    assert torch.allclose(got, x, rtol=1e-12, atol=1e-12)


def test_seeded_run_is_reproducible():
    model, ctx = _setup()
    pipe = Pipeline(model, NoiseSchedule.from_betas())
    run = lambda seed: pipe.sample((2, 4, 8, 8), EulerAncestral(), 6, cond=(ctx,), guidance_scale=3.0,  # noqa: E731
                                   seed=seed, progress=False)
    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_callback_progress_and_heun_evaluations(capsys):
    model, ctx = _setup(n=1)
    seen = []
    pipe = Pipeline(model, NoiseSchedule.from_betas())
    pipe.sample((1, 4, 8, 8), Heun(), 4, cond=(ctx,), guidance_scale=2.0, progress=True,
                callback=lambda i, x: seen.append((i, tuple(x.shape))))
    assert seen == [(i, (1, 4, 8, 8)) for i in range(7)]  # Heun: two evaluations per step, one on the last


def test_decode_and_png(tmp_path):
    from PIL import Image

    model, ctx = _setup(n=3)
    vae = TinyVAE()
    pipe = Pipeline(model, NoiseSchedule.from_betas(), vae=vae)
    latents = pipe.sample((3, 4, 8, 8), DPMSolverPP2M(karras=True), 5, cond=(ctx,), guidance_scale=7.5,
                          progress=False)
    images = pipe.decode(latents)
    assert torch.allclose(images, vae.decode(latents / 0.18215))
    pils = to_pil(images)
    want = ((images[1].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
    assert pils[1].size == (16, 16) and torch.equal(torch.from_numpy(np.array(pils[1])), want)
    path = save_image(images, tmp_path / "out" / "grid.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (32, 32)  # 3 images in a 2 x 2 grid


def test_errors():
    model, ctx = _setup()
    schedule = NoiseSchedule.from_betas()
    pipe = Pipeline(model, schedule)
    with pytest.raises(ValueError, match=r"cond\[0\] must have 4 rows"):
        pipe.sample((2, 4, 8, 8), DDIM(), 3, cond=(ctx[:2],), guidance_scale=2.0, progress=False)
    with pytest.raises(TypeError, match="FlowEuler: needs a FlowSchedule"):
        FlowEuler().plan(schedule, 4)
    zero_snr = NoiseSchedule.from_betas(zero_terminal_snr=True)
    with pytest.raises(ValueError, match="epsilon prediction cannot give x0 at zero SNR"):
        DDIM(spacing="trailing").plan(zero_snr, 4, "epsilon")
    with pytest.raises(ValueError, match="unknown sampler 'dpm'"):
        get_sampler("dpm")


# --- GPU: the graphed loop ----------------------------------------------------------------------

def _gpu_pair(name, dtype=torch.float32):
    model, ctx = _setup(dtype=dtype, device="cuda")
    schedule = NoiseSchedule.from_betas()
    graphed, eager = Pipeline(model, schedule), Pipeline(model, schedule, cuda_graph=False)
    kw = dict(cond=(ctx,), guidance_scale=5.0, seed=3, device="cuda", dtype=dtype, progress=False)
    return model, graphed, eager, get_sampler(name), kw


@pytest.mark.gpu
@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_graphed_matches_eager(name):
    model, graphed, eager, sampler, kw = _gpu_pair(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture would warn and run eagerly
        got = graphed.sample((2, 4, 16, 16), sampler, 8, **kw)
    want = eager.sample((2, 4, 16, 16), sampler, 8, **kw)
    assert graphed.captured_graphs == 1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # replayed from the same buffers: a second run reuses the graph and is deterministic
    assert torch.equal(graphed.sample((2, 4, 16, 16), sampler, 8, **kw), got)


@pytest.mark.gpu
def test_graph_sees_in_place_weight_updates():
    model, graphed, eager, sampler, kw = _gpu_pair("dpmpp_2m")
    graphed.sample((2, 4, 16, 16), sampler, 6, **kw)
    (step,) = graphed._steps.values()
    graph = step.graph
    with torch.no_grad():  # a merged LoRA: W += B A, in place
        lora_b, lora_a = torch.randn(4, 2, device="cuda"), torch.randn(2, 36, device="cuda")
        model.conv.weight.add_(0.05 * (lora_b @ lora_a).view(4, 4, 3, 3))
    got = graphed.sample((2, 4, 16, 16), sampler, 6, **kw)
    assert step.graph is graph
    torch.testing.assert_close(got, eager.sample((2, 4, 16, 16), sampler, 6, **kw), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_graphed_loop_never_syncs():
    model, graphed, _, sampler, kw = _gpu_pair("euler_a")
    graphed.sample((2, 4, 16, 16), sampler, 4, **kw)  # capture (warm-up may sync)
    torch.cuda.set_sync_debug_mode("error")
    try:
        graphed.sample((2, 4, 16, 16), sampler, 4, **kw)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
def test_capture_failure_falls_back_to_eager():
    model, graphed, eager, sampler, kw = _gpu_pair("ddim")
    forward = model.forward
    model.forward = lambda x, t, c: forward(x, t, c) * (1 + 0 * float(x.sum().item()))  # host sync: uncapturable
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed"):
        got = graphed.sample((2, 4, 16, 16), sampler, 5, **kw)
    assert graphed.captured_graphs == 0
    torch.testing.assert_close(got, eager.sample((2, 4, 16, 16), sampler, 5, **kw), rtol=1e-6, atol=1e-6)


# --- no host reads in the loop (the CPU analogue of the GPU sync test) ----------------------------

# Ops that read a tensor's values back to the host (on a GPU: a sync), or make a tensor from host
# data (on a GPU: a host-to-device copy). The profiler records them wherever they run, inside
# other ops (a boolean mask's index -> nonzero) and inside fastdiff's custom ops included.
HOST_READ_OPS = {"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::equal", "aten::allclose",
                 "aten::nonzero", "aten::masked_select", "aten::_unique2", "aten::unique_consecutive",
                 "aten::unique_dim", "aten::bincount", "aten::lift_fresh"}
# Python-level reads that dispatch nothing on a CPU tensor (on a GPU tensor: a device-to-host copy).
HOST_READ_METHODS = ("tolist", "numpy", "__array__", "cpu")


def _host_reads_after_first_step(run):
    """Runs run(callback) and returns the host reads after the first evaluation, as names, with
    the number of steps the profiler recorded aten ops in (proof it watched the loop)."""
    from torch.profiler import ProfilerActivity, profile

    prof, seen, watching, steps_seen = profile(activities=[ProfilerActivity.CPU]), [], [False], []

    def watched(name, method):
        def wrapper(self, *args, **kwargs):
            if watching[0]:
                seen.append(f"Tensor.{name}")
            return method(self, *args, **kwargs)
        return wrapper
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READ_METHODS}
    own = {name for name in HOST_READ_METHODS if name in vars(torch.Tensor)}  # the others live on TensorBase

    def callback(i, x):
        if i == 0:
            prof.start()
            watching[0] = True
        else:
            steps_seen.append(i)
    try:
        for name, method in originals.items():
            setattr(torch.Tensor, name, watched(name, method))
        run(callback)
    finally:
        started, watching[0] = watching[0], False
        for name, method in originals.items():
            if name in own:
                setattr(torch.Tensor, name, method)
            else:
                delattr(torch.Tensor, name)
        if started:
            prof.stop()
    assert started, "the run made no evaluation"
    events = [e.name for e in prof.events()]
    recorded = any(name.startswith("aten::") for name in events)
    return seen + [name for name in events if name in HOST_READ_OPS], len(steps_seen) if recorded else 0


def _fastdiff_model(kind):
    """A tiny fastdiff DiT (learned sigma) or U-Net with its guided cond: the real model code."""
    from fastdiff.models import DiT, DiTConfig, UNet, UNetConfig

    if kind == "dit":
        model = DiT(DiTConfig.tiny(hidden_size=32, depth=1, num_heads=2, learn_sigma=True)).eval()
        return model, (torch.tensor([10, 10, 3, 7]),), (2, 4, 8, 8)
    model = UNet(UNetConfig.tiny(block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=8,
                                 cross_attention_dim=16)).eval()
    return model, (torch.randn(4, 3, 16) + 0.5,), (2, 4, 8, 8)


@pytest.mark.parametrize("kind, sampler", [("dit", "euler_a"), ("unet", "dpmpp_2m"), ("dit", "ddpm")])
def test_loop_reads_nothing_back(kind, sampler):
    """After the first evaluation (where a GPU run may capture its graph), the loop over a real
    fastdiff model reads no tensor value on the host and makes no tensor from host data."""
    model, cond, shape = _fastdiff_model(kind)
    pipe = Pipeline(model, NoiseSchedule.from_betas())
    steps = 3
    reads, step_calls = _host_reads_after_first_step(lambda cb: pipe.sample(
        shape, get_sampler(sampler), steps, cond=cond, guidance_scale=4.0, callback=cb, progress=False))
    assert step_calls == steps - 1, "the profiler did not see the loop"
    assert reads == []


def _reads_item(out):
    return out * (1 + 0 * out.sum().item())


def _reads_tolist(out):
    return out + 0 * out.mean().tolist()


def _branches_on_a_value(out):
    return out if bool((out > 1e9).any()) is False else -out


def _makes_a_host_tensor(out):
    return out + torch.tensor(0.0, dtype=out.dtype)


def _gathers_by_a_mask(out):
    return out + 0 * out[out > 1e9].sum()  # the number of selected elements is read back


@pytest.mark.parametrize("read", [_reads_item, _reads_tolist, _branches_on_a_value, _makes_a_host_tensor,
                                  _gathers_by_a_mask])
def test_host_read_detector_catches_reads(read):
    """The check above fails on a loop that reads back: each injected read is reported."""
    model, cond, shape = _fastdiff_model("dit")
    pipe = Pipeline(lambda x, t, y: read(model(x, t, y)), NoiseSchedule.from_betas())
    reads, _ = _host_reads_after_first_step(lambda cb: pipe.sample(
        shape, get_sampler("ddim"), 3, cond=cond, guidance_scale=4.0, callback=cb, progress=False))
    assert len(reads) >= 2, reads  # once in each of the two evaluations watched


@torch.library.custom_op("fastdiff_tests::scaled_by_its_mean", mutates_args=())
def _scaled_by_its_mean(x: torch.Tensor) -> torch.Tensor:
    return x * float(x.mean())  # a read behind a torch.library boundary, as in fastdiff's own ops


@_scaled_by_its_mean.register_fake
def _(x):
    return torch.empty_like(x)


def test_host_read_detector_sees_inside_custom_ops():
    """A read inside a custom op (fastdiff's ops are torch.library custom ops) is reported too."""
    model, cond, shape = _fastdiff_model("dit")
    pipe = Pipeline(lambda x, t, y: _scaled_by_its_mean(model(x, t, y)), NoiseSchedule.from_betas())
    reads, step_calls = _host_reads_after_first_step(lambda cb: pipe.sample(
        shape, get_sampler("ddim"), 3, cond=cond, guidance_scale=4.0, callback=cb, progress=False))
    assert step_calls == 2 and reads.count("aten::_local_scalar_dense") == 2


# --- learned sigma ----------------------------------------------------------------------------------

def _learned_sigma_dit(dtype=torch.float64):
    from fastdiff.models import DiT, DiTConfig

    dit = DiT(DiTConfig.tiny(hidden_size=32, depth=1, num_heads=2, learn_sigma=True)).to(dtype).eval()
    assert dit.config.out_channels == 2 * dit.config.in_channels == 8
    return dit


@pytest.mark.parametrize("guidance", [None, 4.0])
@pytest.mark.parametrize("name", ["ddim", "euler_a", "dpmpp_2m"])
def test_learned_sigma_output_samples_its_first_half(name, guidance):
    """A DiT with learned sigma (2C output channels) sampled through the Pipeline directly equals the
    same run over a denoiser that keeps the first C channels, and differs from one keeping the
    second half."""
    dit = _learned_sigma_dit()
    y = torch.randint(0, 10, (2,))
    cond = (torch.cat([torch.full_like(y, 10), y]) if guidance else y,)
    schedule = NoiseSchedule.from_betas("linear", 1000, 1e-4, 0.02)
    seed = int(torch.randint(0, 2 ** 31, ()))

    def run(denoise):
        return Pipeline(denoise, schedule).sample((2, 4, 8, 8), get_sampler(name), 4, cond=cond,
                                                  guidance_scale=guidance, seed=seed, dtype=torch.float64,
                                                  progress=False)

    def half(k):
        return lambda x, t, labels: dit(x, t, labels)[:, 4 * k:4 * (k + 1)].contiguous()
    got, first, second = run(dit), run(half(0)), run(half(1))
    torch.testing.assert_close(got, first, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(got, second, rtol=1e-3, atol=1e-3)


def test_from_dit_leaves_the_slice_to_the_pipeline():
    from fastdiff.sampling.model import SamplingModel

    dit = _learned_sigma_dit(torch.float32)
    bundle = SamplingModel.from_dit(dit)
    assert bundle.denoise is dit and bundle.latent_shape == (4, 8, 8)
    cond = bundle.condition([3, 5], True)
    got = Pipeline(bundle.denoise, bundle.schedule).sample((2, *bundle.latent_shape), DDIM(), 3, cond=cond,
                                                           guidance_scale=4.0, progress=False)
    want = Pipeline(lambda x, t, y: dit(x, t, y)[:, :4].contiguous(), bundle.schedule).sample(
        (2, *bundle.latent_shape), DDIM(), 3, cond=cond, guidance_scale=4.0, progress=False)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_other_channel_counts_are_refused():
    model = lambda x, t, y: torch.cat([x, x, x], dim=1)  # noqa: E731  3C channels: not a learned sigma
    pipe = Pipeline(model, NoiseSchedule.from_betas())
    with pytest.raises(ValueError, match=r"model_out has shape \(1, 12, 4, 4\)"):
        pipe.sample((1, 4, 4, 4), DDIM(), 2, cond=(torch.zeros(1),), progress=False)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_graphed_learned_sigma_dit_never_syncs(dtype):
    """The fastdiff DiT with learned sigma in the graphed loop: no host sync once captured, and the
    graphed run equals the eager one."""
    dit = _learned_sigma_dit(dtype).cuda()
    schedule = NoiseSchedule.from_betas("linear", 1000, 1e-4, 0.02)
    graphed, eager = Pipeline(dit, schedule), Pipeline(dit, schedule, cuda_graph=False)
    kw = dict(cond=(torch.tensor([10, 10, 3, 7], device="cuda"),), guidance_scale=4.0, seed=3, device="cuda",
              dtype=dtype, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture would warn and run eagerly
        graphed.sample((2, 4, 8, 8), EulerAncestral(), 4, **kw)  # capture (warm-up may sync)
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = graphed.sample((2, 4, 8, 8), EulerAncestral(), 4, **kw)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert graphed.captured_graphs == 1
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(got, eager.sample((2, 4, 8, 8), EulerAncestral(), 4, **kw), rtol=tol, atol=tol)
