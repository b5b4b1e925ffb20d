"""csrc/ compiles with nvcc on its own, and a plain C++ program builds against the headers alone.

Compile only where nvcc is present; the program runs only where a GPU is. The code is built for
sm_80 with its PTX (which the driver compiles for any newer GPU) and, where torch sees a GPU, for
that GPU's architecture too.
"""
import os
import pathlib
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
NVCC = next((p for p in (os.environ.get("CUDA_HOME", "") + "/bin/nvcc", "/usr/local/cuda/bin/nvcc",
                         shutil.which("nvcc") or "") if p and os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(NVCC is None or not CSRC.exists(), reason="needs nvcc and the csrc/ sources")


def _gencode() -> list[str]:
    """sm_80 code and compute_80 PTX, plus the code of the GPU present (if any): the example runs
    on whatever GPU the tests find, not on sm_80 alone."""
    flags = ["-gencode=arch=compute_80,code=[sm_80,compute_80]"]
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        if (major, minor) != (8, 0):
            flags.append(f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}")
    return flags


def _nvcc(*args):
    out = subprocess.run([NVCC, "-std=c++17", "-O2", *_gencode(),
                          f"-I{CSRC / 'include'}", *map(str, args)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]


def test_every_kernel_compiles(tmp_path):
    sources = sorted(CSRC.glob("*.cu"))
    assert sources
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda src: _nvcc("-c", src, "-o", tmp_path / (src.name + ".o")), sources))


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    exe = tmp_path_factory.mktemp("example") / "run_ops"
    _nvcc(CSRC / "examples" / "run_ops.cpp", *sorted(CSRC.glob("*.cu")), "-o", exe)
    return exe


def test_example_program_builds_against_the_headers(example):
    assert example.exists()


@pytest.mark.gpu
def test_example_program_runs(example):
    out = subprocess.run([str(example)], capture_output=True, text=True)
    assert out.returncode == 0 and "PASS" in out.stdout, out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_cmake_builds_the_static_library_and_example(tmp_path):
    build = tmp_path / "build"
    for cmd in (["cmake", "-S", CSRC, "-B", build, "-DCMAKE_CUDA_ARCHITECTURES=80",
                 f"-DCMAKE_CUDA_COMPILER={NVCC}"],
                ["cmake", "--build", build, "-j", "2"],
                ["cmake", "--install", build, "--prefix", tmp_path / "prefix"]):
        out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
        assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert (build / "run_ops").exists() and (tmp_path / "prefix" / "lib" / "libfastdiff.a").exists()
    assert (tmp_path / "prefix" / "include" / "fastdiff" / "group_norm.h").exists()
