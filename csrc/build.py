"""The CUDA build's shared facts for Python: csrc/build.json, the one rule that finds nvcc, and the
host build (the kernels compiled for the CPU against csrc/host, no nvcc).

setup.py and the tests in tests/csrc load this file by its path (it is not part of the package);
CMakeLists.txt reads build.json itself and asks this file for nvcc:

    python3 csrc/build.py nvcc     # prints the nvcc every build uses; exits 1 when there is none
    python3 csrc/build.py host DIR [--sanitize address|thread] [--debug]
                                   # builds fastdiff._C_host and the example (run_ops) into DIR
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
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


def find_cxx() -> str | None:
    """$CXX, else c++ on PATH: the host compiler, or None."""
    return shutil.which(os.environ.get("CXX", "c++"))


def ninja_bin() -> str | None:
    try:
        import ninja
        return os.path.join(ninja.BIN_DIR, "ninja")
    except ImportError:
        return shutil.which("ninja")


def host_flags(extra=()) -> list[str]:
    """What the host build compiles kernels, bindings and example with: csrc/host's headers first, so
    they stand in for the toolkit's."""
    return [f"-std=c++{SPEC['cxx_standard']}", *SPEC["host_flags"], f"-I{CSRC / SPEC['host_dir']}",
            f"-I{include_dir()}", f"-I{CSRC}", *extra]


def host_module_name() -> str:
    return "_C_host" + sysconfig.get_config_var("EXT_SUFFIX")


def build_host(build_dir, modules: dict, *, example=None, extra_flags=(), cxx=None) -> None:
    """Builds with ninja, in build_dir, each module of `modules` ({its path: {kernel file name: the
    source compiled in that kernel's place}}, the replacements being the tests' broken variants) and,
    when `example` is a path, the example program there. They share the objects of shared sources.
    extra_flags (a sanitizer's, a debugger's) apply to all but the Python bindings, which hold no
    kernel code. Paths may not contain spaces."""
    import pybind11

    cxx, ninja = cxx or find_cxx(), ninja_bin()
    if not cxx or not ninja:
        raise RuntimeError(f"fastdiff: the host build needs a C++17 compiler and ninja (c++={cxx}, ninja={ninja})")
    build = Path(build_dir).resolve()
    (build / "obj").mkdir(parents=True, exist_ok=True)
    flags = " ".join(host_flags(extra_flags))
    bind = " ".join(host_flags()) + f" -DFASTDIFF_MODULE=_C_host -fvisibility=hidden -I{pybind11.get_include()} " \
                                    f"-I{sysconfig.get_paths()['include']}"
    lines = [f"""rule cxx
  command = {cxx} $flags -MD -MF $out.d -x c++ -c $in -o $out
  depfile = $out.d
rule module
  command = {cxx} {flags} -shared $in -o $out
rule program
  command = {cxx} {flags} $in -o $out
"""]
    objects = {}

    def obj(src: Path, src_flags=flags) -> str:
        key = str(src)
        if key not in objects:
            tag = hashlib.sha1(key.encode()).hexdigest()[:8]
            objects[key] = f"{build}/obj/{src.name}.{tag}.o"
            lines.append(f"build {objects[key]}: cxx {src}\n  flags = {src_flags}")
        return objects[key]

    common = [obj(CSRC / s) for s in SPEC["host_sources"]]
    for out, replace in modules.items():
        kernel_objs = [obj(Path(replace.get(k.name, k))) for k in kernels()]
        objs = kernel_objs + common + [obj(b, bind) for b in bindings()]
        lines.append(f"build {Path(out).resolve()}: module {' '.join(objs)}")
    if example is not None:
        objs = [obj(k) for k in kernels()] + common + [obj(CSRC / SPEC["example"])]
        lines.append(f"build {Path(example).resolve()}: program {' '.join(objs)}")
    (build / "build.ninja").write_text("\n".join(lines) + "\n")
    jobs = os.environ.get("MAX_JOBS", str(os.cpu_count() or 2))
    done = subprocess.run([ninja, "-C", str(build), "-j", jobs], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"fastdiff: the host build in {build} failed:\n{(done.stdout + done.stderr)[-6000:]}")


def main(argv) -> None:
    parser = argparse.ArgumentParser(prog="build.py")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("nvcc", help="print the nvcc every build uses; exit 1 when there is none")
    host = sub.add_parser("host", help="build fastdiff._C_host and the example for the CPU into DIR")
    host.add_argument("dir")
    host.add_argument("--sanitize", choices=sorted(SPEC["sanitize"]))
    host.add_argument("--debug", action="store_true", help="-O0 -g, for a debugger")
    args = parser.parse_args(argv)
    if args.command == "nvcc":
        nvcc = find_nvcc()
        if nvcc is None:
            sys.exit("nvcc not found (set CUDA_HOME)")
        print(nvcc)
        return
    extra = (SPEC["sanitize"][args.sanitize] if args.sanitize else []) + (["-O0", "-g"] if args.debug else [])
    out = Path(args.dir).resolve()
    build_host(out / "build", {out / host_module_name(): {}}, example=out / "run_ops", extra_flags=extra)
    print(out / host_module_name())
    print(out / "run_ops")


if __name__ == "__main__":
    main(sys.argv[1:])
