"""benchmarks/bench_pipeline.py runs on the CPU (tiny pipelines, --tiny): every impl row is
recorded, the accelerated one ran the fused loop and holds no second copy of the weights."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the benchmark script

pytest.importorskip("diffusers")
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_pipeline.py"


def test_bench_pipeline_tiny(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--repeats", "1", "--cases", "sd15", "--impls",
                           "diffusers eager", "fastdiff.accelerate", "--results", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "pipeline.json").read_text())["rows"]
    assert [r["impl"] for r in rows] == ["diffusers eager", "fastdiff.accelerate"]
    eager, fast = rows
    assert fast["fused"] is True and fast["images/s"] > 0 and fast["ms/step"] > 0
    assert fast["weights MiB after"] == fast["weights MiB before"] == eager["weights MiB before"]
