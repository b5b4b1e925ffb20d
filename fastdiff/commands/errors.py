"""Mistakes in a command's arguments end in one line on stderr that names the flag, and exit code
2; no traceback unless asked for (--debug or FASTDIFF_DEBUG=1)."""
from __future__ import annotations

import argparse


class UsageError(Exception):
    """A mistake in the arguments; the message names the flag and what it accepts."""


class Parser(argparse.ArgumentParser):
    """argparse, whose errors become UsageError: one line instead of the usage text."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")
