"""Audit fastdiff's kernels without a GPU: compile exactly the configurations the launchers would
launch at the models' shapes, for sm_80, sm_86 and sm_90a, and report what the compiler produced
(registers, spills, shared memory against the arch's limit, occupancy, tensor-core instructions,
global access widths, attention's padding waste) beside each workload's H100 roofline floor.

    fastdiff audit [--arch sm_90a] [--workload sd15] [--json audit.json]
    fastdiff.audit.run(archs=["sm_90a"], workloads=["sd15"]) -> list[dict]

Triton: triton_audit.py runs the real launchers on meta tensors and compiles what they would
launch with triton.compile for a stub GPU target. CUDA: cuda_audit.py compiles csrc/ with nvcc as
csrc/build.py does, with ptxas's report. Workloads: workloads.py, read off the model presets.
Thresholds, table and JSON: report.py. Results are cached in $FASTDIFF_AUDIT_CACHE (default
~/.cache/fastdiff/audit), so a second run takes seconds.
"""
from __future__ import annotations

import os
from pathlib import Path

from .arch import ARCHS, floor_us
from . import report  # noqa: F401  (fastdiff.audit.report)
from .report import row_id, summary, table, violations, write_json
from .workloads import DTYPES, Workload, attention_workload, group_norm_workload, model_names, model_workloads

OPS = ("attention", "group_norm", "adaln", "qk_norm_rope", "sampler_step", "cfg_combine")
BACKENDS = ("triton", "cuda")


def default_cache_dir() -> Path:
    env = os.environ.get("FASTDIFF_AUDIT_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastdiff" / "audit"


def check_names(archs=None, workloads=None, dtypes=None, backends=None) -> None:
    """Raise ValueError naming the argument for the first unknown name."""
    for arg, given, known in (("arch", archs, list(ARCHS)), ("workload", workloads, [*model_names(), *OPS]),
                              ("dtype", dtypes, list(DTYPES)), ("backend", backends, list(BACKENDS))):
        for name in given or ():
            if name not in known:
                raise ValueError(f"{arg}: unknown {name!r} (choose from {', '.join(known)})")


def select(workloads=None, dtypes=("fp16", "bf16"), cache_dir=None) -> list[Workload]:
    """The workloads of the named models (sd15, sdxl, ..., flux-dev) restricted to the named ops
    (attention, group_norm, adaln, qk_norm_rope, sampler_step, cfg_combine); no model named: all of them."""
    names = list(workloads or ())
    models = [n for n in names if n not in OPS] or None
    ops = [n for n in names if n in OPS] or list(OPS)
    return [w for w in model_workloads(models, dtypes, cache_dir) if w.op in ops]


def run(archs=("sm_80", "sm_86", "sm_90a"), workloads=None, dtypes=("fp16", "bf16"), backends=BACKENDS,
        cache_dir=None, jobs=None, extra_workloads=()) -> list[dict]:
    """Compile and inspect every kernel at every selected workload for every arch: one dict per
    (backend, arch, kernel, workload) for Triton, per (arch, instantiation) for CUDA. Each row's
    `violations(row)` says which thresholds it breaks. Compiles run in `jobs` processes (default:
    one per CPU) and are cached in cache_dir."""
    check_names(archs, workloads, dtypes, backends)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    arch_list = [ARCHS[a] for a in archs]
    rows: list[dict] = []
    if "triton" in backends:
        from . import triton_audit

        ws = select(workloads, dtypes, cache_dir) + list(extra_workloads)
        floors = {w.name: floor_us(*w.bytes_and_flops()) for w in ws}
        for row in triton_audit.audit_anywhere(ws, arch_list, cache_dir, jobs):
            rows.append({**row, "floor_us": floors[row["workload"]]})
    if "cuda" in backends:
        from . import cuda_audit

        rows += [r for r in cuda_audit.audit(arch_list, cache_dir, jobs or 2) if r.get("dtype") in (*dtypes, "?", None)]
    return rows


__all__ = ["run", "select", "check_names", "table", "summary", "violations", "row_id", "write_json", "ARCHS",
           "Workload", "attention_workload", "group_norm_workload", "model_names", "default_cache_dir"]
