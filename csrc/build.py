"""The CUDA build's shared facts for Python: csrc/build.json, and the one rule that finds nvcc.

setup.py and tests/csrc/test_build.py load this file by its path (it is not part of the package);
CMakeLists.txt reads build.json itself and asks this file for nvcc:

    python3 csrc/build.py nvcc     # prints the nvcc every build uses; exits 1 when there is none
"""
import json
import os
import shutil
import sys
from pathlib import Path

CSRC = Path(__file__).resolve().parent
SPEC = json.loads((CSRC / "build.json").read_text())


def find_nvcc() -> str | None:
    """$CUDA_HOME (or $CUDA_PATH), then /usr/local/cuda, then PATH; the real path, or None.

    The toolkit's own nvcc comes first: one on PATH may be a wrapper script outside the toolkit,
    beside which neither the headers nor the libraries lie."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    for cand in ([os.path.join(home, "bin", "nvcc")] if home else []) + ["/usr/local/cuda/bin/nvcc",
                                                                      shutil.which("nvcc")]:
        if cand and os.path.exists(cand):
            return os.path.realpath(cand)
    return None


def cuda_home(nvcc: str) -> str:
    return os.path.dirname(os.path.dirname(nvcc))


def archs(environ=os.environ) -> list[str]:
    """The SM architectures to build: FASTDIFF_CUDA_ARCHS ("80;90a" or "80,90a") or build.json's."""
    env = environ.get("FASTDIFF_CUDA_ARCHS")
    if env is None:
        return list(SPEC["archs"])
    return [a.strip() for a in env.replace(",", ";").split(";") if a.strip()]


def gencode(arch_list) -> list[str]:
    """Each arch's own code only (CMake's "A-real"), no PTX."""
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in arch_list]


def kernels() -> list[Path]:
    return [CSRC / k for k in SPEC["kernels"]]


def bindings() -> list[Path]:
    return [CSRC / b for b in SPEC["bindings"]]


def include_dir() -> Path:
    return CSRC / SPEC["include_dir"]


def example() -> Path:
    return CSRC / SPEC["example"]


def nvcc_flags(arch_list) -> list[str]:
    """What nvcc compiles every kernel with (before -c SRC -o OBJ)."""
    return [f"-std=c++{SPEC['cxx_standard']}", *SPEC["nvcc_flags"], *gencode(arch_list), f"-I{include_dir()}"]


def cxx_flags() -> list[str]:
    """What the host compiler compiles the Python bindings with (plus pybind11's and Python's headers)."""
    return [f"-std=c++{SPEC['cxx_standard']}", *SPEC["cxx_flags"], f"-I{include_dir()}"]


if __name__ == "__main__":
    if sys.argv[1:] != ["nvcc"]:
        sys.exit("usage: build.py nvcc")
    nvcc = find_nvcc()
    if nvcc is None:
        sys.exit("nvcc not found (set CUDA_HOME)")
    print(nvcc)
