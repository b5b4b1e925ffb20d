"""Build: kernels/ installs as fastdiff._triton; csrc/ compiles into fastdiff._C when nvcc is found,
and into fastdiff._C_host (the same kernels for the CPU, csrc/host) when a C++17 compiler is.

FASTDIFF_BUILD_CUDA=auto|0|1   auto builds fastdiff._C if nvcc is found, 1 requires it, 0 skips it.
FASTDIFF_BUILD_HOST=auto|0|1   the same for fastdiff._C_host and the C++ compiler ($CXX or c++).
FASTDIFF_CUDA_ARCHS="80;90a"   the SM architectures to compile for (semicolon or comma separated);
                               the default, the sources and the flags are csrc/build.json's.

fastdiff._C links only the CUDA runtime (statically) and pybind11, never libtorch: Python hands it
data pointers, shapes, strides, a dtype code and the stream. The same objects also go into
libfastdiff.a, installed with the headers for programs that embed the kernels without Python.
"""
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
# csrc/build.py: the sources, flags and archs in csrc/build.json (which CMake reads too) and the
# rule that finds nvcc, shared with tests/csrc/test_build.py.
BUILD_PY = os.path.join(ROOT, "csrc", "build.py")


def csrc_build():
    spec = importlib.util.spec_from_file_location("fastdiff_csrc_build", BUILD_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildCuda(build_ext):
    """Compiles fastdiff._C with nvcc and fastdiff._C_host with the C++ compiler, each with ninja (all
    sources in parallel)."""

    def build_extension(self, ext):
        if ext.name == "fastdiff._C_host":
            out = os.path.abspath(self.get_ext_fullpath(ext.name))
            os.makedirs(os.path.dirname(out), exist_ok=True)
            return csrc_build().build_host(os.path.join(self.build_temp, "csrc_host"), {out: {}})
        if ext.name != "fastdiff._C":
            return super().build_extension(ext)
        b = csrc_build()
        nvcc, ninja = b.find_nvcc(), b.ninja_bin()
        if not nvcc or not ninja:
            raise RuntimeError(f"fastdiff: building fastdiff._C needs nvcc and ninja (nvcc={nvcc}, ninja={ninja})")
        cuda_home = b.cuda_home(nvcc)
        import pybind11

        build = os.path.abspath(os.path.join(self.build_temp, "csrc"))
        os.makedirs(build, exist_ok=True)
        out = os.path.abspath(self.get_ext_fullpath(ext.name))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        lib_dir = os.path.join(os.path.dirname(out), "lib")
        os.makedirs(lib_dir, exist_ok=True)
        cu = [str(p) for p in b.kernels()]
        cpp = [str(p) for p in b.bindings()]
        cxx = os.environ.get("CXX", "c++")
        nvcc_flags = shlex.join(b.nvcc_flags(b.archs()) + [f"-I{cuda_home}/include"])
        cxx_flags = shlex.join(b.cxx_flags() + [f"-I{cuda_home}/include", f"-I{pybind11.get_include()}",
                                                f"-I{sysconfig.get_paths()['include']}"])
        rules = f"""
rule nvcc
  command = {nvcc} {nvcc_flags} -MD -MF $out.d -c $in -o $out
  depfile = $out.d
rule cxx
  command = {cxx} {cxx_flags} -MD -MF $out.d -c $in -o $out
  depfile = $out.d
rule ar
  command = rm -f $out && ar rcs $out $in
rule link
  command = {cxx} -shared $in -o $out -L{cuda_home}/lib64 -L{cuda_home}/lib -lcudart_static -ldl -lrt -lpthread
"""
        lines = [rules]
        objs = []
        for src in cu + cpp:
            obj = os.path.join(build, os.path.basename(src) + ".o")
            lines.append(f"build {obj}: {'nvcc' if src.endswith('.cu') else 'cxx'} {src}")
            objs.append(obj)
        kernel_objs = objs[:len(cu)]
        lines.append(f"build {lib_dir}/libfastdiff.a: ar {' '.join(kernel_objs)}")
        lines.append(f"build {out}: link {' '.join(objs)}")
        with open(os.path.join(build, "build.ninja"), "w") as f:
            f.write("\n".join(lines) + "\n")
        jobs = os.environ.get("MAX_JOBS", str(os.cpu_count() or 2))
        subprocess.check_call([ninja, "-C", build, "-j", jobs])
        # Headers beside the static library, for C++ programs that embed the kernels.
        shutil.copytree(b.include_dir(), os.path.join(os.path.dirname(out), "include"), dirs_exist_ok=True)


def cuda_extensions():
    mode = os.environ.get("FASTDIFF_BUILD_CUDA", "auto").lower()
    if mode not in ("auto", "0", "1"):
        sys.exit(f"fastdiff: FASTDIFF_BUILD_CUDA must be auto, 0 or 1, got {mode!r}")
    if mode == "0" or not os.path.exists(BUILD_PY):
        return []
    if csrc_build().find_nvcc() is None:
        if mode == "1":
            sys.exit("fastdiff: FASTDIFF_BUILD_CUDA=1 but nvcc was not found (set CUDA_HOME)")
        print("fastdiff: nvcc not found, building without fastdiff._C (torch and triton backends only)")
        return []
    return [Extension("fastdiff._C", sources=[])]


def host_extensions():
    mode = os.environ.get("FASTDIFF_BUILD_HOST", "auto").lower()
    if mode not in ("auto", "0", "1"):
        sys.exit(f"fastdiff: FASTDIFF_BUILD_HOST must be auto, 0 or 1, got {mode!r}")
    if mode == "0" or not os.path.exists(BUILD_PY):
        return []
    if csrc_build().find_cxx() is None:
        if mode == "1":
            sys.exit("fastdiff: FASTDIFF_BUILD_HOST=1 but no C++ compiler was found (set CXX)")
        print("fastdiff: no C++ compiler found, building without fastdiff._C_host (no CUDA emulation)")
        return []
    return [Extension("fastdiff._C_host", sources=[])]


setup(
    packages=find_packages(include=["fastdiff", "fastdiff.*"]) + ["fastdiff._triton"],
    package_dir={"fastdiff": "fastdiff", "fastdiff._triton": "kernels"},
    # The built-in default models ship with the package.
    package_data={"fastdiff": ["measured.json"],
                  "fastdiff.builtin": ["weights/*.safetensors", "weights/*.csv", "weights/*.json"]},
    ext_modules=cuda_extensions() + host_extensions(),
    cmdclass={"build_ext": BuildCuda},
)
