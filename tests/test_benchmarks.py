"""The benchmarks' bookkeeping, on the CPU: each row is saved as it completes, a row that raises is
recorded with its error while the run goes on, the exit status says a row failed, and
record_auto.py takes the measured backend orders from such files."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastdiff import backends

pytestmark = pytest.mark.slow  # runs the benchmark scripts

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = tuple(sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "common"))


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_benchmarks_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load("common")
record_auto = _load("record_auto")


def _saved(results):
    return json.loads(results.path.read_text())


def test_a_failing_row_is_recorded_and_the_run_goes_on(tmp_path):
    results = common.Results("demo", ["case", "ms"], folder=tmp_path)
    done = []
    for case in ("a", "b", "c"):
        with results.attempt(case=case):
            if case == "b":
                raise ValueError("bad shape")
            results.add({"case": case, "ms": 1.5})
            assert _saved(results)["rows"][-1] == {"case": case, "ms": 1.5}  # on disk at once
        done.append(case)
    assert done == ["a", "b", "c"]
    rows = _saved(results)["rows"]
    assert [r["case"] for r in rows] == ["a", "b", "c"]
    assert rows[1] == {"case": "b", "error": "ValueError: bad shape"}
    assert _saved(results)["failed"] == 1
    assert results.finish() == 1


def test_call_returns_none_for_a_failed_step(tmp_path):
    results = common.Results("demo", ["case"], folder=tmp_path)
    assert results.call({"case": "x"}, lambda a, b: a + b, 1, b=2) == 3
    assert results.call({"case": "y"}, lambda: 1 / 0) is None
    assert _saved(results)["rows"] == [{"case": "y", "error": "ZeroDivisionError: division by zero"}]
    assert results.finish() == 1


def test_time_records_every_impl_and_leaves_out_the_failing_one(tmp_path):
    results = common.Results("demo", ["shape", "impl", "ms"], folder=tmp_path)

    def boom(x):
        raise RuntimeError("no kernel image is available for execution on the device")
    impls = {"torch": torch.neg, "cuda": boom, "triton": torch.abs}
    times, rows = results.time({"shape": "s"}, impls, [(torch.ones(4),)], lambda ms: {"ms": ms})
    assert set(times) == set(rows) == {"torch", "triton"}
    saved = _saved(results)["rows"]
    assert [(r["impl"], "error" in r) for r in saved] == [("torch", False), ("cuda", True), ("triton", False)]
    assert saved[1]["error"].startswith("RuntimeError: no kernel image")

    # The backend order for auto holds the backends that ran, fastest first.
    from fastdiff import backends
    desc = backends.Inputs(torch.device("cuda"), torch.float16, numel=4)
    case = common.auto_case("group_norm", desc, {"torch": 2.0, "triton": 1.0, "torch eager": 0.5})
    assert case["order"] == ["triton", "torch"]
    assert common.auto_case("group_norm", desc, {"torch eager": 0.5}) is None


def test_finish_is_zero_without_failures(tmp_path, capsys):
    results = common.Results("demo", ["case", "ms"], folder=tmp_path)
    results.add({"case": "a", "ms": 1.0})
    assert results.finish() == 0
    assert "case  ms" in capsys.readouterr().out


def test_record_auto_reads_files_with_failed_rows(tmp_path, monkeypatch):
    from fastdiff import backends
    (tmp_path / "results").mkdir()
    results = common.Results("ops", ["impl"], folder=tmp_path / "results")
    results.add({"impl": "torch", "us": 3.0})
    results.fail({"impl": "cuda"}, RuntimeError("boom"))
    desc = backends.Inputs(torch.device("cuda"), torch.float16, numel=4)
    results.add_auto(common.auto_case("cfg_combine", desc, {"torch": 3.0}))
    results.finish()
    data = _saved(results)
    data["auto"].append({**data["auto"][0], "order": []})  # a case where nothing ran
    results.path.write_text(json.dumps(data))
    monkeypatch.setattr(record_auto, "TABLE", tmp_path / "measured.json")
    record_auto.main([str(tmp_path / "results")])
    table = json.loads((tmp_path / "measured.json").read_text())
    device = data["env"]["device"]
    assert [c["order"] for c in table[device]["cfg_combine"]] == [["torch"]]
    assert "results/" in table[device]["provenance"]


def test_record_auto_merges_cases_of_one_key_by_summed_time():
    a = {"dtype": "float16", "numel": 8, "order": ["triton", "cuda", "torch"], "us": {"triton": 1.0, "cuda": 2.0,
                                                                                    "torch": 9.0}}
    b = {**a, "order": ["cuda", "triton", "torch"], "us": {"triton": 5.0, "cuda": 3.0, "torch": 6.0}}
    other = {**a, "numel": 16}
    assert record_auto.merged([a, other, b], "demo") == [
        {"dtype": "float16", "numel": 8, "order": ["cuda", "triton", "torch"]},
        {"dtype": "float16", "numel": 16, "order": ["triton", "cuda", "torch"]}]
    with pytest.raises(SystemExit, match="without times"):
        record_auto.merged([a, {k: v for k, v in b.items() if k != "us"}], "demo")


def test_record_auto_checks_its_argument(tmp_path):
    with pytest.raises(SystemExit, match="RESULTS_FOLDER"):
        record_auto.main([str(tmp_path / "missing")])


def test_the_scripts_import():
    """Every script imports (what it takes from common.py exists), in one fresh process: importing
    bench_models sets the compile cache folders, which must not reach this one."""
    code = f"import sys; sys.path.insert(0, {str(BENCH)!r}); import " + ", ".join(SCRIPTS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-4000:]


def test_host_cost_benchmark_runs_on_the_cpu(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH / "bench_host.py"), "--calls", "3", "--repeats", "1",
                          "--results", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    rows = json.loads((tmp_path / "host.json").read_text())["rows"]
    assert {r["op"] for r in rows} == set(backends.OPS)
    assert all(r["op call us"] > 0 and r["bare launch us"] > 0 for r in rows)
