"""`fastdiff audit`: its arguments and what it runs (registered in fastdiff/cli.py)."""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", action="append", default=None, metavar="ARCH",
                   help="sm_80, sm_86 or sm_90a; repeatable (default: all three)")
    p.add_argument("--workload", action="append", default=None, metavar="NAME",
                   help="a model (sd15, sd2, sdxl, dit-xl2-256, dit-xl2-512, vae-512, vae-1024, sd3-medium, "
                        "sd35-large, flux-dev, builtin-unet, builtin-dit, builtin-vae) or an op (attention, "
                        "group_norm, adaln, qk_norm_rope, sampler_step, cfg_combine); "
                        "repeatable (default: every model, every op)")
    p.add_argument("--dtype", action="append", default=None, metavar="DTYPE",
                   help="fp16, bf16 or fp32; repeatable (default: fp16 and bf16)")
    p.add_argument("--backend", action="append", default=None, metavar="NAME",
                   help="triton or cuda; repeatable (default: both)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write every row, with its violations, as JSON")
    p.add_argument("--jobs", type=int, default=None, metavar="N", help="compile processes (default: one per CPU)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="where compile results are kept (default: $FASTDIFF_AUDIT_CACHE or ~/.cache/fastdiff/audit)")


def run(args) -> int:
    from . import ARCHS, BACKENDS, DTYPES, OPS, model_names, report
    from . import run as audit

    for flag, given, known in (("--arch", args.arch, list(ARCHS)),
                               ("--workload", args.workload, [*model_names(), *OPS]),
                               ("--dtype", args.dtype, list(DTYPES)), ("--backend", args.backend, list(BACKENDS))):
        bad = [g for g in given or () if g not in known]
        if bad:
            print(f"fastdiff audit: {flag} {bad[0]!r} is not one of {', '.join(known)}", file=sys.stderr)
            return 2
    if args.jobs is not None and args.jobs < 1:
        print("fastdiff audit: --jobs must be at least 1", file=sys.stderr)
        return 2
    rows = audit(archs=args.arch or list(ARCHS), workloads=args.workload, dtypes=args.dtype or ("fp16", "bf16"),
                 backends=args.backend or BACKENDS, cache_dir=args.cache, jobs=args.jobs)
    print(report.table(rows))
    print(report.summary(rows))
    if args.json:
        report.write_json(rows, args.json)
        print(f"fastdiff audit: {len(rows)} rows -> {args.json}")
    return 0
