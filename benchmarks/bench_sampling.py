"""End-to-end sampling, fastdiff against a plain PyTorch loop over diffusers' scheduler and models
and against torch.compile of that loop, measured in one run:

  sd15    SD1.5 U-Net, DPM-Solver++(2M) 20 steps, CFG 7.5, 512px (64x64 latents), then the VAE decode
  dit50   DiT-XL/2 256px, DDIM 50 steps, CFG 4, then the VAE decode
  dit250  DiT-XL/2 256px, DDPM 250 steps, CFG 4, then the VAE decode

For each: steps per second of the denoising loop, the time of each part of a step (model forward
over the CFG batch, scheduler update with the CFG combine, the rest of the loop), the whole run
with the decode, and the time to the first image from a cold start (a fresh process: imports,
model build, compile or graph capture, sampling and decode). Weights are random (timing does not
depend on them); fp16 on the GPU.

fastdiff runs its pipeline (fused sampler_step, one CUDA graph per step) over the same diffusers
models, and over fastdiff's own models holding the same weights (converted by
fastdiff.models.from_pretrained). Every row needs diffusers.

Each row is saved as soon as it is measured; a row that raises is recorded with its error and the
run goes on (exit status 1 when any failed).
"""
import time

COLD_T0 = time.perf_counter()  # the cold-start clock starts before the heavy imports

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

from common import (Results, compile_static, convert_diffusers, env_info, release_memory, require_gpu,  # noqa: E402
                    share_dit_embedders, time_ms)

IMPLS = ("diffusers eager", "diffusers + torch.compile", "fastdiff pipeline", "fastdiff models + pipeline")
CASES = {  # name: (model, sampler, steps, guidance scale)
    "sd15": ("sd15", "dpmpp_2m", 20, 7.5),
    "dit50": ("dit", "ddim", 50, 4.0),
    "dit250": ("dit", "ddpm", 250, 4.0),
}
BATCH = 1


# --- models and schedulers (diffusers) ---------------------------------------------------------

def build(model: str, device="cuda", dtype=torch.float16, tiny=False):
    """(denoiser module, VAE, latent shape, cond [uncond; cond], diffusers scheduler config)."""
    from diffusers import AutoencoderKL, DiTTransformer2DModel, UNet2DConditionModel
    from diffusers.utils import logging

    logging.set_verbosity_error()  # the fp16 cast notice of randomly initialised models
    torch.manual_seed(0)
    vae_channels = (32, 32) if tiny else (128, 256, 512, 512)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
                        up_block_types=("UpDecoderBlock2D",) * len(vae_channels), block_out_channels=vae_channels,
                        layers_per_block=1 if tiny else 2, latent_channels=4, norm_num_groups=32)
    if model == "sd15":
        net = (UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
               if tiny else UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8))
        size, ctx_dim = (8 if tiny else 64), (32 if tiny else 768)
        cond = torch.randn(2 * BATCH, 77, ctx_dim)
        sched = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing="leading",
                     steps_offset=1)
    else:
        net = (DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=16, num_layers=2, sample_size=8,
                                     out_channels=8) if tiny else DiTTransformer2DModel(out_channels=8))
        share_dit_embedders(net)  # one set of embedder weights, as checkpoints have and fastdiff keeps
        size = 8 if tiny else 32
        cond = torch.tensor([1000] * BATCH + list(range(BATCH)))  # null class 1000 first, then the labels
        sched = dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, timestep_spacing="leading")
    net, vae = net.to(device, dtype).eval(), vae.to(device, dtype).eval()
    cond = cond.to(device, dtype) if cond.is_floating_point() else cond.to(device)
    return net, vae, (BATCH, 4, size, size), cond, sched


def call_model(model: str, net):
    """denoise(x, t, cond) -> the noise prediction, for either model."""
    if model == "sd15":
        return lambda x, t, ctx: net(x, t, encoder_hidden_states=ctx, return_dict=False)[0]
    return lambda x, t, y: net(x, timestep=t.expand(x.shape[0]), class_labels=y, return_dict=False)[0][:, :4]


def diffusers_scheduler(sampler: str, config: dict):
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    cls = {"dpmpp_2m": DPMSolverMultistepScheduler, "ddim": DDIMScheduler, "ddpm": DDPMScheduler}[sampler]
    extra = {} if sampler == "dpmpp_2m" else {"clip_sample": False}
    return cls(**config, **extra)


def fastdiff_plan(sampler: str, config: dict, steps: int):
    from fastdiff.sampling import DDIM, DDPM, DPMSolverPP2M, NoiseSchedule

    schedule = NoiseSchedule.from_betas(config["beta_schedule"], 1000, config["beta_start"], config["beta_end"])
    spacing = dict(spacing=config["timestep_spacing"], steps_offset=config.get("steps_offset", 0))
    return schedule, {"dpmpp_2m": DPMSolverPP2M, "ddim": DDIM, "ddpm": DDPM}[sampler](**spacing).plan(schedule, steps)


def decode(vae, latents):
    return vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]


# --- the loops ---------------------------------------------------------------------------------

def diffusers_loop(denoise, sched, noise, cond, steps, scale, generator):
    """The plain PyTorch loop: a batched forward, the CFG combine, the scheduler's step."""
    sched.set_timesteps(steps, device=noise.device)
    x = noise * sched.init_noise_sigma
    for t in sched.timesteps:
        out = denoise(torch.cat([x, x]), t, cond)
        u, c = out.chunk(2)
        x = sched.step(u + scale * (c - u), t, x, generator=generator, return_dict=False)[0]
    return x


class Runner:
    """One implementation of one case: build it, run it, time its parts."""

    def __init__(self, impl, case, device="cuda", dtype=torch.float16, tiny=False):
        self.impl, self.case = impl, case
        model, self.sampler, self.steps, self.scale = CASES[case]
        net, self.vae, self.shape, self.cond, self.sched_config = build(model, device, dtype, tiny)
        self.device, self.dtype = device, dtype
        if impl == "fastdiff models + pipeline":  # fastdiff's U-Net or DiT and VAE, the same weights
            net, self.vae = convert_diffusers(net, dtype), convert_diffusers(self.vae, dtype)
            self.denoise = net
        else:
            self.denoise = call_model(model, net)
        if impl == "diffusers + torch.compile":
            self.denoise = compile_static(self.denoise)
            self.decode = compile_static(lambda z: decode(self.vae, z))
        elif impl.startswith("fastdiff"):
            from fastdiff.sampling import Pipeline

            self.schedule, self.plan = fastdiff_plan(self.sampler, self.sched_config, self.steps)
            self.pipe = Pipeline(self.denoise, self.schedule, vae=self.vae)
            own_vae = impl == "fastdiff models + pipeline"
            self.decode = self.pipe.decode if own_vae else (lambda z: decode(self.vae, z))
        else:
            self.decode = lambda z: decode(self.vae, z)

    @torch.no_grad()
    def latents(self, seed=0):
        gen = torch.Generator(self.device).manual_seed(seed)
        noise = torch.randn(self.shape, generator=gen, device=self.device, dtype=self.dtype)
        if self.impl.startswith("fastdiff"):
            return self.pipe.run(noise, self.plan, cond=(self.cond,), guidance_scale=self.scale, generator=gen,
                                 progress=False)
        return diffusers_loop(self.denoise, diffusers_scheduler(self.sampler, self.sched_config), noise, self.cond,
                              self.steps, self.scale, gen)

    @torch.no_grad()
    def image(self, seed=0):
        return self.decode(self.latents(seed))

    @torch.no_grad()
    def parts_ms(self):
        """Model forward over the CFG batch and the scheduler update (with the CFG combine), each
        timed alone on the step's inputs."""
        x = torch.randn(self.shape, device=self.device, dtype=self.dtype)
        x2 = torch.cat([x, x])
        if self.impl.startswith("fastdiff"):  # the timestep input as the pipeline feeds it
            t = self.plan.t[1].to(self.device, torch.float32).expand(x2.shape[0])
        else:
            sched = diffusers_scheduler(self.sampler, self.sched_config)
            sched.set_timesteps(self.steps, device=self.device)
            t = sched.timesteps[1]
        out = self.denoise(x2, t, self.cond)  # warm-up: a compiled model specialises on these inputs
        forward = time_ms(lambda x2, t, c: self.denoise(x2, t, c), [(x2, t, self.cond)])
        if self.impl.startswith("fastdiff"):
            from fastdiff import ops

            coeffs = self.plan.coeffs[1].to(self.device, torch.float32)
            prev = torch.zeros_like(x) if self.plan.uses_prev else None
            if out.shape[1] == 2 * x.shape[1]:  # learned sigma: the pipeline steps on the first half, a view
                out = out[:, :x.shape[1]]
            step = time_ms(lambda x, o: ops.sampler_step(x, o, coeffs, guidance_scale=self.scale, prev=prev),
                           [(x, out)])
        else:
            def step(x, o):
                sched._step_index = 1  # a mid-run step (multistep state filled by the warm-up calls)
                u, c = o.chunk(2)
                return sched.step(u + self.scale * (c - u), t, x, return_dict=False)[0]
            for _ in range(2):
                step(x, out)
            step = time_ms(step, [(x, out)])
        return forward, step


def wall_ms(fn, reps=3):
    """Median wall time of whole runs (each seconds long: a few repetitions suffice)."""
    times = []
    for _ in range(reps):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def measure(runner):
    runner.image()  # warm-up: compile or capture, allocator
    loop_ms = wall_ms(runner.latents)
    total_ms = wall_ms(runner.image)
    forward, step = runner.parts_ms()
    evals = len(runner.plan) if runner.impl.startswith("fastdiff") else runner.steps
    return {"case": runner.case, "impl": runner.impl, "steps/s": round(runner.steps / loop_ms * 1e3, 2),
            "loop ms": round(loop_ms, 2), "forward ms": round(forward, 3), "sched step ms": round(step, 4),
            "rest ms/step": round(loop_ms / evals - forward - step, 4), "with decode ms": round(total_ms, 2),
            "cuda graph": runner.pipe.captured_graphs > 0 if runner.impl.startswith("fastdiff") else None}


def cold_start(impl, case, tiny):
    """(seconds from a fresh process's start to its first decoded image, None) or (None, the
    error the process ended with)."""
    cmd = [sys.executable, __file__, "--cold", impl, case] + (["--tiny"] if tiny else [])
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        lines = res.stderr.strip().splitlines()
        return None, f"exit {res.returncode}: {lines[-1] if lines else 'no output'}"
    return round(json.loads(res.stdout.strip().splitlines()[-1])["seconds"], 2), None


def run_case(impl, case, device, dtype, tiny):
    """The row of one implementation of one case (without the comparison and cold start)."""
    runner = Runner(impl, case, device, dtype, tiny)
    return measure(runner)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU: checks the script, times nothing")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-start processes")
    parser.add_argument("--cold", nargs=2, metavar=("IMPL", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device, dtype = ("cpu", torch.float32) if args.tiny else ("cuda", torch.float16)
    if args.cold:
        Runner(args.cold[0], args.cold[1], device, dtype, args.tiny).image()
        if device == "cuda":
            torch.cuda.synchronize()
        print(json.dumps({"seconds": time.perf_counter() - COLD_T0}))
        return 0
    if not args.tiny:
        require_gpu()
    try:
        import diffusers  # noqa: F401
    except ImportError as e:
        print(f"bench_sampling.py: every row runs diffusers' models and schedulers, and diffusers is not "
              f"importable ({e}); nothing measured", file=sys.stderr)
        return 1
    results = Results("sampling", ["case", "impl", "steps/s", "vs eager", "loop ms", "forward ms", "sched step ms",
                                   "rest ms/step", "with decode ms", "cold start s", "cuda graph"])
    for case in args.cases:
        base = None
        for impl in args.impls:
            row = results.call({"case": case, "impl": impl}, run_case, impl, case, device, dtype, args.tiny)
            if row is None:
                continue
            if impl == "diffusers eager":
                base = row["loop ms"]
            row["vs eager"] = round(base / row["loop ms"], 2) if base else None
            results.add(row)
            if not args.no_cold:
                row["cold start s"], error = cold_start(impl, case, args.tiny)
                if error:
                    row["error"] = f"cold start: {error}"
                    print(f"{case}: {impl}: cold start failed ({error})", file=sys.stderr)
                results.save()
            release_memory()
    status = results.finish()
    print(f"on {env_info()['device']}")
    return status


if __name__ == "__main__":
    sys.exit(main())
