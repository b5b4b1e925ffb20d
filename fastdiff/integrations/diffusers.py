"""fastdiff.accelerate(pipe): a diffusers pipeline that samples on fastdiff, in place.

The pipeline keeps its class (a subclass that only overrides __call__), its modules and its
parameters: the fastdiff U-Net / DiT and VAE are built on the modules' own tensors (shared.py),
so LoRA merging, load_state_dict and diffusers' own loop keep working on them. A call the fused
path serves (calls.py: the scheduler maps to a fastdiff sampler, no option it does not implement)
runs fastdiff's model, CFG and sampler_step in one pass per step, captured in a CUDA graph per
shape on CUDA; any other call runs diffusers' __call__ unchanged, after one warning line naming
what was not accelerated. explain(pipe) says what runs where."""
from __future__ import annotations

import contextlib
import inspect
import warnings
from typing import Optional

import torch

from .. import backends
from ..sampling import Pipeline
from . import calls, img2img, shared
from .schedulers import NotAccelerated, sampler_for

_BUILD = {"unet": shared.share_unet, "transformer": lambda m, _: shared.share_dit(m),
          "vae": lambda m, _: shared.share_vae(m)}
_CLASSES: dict = {}

_SD_FALLS_BACK = ", ".join(calls.SD_UNSERVED) + ", guidance_rescale > 0, the deprecated callback, a list of " \
    "generators, unfused LoRA layers, offloading hooks"
# pipeline class name: (the accelerated call's prepare, the attribute holding its denoiser, what
# explain() says sends a call to diffusers' loop)
PIPELINES = {
    "StableDiffusionPipeline": (calls.prepare_sd, "unet", _SD_FALLS_BACK),
    "StableDiffusionImg2ImgPipeline": (img2img.prepare_sd_img2img, "unet", _SD_FALLS_BACK),
    "StableDiffusionXLPipeline": (calls.prepare_sdxl, "unet", _SD_FALLS_BACK + ", denoising_end"),
    "StableDiffusionXLImg2ImgPipeline": (img2img.prepare_sdxl_img2img, "unet",
                                         _SD_FALLS_BACK + ", denoising_start, denoising_end"),
    "DiTPipeline": (calls.prepare_dit, "transformer", "schedulers that scale the model input (Euler, Heun), a "
                    "stochastic sampler under guidance, a list of generators"),
}


class Acceleration:
    """What accelerate() attached to one pipeline: the settings, the fastdiff models sharing the
    pipeline's modules (rebuilt when the modules' parameters change), a fastdiff Pipeline per
    denoiser (its buffers and CUDA graphs) and what the last call ran."""

    def __init__(self, pipe, base: type, backend: str, cuda_graphs: bool):
        self.pipe, self.base, self.backend, self.cuda_graphs = pipe, base, backend, cuda_graphs
        self.shared: dict = {}
        self.failed: dict = {}  # slot -> (the module's fingerprint when it failed, why)
        self.pipelines: dict = {}
        self.last: Optional[str] = None

    def model(self, slot: str, prediction_type: Optional[str] = None):
        """The fastdiff model on pipe.<slot>'s parameters; raises NotAccelerated."""
        module = getattr(self.pipe, slot)
        if shared.unfused_lora(module):
            raise NotAccelerated(f"{slot}: LoRA layers not fused (pipe.fuse_lora() merges them)")
        current = self.shared.get(slot)
        if current is not None and current.module is module and not current.stale():
            return current.model
        self.shared.pop(slot, None)
        if getattr(module, "_hf_hook", None) is not None:
            raise NotAccelerated(f"{slot}: accelerate offloading hooks")
        seen = shared.fingerprint(module)
        if slot in self.failed and self.failed[slot][0] == seen:
            raise NotAccelerated(self.failed[slot][1])
        try:
            self.shared[slot] = _BUILD[slot](module, prediction_type)
        except ValueError as e:
            why = f"{slot}: {str(e).splitlines()[0]}"
            self.failed[slot] = (seen, why)
            raise NotAccelerated(why) from None
        return self.shared[slot].model

    def loop(self, model, noise, plan, cond: tuple, guidance_scale, generator, pipe, wrap=None):
        """The denoising loop on fastdiff's Pipeline over `model` (called as wrap(model) when the
        model takes more than tensors): the final latents."""
        key = id(model)
        if key not in self.pipelines:
            live = self._models()
            self.pipelines = {k: v for k, v in self.pipelines.items() if any(v[0] is m for m in live)}
            denoise = wrap(model) if wrap is not None else model
            # run() takes each call's plan; the schedule serves only Pipeline.sample
            self.pipelines[key] = (model, Pipeline(denoise, sampler_for(pipe.scheduler)[1],
                                                   cuda_graph=self.cuda_graphs))
        progress = not getattr(pipe, "_progress_bar_config", {}).get("disable", False)
        # contiguous: the step noise is drawn into a buffer of x's layout, in memory order, and
        # diffusers draws it in logical order (img2img latents come channels-last from the VAE)
        return self.pipelines[key][1].run(noise.contiguous(), plan, cond=cond, guidance_scale=guidance_scale,
                                          generator=generator, progress=progress)

    def decode(self, pipe, z, generator):
        """Images in [-1, 1] from unscaled latents: fastdiff's VAE where it shares pipe.vae."""
        try:
            return self.model("vae").decode(z)
        except NotAccelerated:
            return pipe.vae.decode(z, return_dict=False, generator=generator)[0]

    def _models(self) -> list:
        return [s.model for s in self.shared.values()]

    def backend_context(self):
        if self.backend == "auto":
            return contextlib.nullcontext()
        return backends.use_backend(self.backend, fallback=True)


@torch.no_grad()
def _call(self, *args, **kwargs):
    acc: Acceleration = self._fastdiff
    base = acc.base
    bound = inspect.signature(base.__call__).bind(self, *args, **kwargs)
    bound.apply_defaults()
    a = {"kwargs": {}, **{k: v for k, v in bound.arguments.items() if k != "self"}}
    generator = a.get("generator")
    saved = generator.get_state() if isinstance(generator, torch.Generator) else None
    try:
        run = PIPELINES[base.__name__][0](self, acc, a)
        with acc.backend_context():
            out = run()
    except NotAccelerated as why:
        return _fall_back(self, str(why), args, kwargs)
    except Exception as e:  # diffusers' own call may still serve it (or raise its own error)
        if saved is not None:
            generator.set_state(saved)
        return _fall_back(self, f"{type(e).__name__}: {e}".splitlines()[0], args, kwargs)
    acc.last = "fastdiff's fused loop"
    return out


def _fall_back(pipe, why: str, args, kwargs):
    acc: Acceleration = pipe._fastdiff
    acc.last = f"diffusers' loop ({why})"
    warnings.warn(f"fastdiff.accelerate: {acc.base.__name__} call not accelerated ({why}); running diffusers' "
                  "own loop", RuntimeWarning, stacklevel=3)
    return acc.base.__call__(pipe, *args, **kwargs)


def _accelerated_class(base: type) -> type:
    if base not in _CLASSES:
        _CLASSES[base] = type(base.__name__, (base,), {"__call__": _call, "__module__": base.__module__,
                                                       "__doc__": base.__doc__})
    return _CLASSES[base]


def accelerate(pipe, *, backend: str = "auto", cuda_graphs: bool = True, verbose: bool = False):
    """Make a diffusers pipeline sample on fastdiff, in place; returns the pipeline.

    StableDiffusion(XL)(Img2Img)Pipeline and DiTPipeline calls run fastdiff's
    U-Net / DiT and VAE, which share the pipeline's parameter tensors (no second copy of the
    weights), and its fused CFG + sampler_step loop, when the scheduler maps to a fastdiff
    sampler (DDPM, DDIM, Euler, Euler ancestral, Heun, DPM-Solver++ 2M, LCM, with the config
    flags fastdiff implements). Any other call, and any other pipeline, runs diffusers' own code
    after one warning line saying why.

    backend: "auto", or the backend the ops prefer ("torch", "triton", "cuda"; an op that backend
    cannot run takes auto's choice). cuda_graphs: replay each step as a CUDA graph (one capture
    per shape) on CUDA devices. verbose: print explain(pipe)."""
    backends._check_name(backend)
    current = getattr(pipe, "_fastdiff", None)
    base = current.base if current is not None else type(pipe)
    acc = Acceleration(pipe, base, backend, cuda_graphs)
    pipe._fastdiff = acc
    name = base.__name__
    if name in PIPELINES:
        pipe.__class__ = _accelerated_class(base)
        for slot in (PIPELINES[name][1], "vae"):
            with contextlib.suppress(NotAccelerated):
                acc.model(slot, pipe.scheduler.config.get("prediction_type"))
    else:
        warnings.warn(f"fastdiff.accelerate: {name} is not accelerated (fastdiff serves "
                      f"{', '.join(PIPELINES)}); it runs as before", RuntimeWarning, stacklevel=2)
    if verbose:
        print(explain(pipe))
    return pipe


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _module_line(acc: Acceleration, slot: str) -> str:
    module = getattr(acc.pipe, slot)
    try:
        model = acc.model(slot, acc.pipe.scheduler.config.get("prediction_type"))
    except NotAccelerated as why:
        return f"  {slot}: {type(module).__name__} runs in diffusers ({why})"
    s = acc.shared[slot]
    return (f"  {slot}: fastdiff {type(model).__name__} on {type(module).__name__}'s own tensors "
            f"({_megabytes(s.shared_bytes)} shared, {_megabytes(s.extra_bytes)} of its own)")


def _ops_line(acc: Acceleration, device: torch.device, dtype: torch.dtype, head_dim: Optional[int]) -> str:
    chosen = []
    with acc.backend_context():
        for op, inputs in (("attention", backends.Inputs(device, dtype, head_dim=head_dim)),
                           ("group_norm", backends.Inputs(device, dtype, channels_last=device.type == "cuda")),
                           ("sampler_step", backends.Inputs(device, dtype))):
            try:
                chosen.append(f"{op} -> {backends.select(op, inputs).name}")
            except backends.BackendUnavailable as e:
                chosen.append(f"{op} -> none ({e})")
    return f"  ops on {device.type} {str(dtype).removeprefix('torch.')} (backend {acc.backend}): " + ", ".join(chosen)


def _head_dim(model) -> Optional[int]:
    c = model.config
    if hasattr(c, "num_heads"):
        return c.hidden_size // c.num_heads
    levels = [i for i, d in enumerate(c.depths) if d]
    return c.block_out_channels[levels[0]] // c.heads[levels[0]] if levels else None


def explain(pipe) -> str:
    """What runs where in an accelerated pipeline: which modules are fastdiff's (and the memory
    they share), the backend each op takes, whether the sampler is fused and the steps are
    graph-captured, and why not where not."""
    acc: Optional[Acceleration] = getattr(pipe, "_fastdiff", None)
    name = type(pipe).__name__
    if acc is None:
        return f"{name}: not accelerated (fastdiff.accelerate(pipe) was not called)"
    if name not in PIPELINES:
        return f"{name}: not accelerated: fastdiff serves {', '.join(PIPELINES)}; it runs diffusers' code"
    denoiser = PIPELINES[name][1]
    lines = [f"{name} accelerated by fastdiff"]
    lines += [_module_line(acc, slot) for slot in (denoiser, "vae")]
    if name in ("StableDiffusionImg2ImgPipeline", "StableDiffusionXLImg2ImgPipeline"):
        lines.append("  the input image: diffusers' VAE encoder and scheduler.add_noise (on the same tensors)")
    lines += [f"  {slot}: {type(getattr(pipe, slot)).__name__} runs in transformers (fastdiff has no text encoder)"
              for slot in ("text_encoder", "text_encoder_2") if getattr(pipe, slot, None) is not None]
    try:
        sampler = sampler_for(pipe.scheduler)[0]
        lines.append(f"  scheduler: {type(pipe.scheduler).__name__} -> fused CFG + sampler_step as {sampler}")
    except NotAccelerated as why:
        lines.append(f"  scheduler: not fused ({why}): calls run diffusers' loop")
    module = getattr(pipe, denoiser)
    device, dtype = module.device, module.dtype
    model = acc.shared.get(denoiser)
    lines.append(_ops_line(acc, device, dtype, _head_dim(model.model) if model else None))
    if not acc.cuda_graphs:
        graphs = "off (cuda_graphs=False)"
    elif device.type != "cuda":
        graphs = f"off (the pipeline is on {device.type}; graphs need CUDA)"
    else:
        captured = sum(p.captured_graphs for _, p in acc.pipelines.values())
        graphs = f"on: each step shape is captured once and replayed ({captured} captured so far)"
    lines.append(f"  CUDA graphs: {graphs}")
    lines.append(f"  calls that run diffusers' loop: {PIPELINES[name][2]}")
    lines.append(f"  last call: {acc.last or 'none yet'}")
    return "\n".join(lines)
