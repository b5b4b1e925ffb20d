"""Runs the Triton audit in a process of its own: `python -m fastdiff.audit._worker` reads
{"workloads": [...], "archs": [...], "cache_dir": ..., "jobs": ...} as JSON on stdin and writes
the rows as JSON on stdout. A process that imported Triton with TRITON_INTERPRET=1 (the test
suite) holds Triton's own library functions as interpreted ones and cannot compile for a GPU."""
import json
import sys


def main() -> int:
    spec = json.load(sys.stdin)
    from . import triton_audit
    from .arch import ARCHS
    from .workloads import _decode

    compiler = triton_audit.Compiler(spec["cache_dir"], spec["jobs"])
    rows = triton_audit.audit([_decode(w) for w in spec["workloads"]], [ARCHS[a] for a in spec["archs"]], compiler,
                              spec.get("overrides"))
    json.dump(rows, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
