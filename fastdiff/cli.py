"""The `fastdiff` command: sample, train and eval.

It composes the parts, none of which imports it: checkpoints load through fastdiff.models, images
come from fastdiff.sampling (SamplingModel.generate), the built-in models from fastdiff.builtin,
their training and evaluation from fastdiff.training. A command imports its parts when it declares
its arguments; a part missing from a build makes only its commands unavailable."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _fail(command: str, message: str) -> int:
    print(f"fastdiff {command}: {message}", file=sys.stderr)
    return 2


# fastdiff sample

def sample_arguments(p: argparse.ArgumentParser) -> None:
    from . import backends
    from .sampling import SAMPLERS

    p.add_argument("--model", default=None,
                   help="a checkpoint directory (loaded with fastdiff.models.from_pretrained; a diffusers pipeline "
                        "folder's transformer/), or unet/dit for that built-in model; default: the built-in "
                        "default model")
    p.add_argument("prompt", nargs="*", default=[""],
                   help="prompts of a text-conditioned model: --n images each, one row per prompt")
    p.add_argument("--class-label", type=int, default=0, help="the class of a class-conditional model")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=None, help="default: the model's")
    p.add_argument("--steps", type=int, default=None, help="sampler steps; default: the model's")
    p.add_argument("--cfg", type=float, default=None,
                   help="guidance scale (1 turns guidance off); default: the model's")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial noise and every noise draw")
    p.add_argument("--n", type=int, default=4, help="images per prompt or class")
    p.add_argument("--out", default="samples.png", help="PNG path of the image grid")
    p.add_argument("--scale", type=int, default=1, help="enlarge the grid this many times (nearest pixel)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--backend", choices=["auto", *backends.NAMES], default="auto", help="op backend")
    p.add_argument("--no-graph", action="store_true", help="run the steps eagerly instead of as a CUDA graph")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def load_model(name, device):
    """The SamplingModel for --model: a checkpoint directory through fastdiff.models.from_pretrained
    (with its VAE from the vae/ subdirectory when there is one; in a diffusers pipeline folder, one
    with model_index.json, the model is its transformer/ or unet/), else the built-in model,
    fastdiff.builtin.sampling_model(name, device=...) with name None, 'unet' or 'dit'."""
    if name is not None and Path(name).is_dir():
        return _checkpoint_model(Path(name), device)
    from . import builtin

    return builtin.sampling_model(name, device=device)


def _checkpoint_model(root: Path, device):
    from . import models
    from .sampling import SamplingModel

    folder = root
    if (root / "model_index.json").is_file():
        folder = next((root / sub for sub in ("transformer", "unet") if (root / sub).is_dir()), root)
    model = models.from_pretrained(folder).to(device).eval()
    vae = models.from_pretrained(root / "vae").to(device).eval() if (root / "vae").is_dir() else None
    if hasattr(model.config, "num_classes"):
        return SamplingModel.from_dit(model, vae)
    raise ValueError(f"{root} holds a text-conditioned model: sample it through the Python API, "
                     "SamplingModel.from_unet(unet, encode_prompt, vae), which needs its text encoder")


def run_sample(args) -> int:
    import torch

    from . import ops
    from .sampling.images import save_png

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = load_model(args.model, device)
    except ImportError as e:
        return _fail("sample", f"no built-in model in this build ({e}); pass --model with a checkpoint directory")
    except (OSError, ValueError) as e:
        return _fail("sample", str(e))
    if args.n < 1 or args.scale < 1:
        return _fail("sample", "--n and --scale must be at least 1")
    labels = args.prompt if model.takes == "prompt" else [args.class_label]
    items = [item for item in labels for _ in range(args.n)]
    with ops.use_backend(args.backend):
        images = model.generate(items, sampler=args.sampler, steps=args.steps, guidance_scale=args.cfg,
                                seed=args.seed, device=device, progress=not args.quiet, cuda_graph=not args.no_graph)
    print(save_png(images, args.out, cols=args.n, scale=args.scale))
    return 0


# fastdiff train

PARTS = ("classifier", "vae", "unet", "dit")


def train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("parts", nargs="*", choices=PARTS, default=list(PARTS),
                   help="what to train, in order (default: all; the U-Net and DiT use the trained VAE)")
    p.add_argument("--steps", type=int, default=None, help="training steps of each part (default: its own)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: each part's own)")
    p.add_argument("--out", default=None, help="weights folder (default: the package's shipped weights)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--seed", type=int, default=0)


def run_train(args) -> int:
    import torch

    from . import builtin
    from .training import train

    torch.set_num_threads(args.threads)
    opts = {k: v for k, v in (("steps", args.steps), ("batch", args.batch)) if v is not None}
    opts.update(seed=args.seed, out_dir=args.out)
    for part in args.parts:
        if part == "classifier":
            path, _ = train.train_classifier(**opts)
        elif part == "vae":
            path, _ = train.train_vae(builtin.new("vae"), **opts)
        elif part == "unet":
            path, _ = train.train_unet(builtin.new("unet"), builtin.new_text_encoder(),
                                       builtin.load("vae", weights_dir=args.out), **opts)
        else:
            path, _ = train.train_dit(builtin.new("dit"), builtin.load("vae", weights_dir=args.out), **opts)
        print(f"fastdiff train: {part} -> {path}")
    return 0


# fastdiff eval

def eval_arguments(p: argparse.ArgumentParser) -> None:
    import torch

    from . import builtin

    p.add_argument("--model", choices=(*builtin.NAMES, "both"), default="both")
    p.add_argument("--per-class", type=int, default=2,
                   help=f"samples per (colour, shape) prompt, of which there are {builtin.data.num_classes()} "
                        "(default: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--weights", default=None, help="weights folder (default: the shipped weights)")
    p.add_argument("--out", default="eval", help="folder for results.json, table.md and plots")


def run_eval(args) -> int:
    from . import builtin
    from .training import evaluate

    kinds = builtin.NAMES if args.model == "both" else (args.model,)
    rows = [row for kind in kinds for row in evaluate.run_all(kind, args.per_class, args.seed, args.device,
                                                              args.weights)]
    evaluate.report(rows, args.out)
    return 0


# fastdiff audit

def audit_arguments(p: argparse.ArgumentParser) -> None:
    from .audit import command

    command.add_arguments(p)


def run_audit(args) -> int:
    from .audit import command

    return command.run(args)


# name: (help, declares the arguments, runs)
COMMANDS = {
    "sample": ("sample images from a prompt or class and save a PNG grid", sample_arguments, run_sample),
    "train": ("train the built-in default models on procedural scenes", train_arguments, run_train),
    "eval": ("prompt accuracy of the built-in models over CFG scales and samplers", eval_arguments, run_eval),
    "audit": ("compile the kernels for sm_80/sm_86/sm_90a at the models' shapes, no GPU needed, and report "
              "registers, spills, shared memory, access widths and padding", audit_arguments, run_audit),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastdiff", description="Fast diffusion sampling.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_run=run)
        try:
            add_arguments(p)
        except ImportError as e:  # a part not installed in this build
            p.set_defaults(_missing=str(e))
    args = parser.parse_args(argv)
    if getattr(args, "_missing", None):
        print(f"fastdiff {args.command}: unavailable ({args._missing})", file=sys.stderr)
        return 2
    return args._run(args)


if __name__ == "__main__":
    sys.exit(main())
