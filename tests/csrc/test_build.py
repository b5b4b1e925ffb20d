"""csrc/ compiles with nvcc on its own, and a plain C++ program builds against the headers alone.

The sources, flags and architectures are csrc/build.json's and nvcc is csrc/build.py's, as in
setup.py and CMakeLists.txt. Compile only where nvcc is present; the program runs only where a GPU
is. The kernels are built for build.json's architectures (or FASTDIFF_CUDA_ARCHS), as the package
ships them, plus the architecture of the GPU that torch sees, if any, so the example runs there.
"""
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
_spec = importlib.util.spec_from_file_location("fastdiff_csrc_build", CSRC / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)
NVCC = build.find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="needs nvcc")


def test_build_json_names_every_source():
    """build.json lists each kernel (a new .cu file must be added there) and the files it names exist."""
    assert sorted(p.name for p in build.kernels()) == sorted(p.name for p in CSRC.glob("*.cu"))
    for path in [*build.bindings(), build.example(), build.include_dir() / "fastdiff"]:
        assert path.exists(), path
    assert build.archs({}) == json.loads((CSRC / "build.json").read_text())["archs"]
    assert build.archs({"FASTDIFF_CUDA_ARCHS": "86, 90a;"}) == ["86", "90a"]


def _archs() -> list[str]:
    archs = build.archs()
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        if f"{major}{minor}" not in archs:
            archs.append(f"{major}{minor}")
    return archs


def _run(cmd):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    assert out.returncode == 0, (" ".join(map(str, cmd)) + "\n" + out.stdout + out.stderr)[-4000:]


@pytest.fixture(scope="module")
def kernel_objects(tmp_path_factory):
    """Each kernel compiled as setup.py compiles it (two at a time)."""
    out = tmp_path_factory.mktemp("kernels")
    flags = build.nvcc_flags(_archs())
    objs = [out / (src.name + ".o") for src in build.kernels()]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda so: _run([NVCC, *flags, "-c", so[0], "-o", so[1]]), zip(build.kernels(), objs)))
    return objs


@pytest.mark.slow  # compiles the CUDA kernels: minutes on 2 cores
@needs_nvcc
def test_every_kernel_compiles(kernel_objects):
    assert kernel_objects and all(o.exists() for o in kernel_objects)


@pytest.fixture(scope="module")
def example(kernel_objects, tmp_path_factory):
    """The example program: its C++ with the headers alone, linked with the kernels (nvcc drives
    the link for the static CUDA runtime)."""
    exe = tmp_path_factory.mktemp("example") / "run_ops"
    _run([NVCC, f"-std=c++{build.SPEC['cxx_standard']}", f"-I{build.include_dir()}", build.example(),
          *kernel_objects, "-o", exe])
    return exe


@pytest.mark.slow  # compiles the CUDA kernels: minutes on 2 cores
@needs_nvcc
def test_example_program_builds_against_the_headers(example):
    assert example.exists()


@needs_nvcc
@pytest.mark.gpu
def test_example_program_runs(example):
    out = subprocess.run([str(example)], capture_output=True, text=True)
    assert out.returncode == 0 and "PASS" in out.stdout, out.stdout + out.stderr


@pytest.mark.slow  # compiles the CUDA kernels: minutes on 2 cores
@needs_nvcc
@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_cmake_builds_the_static_library_and_example(tmp_path):
    """CMake reads build.json: its default architectures are build.json's, each as its own code
    only. The build itself is for one architecture (the first, plus the GPU present) to save time."""
    b = tmp_path / "build"
    _run(["cmake", "-S", CSRC, "-B", b, f"-DCMAKE_CUDA_COMPILER={NVCC}"])
    if "CUDAARCHS" not in os.environ:
        default = ";".join(a + "-real" for a in build.archs())
        assert f"CMAKE_CUDA_ARCHITECTURES:STRING={default}\n" in (b / "CMakeCache.txt").read_text()
    archs = [build.SPEC["archs"][0]] + [a for a in _archs() if a not in build.archs()]
    _run(["cmake", "-S", CSRC, "-B", b, "-DCMAKE_CUDA_ARCHITECTURES=" + ";".join(a + "-real" for a in archs)])
    _run(["cmake", "--build", b, "-j", "2"])
    _run(["cmake", "--install", b, "--prefix", tmp_path / "prefix"])
    assert (b / "run_ops").exists() and (tmp_path / "prefix" / "lib" / "libfastdiff.a").exists()
    for header in (CSRC / "include" / "fastdiff").glob("*.h"):
        assert (tmp_path / "prefix" / "include" / "fastdiff" / header.name).exists()
