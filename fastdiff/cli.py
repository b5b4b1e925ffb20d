"""The `fastdiff` command. Each subcommand lives in its own module, imported only when used,
which defines `add_arguments(parser)` and `run(args) -> int`."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "sample": ("fastdiff.sampling.cli", "sample images from a prompt or class and save a PNG grid"),
    "train": ("fastdiff.training.cli", "train the built-in default models on procedural scenes"),
    "eval": ("fastdiff.training.evaluate", "prompt accuracy of the built-in models over CFG scales and samplers"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastdiff", description="Fast diffusion sampling.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError as e:  # a part not installed in this build
            p.set_defaults(_missing=str(e))
    args = parser.parse_args(argv)
    if getattr(args, "_missing", None):
        print(f"fastdiff {args.command}: unavailable ({args._missing})", file=sys.stderr)
        return 2
    return importlib.import_module(args._module).run(args)


if __name__ == "__main__":
    sys.exit(main())
