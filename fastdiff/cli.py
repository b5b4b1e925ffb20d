"""The `fastdiff` command: sample, train, eval and audit.

It composes the parts, none of which imports it: fastdiff.commands holds sample and train with
their argument checks, fastdiff.training evaluation, fastdiff.audit the audit. A command imports
its parts when it declares its arguments; a part missing from a build makes only its commands
unavailable. Every error ends in one line on stderr, exit code 2 for a mistake in the arguments
(naming the flag) and 1 for a failure while running; --debug or FASTDIFF_DEBUG=1 shows the
traceback instead."""
from __future__ import annotations

import argparse
import os
import sys

from .commands.errors import Parser, UsageError


# fastdiff sample, fastdiff train

def sample_arguments(p: argparse.ArgumentParser) -> None:
    from .commands import sample

    sample.add_arguments(p)


def run_sample(args) -> int:
    from .commands import sample

    return sample.run(args)


def train_arguments(p: argparse.ArgumentParser) -> None:
    from .commands import train

    train.add_arguments(p)


def run_train(args) -> int:
    from .commands import train

    return train.run(args)


# fastdiff eval

def eval_arguments(p: argparse.ArgumentParser) -> None:
    import torch

    from . import builtin

    p.add_argument("--model", choices=(*builtin.NAMES, "all"), default="all")
    p.add_argument("--per-class", type=int, default=2,
                   help=f"samples per (colour, shape) prompt, of which there are {builtin.data.num_classes()} "
                        "(default: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--weights", default=None, help="weights folder (default: the shipped weights)")
    p.add_argument("--out", default="eval", help="folder for results.json, table.md and plots")


def run_eval(args) -> int:
    from . import builtin
    from .commands import checks
    from .training import evaluate

    checks.int_range("--per-class", args.per_class, 1)
    checks.seed("--seed", args.seed)
    device = checks.device("--device", args.device)
    kinds = builtin.NAMES if args.model == "all" else (args.model,)
    rows = [row for kind in kinds for row in evaluate.run_all(kind, args.per_class, args.seed, device,
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
    "sample": ("sample images from a prompt or class and save a grid (PNG, JPEG or WEBP)", sample_arguments,
               run_sample),
    "train": ("train the built-in default models on procedural scenes", train_arguments, run_train),
    "eval": ("prompt accuracy of the built-in models over CFG scales and samplers", eval_arguments, run_eval),
    "audit": ("compile the kernels for sm_80/sm_86/sm_90a at the models' shapes, no GPU needed, and report "
              "registers, spills, shared memory, access widths and padding", audit_arguments, run_audit),
}


def _parser() -> Parser:
    parser = Parser(prog="fastdiff", description="Fast diffusion sampling.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_run=run)
        p.add_argument("--debug", action="store_true", help="show the traceback of an error (or FASTDIFF_DEBUG=1)")
        try:
            add_arguments(p)
        except ImportError as e:  # a part not installed in this build
            p.set_defaults(_missing=str(e))
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("FASTDIFF_DEBUG", "") not in ("", "0")
    name = next((a for a in argv if a in COMMANDS), None)
    prefix = f"fastdiff {name}" if name else "fastdiff"
    try:
        args = _parser().parse_args(argv)
        if getattr(args, "_missing", None):
            raise UsageError(f"unavailable in this build ({args._missing})")
        return args._run(args)
    except UsageError as e:
        if debug:
            raise
        print(f"{prefix}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"{prefix}: {type(e).__name__}: {first} (--debug shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
