"""`fastdiff sample`: sample images from a model and save them as one PNG grid."""
from __future__ import annotations

import argparse
import importlib
import sys

from .samplers import SAMPLERS


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--backend", choices=["auto", "torch", "triton", "cuda"], default="auto", help="op backend")
    p.add_argument("--no-graph", action="store_true", help="run the steps eagerly instead of as a CUDA graph")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _fail(message: str) -> int:
    print(f"fastdiff sample: {message}", file=sys.stderr)
    return 2


def load_model(name, device):
    """The SamplingModel for --model: a checkpoint directory through fastdiff.models.from_pretrained
    (with its VAE from the vae/ subdirectory when there is one; in a diffusers pipeline folder, one
    with model_index.json, the model is its transformer/ or unet/), else the built-in model,
    fastdiff.training.default.default_model(name, device=...) with name None, 'unet' or 'dit'."""
    from pathlib import Path

    from .model import SamplingModel

    if name is not None and Path(name).is_dir():
        root = folder = Path(name)
        if (root / "model_index.json").is_file():
            folder = next((root / sub for sub in ("transformer", "unet") if (root / sub).is_dir()), root)
        models = importlib.import_module("fastdiff.models")
        model = models.from_pretrained(folder).to(device).eval()
        vae = models.from_pretrained(root / "vae").to(device).eval() if (root / "vae").is_dir() else None
        if hasattr(model.config, "num_classes"):
            return SamplingModel.from_dit(model, vae)
        raise ValueError(f"{name} holds a text-conditioned model: sample it through the Python API, "
                         "SamplingModel.from_unet(unet, encode_prompt, vae), which needs its text encoder")
    default = importlib.import_module("fastdiff.training.default")
    return default.default_model(name, device=device)


def run(args) -> int:
    import torch

    from .. import ops
    from .images import save_png
    from .pipeline import Pipeline
    from .samplers import get_sampler

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        bundle = load_model(args.model, device)
    except ImportError as e:
        return _fail(f"no built-in model in this build ({e}); pass --model with a checkpoint directory")
    except (OSError, ValueError) as e:
        return _fail(str(e))
    opts = {"sampler": "dpmpp_2m", "steps": 20, "guidance_scale": 5.0, **bundle.defaults}
    sampler = get_sampler(args.sampler or opts["sampler"])
    steps = args.steps or opts["steps"]
    scale = opts["guidance_scale"] if args.cfg is None else args.cfg
    guidance = None if scale == 1 else scale
    if args.n < 1 or args.scale < 1:
        return _fail("--n and --scale must be at least 1")
    labels = args.prompt if bundle.takes == "prompt" else [args.class_label]
    items = [item for item in labels for _ in range(args.n)]
    cond = bundle.condition(items, guidance is not None)
    pipe = Pipeline(bundle.denoise, bundle.schedule, prediction_type=bundle.prediction_type, vae=bundle.vae,
                    cuda_graph=not args.no_graph)
    with ops.use_backend(args.backend), torch.no_grad():
        latents = pipe.sample((len(items), *bundle.latent_shape), sampler, steps, cond=cond, guidance_scale=guidance,
                              seed=args.seed, device=device, dtype=bundle.dtype, progress=not args.quiet)
        images = pipe.decode(latents) if bundle.vae is not None else latents
    print(save_png(images.clamp(-1, 1), args.out, cols=args.n, scale=args.scale))
    return 0
