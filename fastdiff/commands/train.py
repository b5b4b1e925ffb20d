"""`fastdiff train`: trains the built-in models into a folder of the user's (never the installed
package), refusing to overwrite weights without --force; each file is written whole or not at all.
`fastdiff sample --model FOLDER` samples what it wrote."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import checks
from .errors import UsageError

PARTS = ("classifier", "vae", "unet", "dit", "lcm")
DEFAULT_OUT = "fastdiff-weights"
# The files each part writes.
WRITES = {"classifier": ("classifier.safetensors", "classifier_loss.csv"), "vae": ("vae.safetensors", "vae_loss.csv"),
          "unet": ("unet.safetensors", "text_encoder.safetensors", "unet_loss.csv"),
          "dit": ("dit.safetensors", "dit_loss.csv"), "lcm": ("unet-lcm.safetensors", "unet-lcm_loss.csv")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    # argparse checks an empty nargs="*" list against choices, so the parts are checked in _parts
    p.add_argument("parts", nargs="*", metavar="PART",
                   help=f"what to train, in order: {', '.join(PARTS)} (default: all; the U-Net and DiT use the VAE in "
                        "--out, else the shipped one, and lcm distills the U-Net in --out, else the shipped one, "
                        "each then copied there)")
    p.add_argument("--steps", type=int, default=None, help="training steps of each part (default: its own)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: each part's own)")
    p.add_argument("--out", default=DEFAULT_OUT, help="weights folder (default: ./%(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite weights already in --out")
    p.add_argument("--threads", type=int, default=checks.default_threads(), help="CPU threads (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)


def _parts(args) -> list[str]:
    for part in args.parts:
        if part not in PARTS:
            raise UsageError(f"part {part!r}: expected {', '.join(PARTS)}")
    return list(dict.fromkeys(args.parts or PARTS))


def _check(args) -> Path:
    from .. import builtin

    if args.steps is not None:
        checks.int_range("--steps", args.steps, 1)
    if args.batch is not None:
        checks.int_range("--batch", args.batch, 1)
    checks.int_range("--threads", args.threads, 1, os.cpu_count() or 1)
    checks.seed("--seed", args.seed)
    out = Path(args.out)
    package = Path(builtin.__file__).resolve().parents[1]
    if checks.within(out, package):
        raise UsageError(f"--out {args.out}: inside the installed fastdiff package ({package}), which commands never "
                         "write; train into another folder")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: is a file; expected a folder")
    existing = [f for part in _parts(args) for f in WRITES[part] if (out / f).exists()]
    if existing and not args.force:
        raise UsageError(f"--out {args.out}: already holds {', '.join(existing)}; pass --force to overwrite them or "
                         "choose another --out")
    return out


def _trained(part: str, out: Path):
    """A trained part that another trains on: the one in `out`, else the shipped one, copied to
    `out` so that the folder samples on its own."""
    from .. import builtin
    from ..builtin import checkpoint

    if checkpoint.path(part, out).is_file():
        return builtin.load(part, weights_dir=out)
    model = builtin.load(part)
    checkpoint.save(model, part, checkpoint.config(part), out)
    return model


def run(args) -> int:
    import torch

    out = _check(args)
    from .. import builtin
    from ..training import lcm, train

    torch.set_num_threads(args.threads)
    opts = {k: v for k, v in (("steps", args.steps), ("batch", args.batch)) if v is not None}
    opts.update(seed=args.seed, out_dir=out)
    for part in _parts(args):
        if part == "classifier":
            path, _ = train.train_classifier(**opts)
        elif part == "vae":
            path, _ = train.train_vae(builtin.new("vae"), **opts)
        elif part == "unet":
            path, _ = train.train_unet(builtin.new("unet"), builtin.new_text_encoder(), _trained("vae", out), **opts)
        elif part == "dit":
            path, _ = train.train_dit(builtin.new("dit"), _trained("vae", out), **opts)
        else:
            path, _ = lcm.train_lcm(_trained("unet", out), _trained("text_encoder", out), _trained("vae", out), **opts)
        print(f"fastdiff train: {part} -> {path}")
    return 0
