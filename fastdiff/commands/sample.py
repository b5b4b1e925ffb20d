"""`fastdiff sample`: every argument is checked before a model loads, then images are sampled and
saved as one grid. Models load through fastdiff.models or fastdiff.builtin (model_source) and
sample through SamplingModel.generate."""
from __future__ import annotations

import argparse
import os
import sys

from . import checks, model_source
from .errors import UsageError

MAX_N, MAX_STEPS, MAX_SCALE, DEFAULT_COLS = 256, 1000, 32, 8
# The models `fastdiff sample` loads all follow a noise (DDPM) schedule; flow samplers need a flow model.
FLOW_SAMPLERS = ("flow_euler",)


def _noise_samplers() -> list[str]:
    from ..sampling import SAMPLERS

    return [name for name in SAMPLERS if name not in FLOW_SAMPLERS]


def _classes_help() -> str:
    try:
        from ..builtin import data
    except ImportError:
        return ""
    colours = ", ".join(f"{i} {name}" for i, name in enumerate(data.COLOUR_NAMES))
    shapes = ", ".join(f"{i} {name}" for i, name in enumerate(data.SHAPES))
    return (f"; the built-in dit's are {len(data.SHAPES)} x colour + shape, colours {colours}; shapes {shapes} "
            f"(34: a blue ring)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .. import backends

    p.add_argument("prompt", nargs="*", help="prompts of a text-conditioned model: --n images each, one row per prompt")
    p.add_argument("--model", default=None,
                   help="unet or dit (the built-in models), a folder written by fastdiff train (or its unet or dit "
                        ".safetensors file), a diffusers DiT or DiT pipeline folder with its VAE in vae/, or a DiT "
                        "checkpoint file with vae/ beside it; default: the built-in unet")
    p.add_argument("--pipeline", default=None, metavar="DIR",
                   help="a local diffusers pipeline folder (StableDiffusion, StableDiffusionXL or DiT), sampled with "
                        "its own scheduler through fastdiff.accelerate; instead of --model")
    p.add_argument("--class-label", type=int, nargs="+", default=None, metavar="N",
                   help="class labels of a class-conditional model instead of prompts, one row each" + _classes_help())
    p.add_argument("--sampler", default=None, metavar="NAME",
                   help=f"one of {', '.join(_noise_samplers())}; default: the model's")
    p.add_argument("--steps", type=int, default=None, help=f"sampler steps, 1 to {MAX_STEPS}; default: the model's")
    p.add_argument("--cfg", type=float, default=None,
                   help="guidance scale, at least 0 (1 turns guidance off); default: the model's")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial noise and every noise draw (0 to 2**64 - 1)")
    p.add_argument("--n", type=int, default=4, help=f"images per prompt or class, 1 to {MAX_N}")
    p.add_argument("--cols", type=int, default=None,
                   help=f"images per row of the grid; default: --n, at most {DEFAULT_COLS}")
    p.add_argument("--out", default="samples.png",
                   help="the grid's file; .png, .jpg/.jpeg or .webp sets the format (default: samples.png)")
    p.add_argument("--scale", type=int, default=1,
                   help=f"enlarge the grid this many times, 1 to {MAX_SCALE} (nearest pixel; the built-in models "
                        "draw 32x32 images)")
    p.add_argument("--threads", type=int, default=checks.default_threads(),
                   help="CPU threads (default: half the CPUs, %(default)s here: all of them slow sampling down "
                        "several times when other processes are busy)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N; default: cuda when available, else cpu")
    p.add_argument("--backend", choices=["auto", *backends.NAMES], default="auto",
                   help="prefer this op backend (triton and cuda need a CUDA device); ops it cannot run use auto's")
    p.add_argument("--no-graph", action="store_true", help="run the steps eagerly instead of as a CUDA graph")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_sampler(name):
    from ..sampling import SAMPLERS

    usable = _noise_samplers()
    if name is None or name in usable:
        return name
    if name in SAMPLERS:
        raise UsageError(f"--sampler {name}: a flow-matching sampler, and fastdiff sample's models are "
                         f"noise-prediction (DDPM-schedule) models; use one of {', '.join(usable)}")
    raise UsageError(f"--sampler {name}: unknown; use one of {', '.join(usable)}")


def _check_steps(sampler: str, steps) -> None:
    """Samplers take fewer steps than the 1000 of the training schedules (DPM-Solver++ 999, LCM 50):
    plan the run on such a schedule to know."""
    from ..sampling import NoiseSchedule, get_sampler

    if steps is None:
        return
    try:
        get_sampler(sampler).plan(NoiseSchedule.from_betas("linear", MAX_STEPS, 1e-4, 0.02), steps)
    except ValueError as e:
        raise UsageError(f"--steps {steps}: too many for the {sampler} sampler ({e})") from None


def _items(args, source: model_source.ModelSource) -> list:
    """The prompts or class labels, one per row, as the model takes them."""
    if args.class_label is not None:
        if source.prompts and source.num_classes is None:
            raise UsageError(f"--class-label: {source.what} takes prompts, not class labels")
        if args.prompt:
            raise UsageError("--class-label: pass prompts or class labels, not both")
        for label in args.class_label:
            if source.num_classes is not None and not 0 <= label < source.num_classes:
                listed = " (listed in --help)" if source.builtin else ""
                raise UsageError(f"--class-label {label}: {source.what} has classes 0 to {source.num_classes - 1}"
                                 f"{listed}")
        return list(args.class_label)
    if not source.prompts:
        raise UsageError(f"--class-label: {source.what} is class-conditional; pass --class-label N instead of prompts")
    if source.builtin == "dit":
        from ..builtin import prompts

        if not args.prompt:
            raise UsageError(f"--model {args.model}: the built-in dit needs a prompt naming a colour and a shape, or "
                             f"--class-label N (0 to {source.num_classes - 1}, listed in --help)")
        for prompt in args.prompt:
            why = prompts.missing_class(prompt)
            if why:
                raise UsageError(f"{why}; or pass --class-label N (listed in --help)")
    return list(args.prompt) or [""]


def _warn_prompts(source: model_source.ModelSource, items: list) -> None:
    if source.builtin is None:
        return
    from ..builtin import prompts

    for item in dict.fromkeys(i for i in items if isinstance(i, str)):
        found = prompts.problems(source.builtin, item)
        if found:
            print(f"fastdiff sample: warning: prompt {item!r}: {'; '.join(found)}", file=sys.stderr)


def run(args) -> int:
    import torch

    n = checks.int_range("--n", args.n, 1, MAX_N)
    if args.steps is not None:
        checks.int_range("--steps", args.steps, 1, MAX_STEPS)
    checks.guidance("--cfg", args.cfg)
    checks.seed("--seed", args.seed)
    cols = checks.int_range("--cols", args.cols, 1) if args.cols is not None else min(n, DEFAULT_COLS)
    checks.int_range("--scale", args.scale, 1, MAX_SCALE)
    checks.int_range("--threads", args.threads, 1, os.cpu_count() or 1)
    sampler = _check_sampler(args.sampler)
    out = checks.image_path("--out", args.out)
    device = checks.device("--device", args.device)
    backend = checks.backend("--backend", args.backend, device)
    if args.pipeline is not None:
        return _run_pipeline(args, n, cols, out, device, backend)
    source = model_source.resolve(args.model)
    _check_steps(sampler or source.sampler, args.steps)
    items = _items(args, source)
    _warn_prompts(source, items)

    from .. import ops
    from ..sampling.images import save_image

    torch.set_num_threads(args.threads)
    model = source.load(device)
    rows = [item for item in items for _ in range(n)]
    with ops.use_backend(backend, fallback=True):
        images = model.generate(rows, sampler=sampler, steps=args.steps, guidance_scale=args.cfg, seed=args.seed,
                                device=device, progress=not args.quiet, cuda_graph=not args.no_graph)
    print(save_image(images, out, cols=cols, scale=args.scale))
    return 0


def _run_pipeline(args, n: int, cols: int, out, device, backend: str) -> int:
    from ..sampling.images import save_image
    from . import pipeline

    if args.model is not None:
        raise UsageError("--pipeline: pass --model or --pipeline, not both")
    if args.sampler is not None:
        raise UsageError("--sampler: a pipeline samples with its own scheduler (DIR/scheduler); drop --sampler")
    name = pipeline.check_folder("--pipeline", args.pipeline)
    if name in pipeline.CLASSES:
        if args.prompt or args.class_label is None:
            raise UsageError(f"--class-label: a {name} is class-conditional; pass --class-label N instead of prompts")
        items = list(args.class_label)
    else:
        if args.class_label is not None:
            raise UsageError(f"--class-label: a {name} takes prompts, not class labels")
        items = list(args.prompt) or [""]
    import torch

    torch.set_num_threads(args.threads)
    pipe = pipeline.load(args.pipeline, device, backend, not args.no_graph, args.quiet)
    rows = [item for item in items for _ in range(n)]
    images = pipeline.generate(pipe, rows, steps=args.steps, guidance_scale=args.cfg, seed=args.seed, device=device)
    print(save_image(images, out, cols=cols, scale=args.scale))
    return 0
