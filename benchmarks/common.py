"""Timing and reporting shared by the benchmark scripts.

Times are medians of triton.testing.do_bench (CUDA events, after warm-up), rotating among enough
input sets that they do not fit in L2 together, so no call reads its inputs from cache.
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import pathlib
import subprocess
import sys
import time
import traceback

import torch

from fastdiff import backends

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
    if not torch.cuda.is_available():  # the CPU checks of the scripts (bench_sampling --tiny): wall clock
        times = []
        for _ in range(3):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1e3)
        return sorted(times)[1]
    torch.cuda.synchronize()
    return triton.testing.do_bench(call, warmup=warmup_ms, rep=rep_ms, return_mode="median")


FASTDIFF_BACKENDS = backends.NAMES  # "torch": fastdiff's reference backend


def backend_impls(op: str, desc, call) -> dict:
    """{backend: call with that fastdiff backend forced} for each backend that can run `desc` (a
    fastdiff.backends.Inputs), to time with Results.time."""
    from fastdiff import backends, ops

    impls = {}
    for name in FASTDIFF_BACKENDS:
        if backends.BACKENDS[name].not_supported_reasons(op, desc):
            continue

        def run(*args, name=name):
            with ops.use_backend(name):
                return call(*args)
        impls[name] = run
    return impls


def auto_case(op: str, desc, times: dict) -> dict | None:
    """The measured case for fastdiff/measured.json: the fastdiff backends that ran, fastest first
    (None when none did; a backend that failed is left out, after the measured ones for auto), and
    their times in us, which record_auto.py needs where two cases share one key."""
    from fastdiff import measured

    order = sorted((b for b in times if b in FASTDIFF_BACKENDS), key=times.get)
    if not order:
        return None
    return {**measured.case(op, desc, order), "us": {b: round(times[b] * 1e3, 1) for b in order}}


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


class Results:
    """The rows of one benchmark run, kept in results/<name>.json (with env_info() and the measured
    backend orders, which benchmarks/record_auto.py collects) from the first row on.

    The file is rewritten after every change, so a run that dies loses nothing already measured.
    A step that raises inside attempt() is recorded as a row of its key columns and "error"
    (exception type and message), and the run goes on; finish() prints the table and returns the
    exit status: 1 when any row failed."""

    def __init__(self, name: str, columns: list[str], folder: str | os.PathLike | None = None):
        self.name, self.columns = name, list(columns)
        self.rows: list[dict] = []
        self.auto: list[dict] = []
        self.path = pathlib.Path(folder or ROOT / "results") / f"{name}.json"
        self._env = None

    @property
    def failures(self) -> list[dict]:
        return [r for r in self.rows if "error" in r]

    def add(self, row: dict) -> dict:
        """Record a row, print it and save; returns the row itself, which may be completed later
        (ratios against a baseline measured after it) and saved again."""
        self.rows.append(row)
        print("  ".join(f"{k}={v}" for k, v in row.items() if v is not None), flush=True)
        self.save()
        return row

    def add_auto(self, case: dict | None) -> None:
        if case is not None:
            self.auto.append(case)
            self.save()

    def fail(self, key: dict, exc: BaseException) -> dict:
        """Record a failed row: the key columns and the exception's type and message."""
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        row = self.add({**key, "error": f"{type(exc).__name__}: {exc}"[:4000]})
        release_memory()
        return row

    @contextlib.contextmanager
    def attempt(self, **key):
        """Run the body; an Exception in it becomes a failed row with these key columns and the
        run goes on after the block (check for the body's results before using them)."""
        try:
            yield
        except Exception as e:  # noqa: BLE001 -- any failure is a result to record
            self.fail(key, e)

    def call(self, key: dict, fn, *args, **kwargs):
        """fn(*args, **kwargs); None, after recording a failed row with these key columns, when it
        raises."""
        with self.attempt(**key):
            return fn(*args, **kwargs)
        return None

    def time(self, key: dict, impls: dict, inputs: list[tuple], fields, **kwargs) -> tuple[dict, dict]:
        """Time each of impls ({label: fn}) by time_ms and record it at once as the row
        {**key, "impl": label, **fields(ms)}; one that raises is recorded as a failed row and left
        out. Returns ({label: ms}, {label: row}) of those that ran: the rows to complete (ratios
        to the group's baseline) and save() once the group is measured."""
        times, rows = {}, {}
        for label, fn in impls.items():
            with self.attempt(**key, impl=label):
                ms = time_ms(fn, inputs, **kwargs)
                rows[label] = self.add({**key, "impl": label, **fields(ms)})
                times[label] = ms
        return times, rows

    def time_bandwidth(self, key: dict, op: str, desc, impls: dict, inputs: list[tuple], nbytes: int,
                       ceiling: float) -> None:
        """Time a memory-bound op's impls (one "torch eager") moving nbytes a call: us, GB/s, the
        fraction of the copy bandwidth `ceiling` and the speedup over eager per row, the fastdiff
        backends' order for fastdiff/measured.json; saved."""
        def fields(ms):
            return {"us": round(ms * 1e3, 1), "GB/s": round(nbytes / ms / 1e6, 1),
                    "of copy bw": round(nbytes / ms * 1e3 / ceiling, 3)}
        times, rows = self.time(key, impls, inputs, fields)
        self.add_auto(auto_case(op, desc, times))
        eager = times.get("torch eager")
        for impl, row in rows.items():
            row["vs eager"] = round(eager / times[impl], 2) if eager else None
        self.save()

    def save(self) -> None:
        if self._env is None:
            self._env = env_info()
        data = {"env": self._env, "rows": self.rows, **({"auto": self.auto} if self.auto else {}),
                "failed": len(self.failures)}
        os.makedirs(self.path.parent, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str))
        os.replace(tmp, self.path)  # whole files only: a reader never sees half a file

    def finish(self) -> int:
        """Print the rows as an aligned table (failed rows with the first line of their error),
        save, and return the exit status: 1 when any row failed, else 0."""
        columns = self.columns + (["error"] if self.failures else [])

        def cell(r, c):
            v = r.get(c, "")
            return (str(v).splitlines() or [""])[0][:120] if c == "error" else str("" if v is None else v)
        widths = {c: max([len(c)] + [len(cell(r, c)) for r in self.rows]) for c in columns}
        print("  ".join(c.ljust(widths[c]) for c in columns))
        for r in self.rows:
            print("  ".join(cell(r, c).ljust(widths[c]) for c in columns).rstrip())
        self.save()
        print(f"saved {self.path}")
        if self.failures:
            print(f"{self.name}: {len(self.failures)} of {len(self.rows)} rows failed", file=sys.stderr)
            return 1
        return 0


def release_memory() -> None:
    """Free what a failed step left behind (best effort: a broken CUDA context may refuse)."""
    gc.collect()
    if torch.cuda.is_available():
        try:
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass


def convert_diffusers(model, dtype=None):
    """The fastdiff model holding a diffusers UNet2DConditionModel's, DiTTransformer2DModel's,
    AutoencoderKL's, SD3Transformer2DModel's or FluxTransformer2DModel's weights:
    fastdiff.models.from_pretrained of its state dict, with the config converted from the diffusers
    model's config."""
    from fastdiff.models import DiTConfig, FluxConfig, MMDiTConfig, UNetConfig, VAEConfig, from_pretrained

    configs = {"UNet2DConditionModel": UNetConfig, "DiTTransformer2DModel": DiTConfig, "AutoencoderKL": VAEConfig,
               "SD3Transformer2DModel": MMDiTConfig, "FluxTransformer2DModel": FluxConfig}
    config = configs[type(model).__name__].from_diffusers(dict(model.config))
    return from_pretrained(model.state_dict(), config=config, dtype=dtype)


def share_dit_embedders(model) -> None:
    """diffusers' DiT keeps a copy of the timestep and class embedders per block, equal in released
    checkpoints but not in a randomly initialised model; fastdiff keeps one, and from_pretrained
    insists the copies agree. Copy the first block's into the others, as a checkpoint has them."""
    for block in model.transformer_blocks[1:]:
        block.norm1.emb.load_state_dict(model.transformer_blocks[0].norm1.emb.state_dict())
