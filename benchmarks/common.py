"""Timing and reporting shared by the benchmark scripts.

Times are medians of triton.testing.do_bench (CUDA events, after warm-up), rotating among enough
input sets that they do not fit in L2 together, so no call reads its inputs from cache.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
L2_BYTES = 50 * 2**20  # H100; rotation only needs an upper bound


def require_gpu() -> None:
    if not torch.cuda.is_available():
        print(f"{pathlib.Path(sys.argv[0]).name}: needs a CUDA GPU; nothing measured")
        sys.exit(0)


def rotations(nbytes_per_call: int) -> int:
    """How many input sets make the rotation larger than twice the L2 cache."""
    return max(1, math.ceil(2 * L2_BYTES / max(1, nbytes_per_call)))


def compile_static(fn):
    """torch.compile of fn for one input shape: fresh dynamo state and a static graph, as a user
    compiling for that shape would get (one compiled function fed many shapes goes dynamic after
    its first recompile and then hits the recompile limit)."""
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def time_ms(fn, inputs: list[tuple], warmup_ms: int = 25, rep_ms: int = 100) -> float:
    """Median ms of fn(*inputs[i]) with i cycling through the input sets."""
    import triton.testing

    state = {"i": 0}

    def call():
        args = inputs[state["i"] % len(inputs)]
        state["i"] += 1
        return fn(*args)

    call()  # compile / load before the warm-up is timed
    torch.cuda.synchronize()
    return triton.testing.do_bench(call, warmup=warmup_ms, rep=rep_ms, return_mode="median")


FASTDIFF_BACKENDS = ("torch", "triton", "cuda")  # "torch": fastdiff's reference backend


def time_backends(op: str, desc, call, inputs: list[tuple]) -> dict:
    """{backend: median ms} of call(*inputs[i]) forced onto each fastdiff backend that can run
    `desc` (a fastdiff.backends.Inputs)."""
    from fastdiff import backends, ops

    times = {}
    for name in FASTDIFF_BACKENDS:
        if backends.BACKENDS[name].not_supported_reasons(op, desc):
            continue

        def run(*args, name=name):
            with ops.use_backend(name):
                return call(*args)
        times[name] = time_ms(run, inputs)
    return times


def auto_case(op: str, desc, times: dict) -> dict:
    """The measured case for fastdiff/measured.json: fastdiff's backends, fastest first."""
    from fastdiff import measured

    return measured.case(op, desc, sorted((b for b in times if b in FASTDIFF_BACKENDS), key=times.get))


def copy_bandwidth() -> float:
    """Measured device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    src = torch.empty(2**28, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), [()])
    return 2 * src.numel() / (ms * 1e-3)


def matmul_flops() -> float:
    """Measured dense fp16 matmul rate in FLOP/s (8192^3), the ceiling for attention."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    ms = time_ms(torch.mm, [(a, a)])
    return 2 * 8192**3 / (ms * 1e-3)


def _git(*args) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def env_info() -> dict:
    import fastdiff

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    commit, changes = _git("rev-parse", "--short", "HEAD"), _git("status", "--porcelain")
    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name() if cuda else "cpu",
            "capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
            "torch": torch.__version__, "triton": triton_version, "fastdiff": fastdiff.__version__,
            # dirty: the code measured differs from the commit (tracked or untracked files)
            "commit": commit and commit.strip(), "dirty": None if changes is None else bool(changes.strip())}


def report(name: str, rows: list[dict], columns: list[str], auto: list[dict] | None = None) -> None:
    """Print rows as an aligned table and save them with env_info() (and the measured backend
    orders, which benchmarks/record_auto.py collects) as results/<name>.json."""
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))
    out = ROOT / "results"
    os.makedirs(out, exist_ok=True)
    data = {"env": env_info(), "rows": rows, **({"auto": auto} if auto else {})}
    (out / f"{name}.json").write_text(json.dumps(data, indent=1))
    print(f"saved {out / (name + '.json')}")
