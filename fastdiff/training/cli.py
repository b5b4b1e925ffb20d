"""`fastdiff train`: train the default models on procedural scenes and write their weights."""
from __future__ import annotations

import torch

PARTS = ("classifier", "vae", "unet", "dit")


def add_arguments(parser) -> None:
    parser.add_argument("parts", nargs="*", choices=PARTS, default=list(PARTS),
                        help="what to train, in order (default: all; the U-Net and DiT use the trained VAE)")
    parser.add_argument("--steps", type=int, default=None, help="training steps of each part (default: its own)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: each part's own)")
    parser.add_argument("--out", default=None, help="weights folder (default: the package's shipped weights)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from . import default, train

    torch.set_num_threads(args.threads)
    opts = {k: v for k, v in (("steps", args.steps), ("batch", args.batch)) if v is not None}
    opts.update(seed=args.seed, out_dir=args.out)
    for part in args.parts:
        if part == "classifier":
            path, _ = train.train_classifier(**opts)
        elif part == "vae":
            path, _ = train.train_vae(default.new("vae"), **opts)
        elif part == "unet":
            path, _ = train.train_unet(default.new("unet"), default.new_text_encoder(),
                                       default.load("vae", weights_dir=args.out), **opts)
        else:
            path, _ = train.train_dit(default.new("dit"), default.load("vae", weights_dir=args.out), **opts)
        print(f"fastdiff train: {part} -> {path}")
    return 0
