"""The tree stays clean under the configured linters: ruff (pyproject.toml) over the Python code,
clang-format (.clang-format) over csrc/. Each check skips where its tool is not installed."""
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CSRC = sorted(p for p in (ROOT / "csrc").rglob("*") if p.suffix in (".cu", ".cuh", ".cpp", ".h"))


def _tool(name):
    local = pathlib.Path(sys.executable).with_name(name)  # the test environment's own copy first
    return str(local) if local.exists() else shutil.which(name)


@pytest.mark.skipif(_tool("ruff") is None, reason="needs ruff")
def test_python_is_clean_under_ruff():
    out = subprocess.run([_tool("ruff"), "check", "--no-cache", "--output-format", "concise", str(ROOT)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


@pytest.mark.skipif(_tool("clang-format") is None, reason="needs clang-format")
def test_csrc_is_clean_under_clang_format():
    assert CSRC
    out = subprocess.run([_tool("clang-format"), "--dry-run", "-Werror", *map(str, CSRC)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
