"""Argument checks shared by the commands, run before anything is loaded or computed: each raises
UsageError naming the flag and what it accepts."""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from .errors import UsageError

SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes 64-bit seeds


def int_range(flag: str, value: int, low: int, high: int | None = None, what: str = "") -> int:
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise UsageError(f"{flag} {value}: expected an integer {bound}{what}")
    return value


def seed(flag: str, value: int) -> int:
    return int_range(flag, value, 0, SEED_MAX, " (2**64 - 1)")


def guidance(flag: str, value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise UsageError(f"{flag} {value}: expected a finite number of at least 0 (1 turns guidance off, "
                         "about 3 to 12 follows the prompt)")
    return value


def default_threads() -> int:
    """Half the CPUs this process may use, at least one: torch's default (all of them) slows
    sampling several times over when another process keeps the CPUs busy."""
    return max(1, len(os.sched_getaffinity(0)) // 2) if hasattr(os, "sched_getaffinity") else 1


def device(flag: str, name: str | None):
    """The torch.device for `name`; None: cuda when available, else cpu."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"{flag} {name}: expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"{flag} {name}: no CUDA GPU is available here (torch {torch.__version__}); "
                             "use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise UsageError(f"{flag} {name}: there are {count} CUDA devices (cuda:0 to cuda:{count - 1})")
    elif dev.type != "cpu":
        raise UsageError(f"{flag} {name}: expected cpu, cuda or cuda:N")
    return dev


def backend(flag: str, name: str, dev) -> str:
    """A backend other than auto and torch needs a CUDA device and its module built."""
    from .. import backends

    if name in ("auto", "torch"):
        return name
    if dev.type != "cuda":
        raise UsageError(f"{flag} {name}: the {name} kernels run on CUDA GPUs; on {dev} use --backend auto or torch")
    _, err = backends.BACKENDS[name].support("cfg_combine")
    if err:
        raise UsageError(f"{flag} {name}: not available in this install: {err}")
    return name


def image_path(flag: str, value: str) -> Path:
    """An image file to write: a known extension, in an existing folder this process can write to,
    not a folder itself. Writability is probed with a file removed at once (access() says yes to
    root even on read-only file systems)."""
    from ..sampling.images import FORMATS

    path = Path(value)
    if path.is_dir():
        raise UsageError(f"{flag} {value}: is a folder; expected an image file name")
    if path.suffix.lower() not in FORMATS:
        raise UsageError(f"{flag} {value}: expected a file name ending in {', '.join(FORMATS)}")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"{flag} {value}: the folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".fastdiff-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"{flag} {value}: cannot write in {folder} ({e.strerror})") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{flag} {value}: the file exists and is not writable")
    return path


def within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False
