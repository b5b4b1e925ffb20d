"""The CUDA kernels on the CPU (fastdiff._C_host, csrc/host): fp16 and bf16 rounding bit for bit,
the example program, and the cuda-backend tests of tests/ops under AddressSanitizer with UBSan
and under ThreadSanitizer, each shown to catch what it is there for on a broken variant of a real
kernel: one barrier skipped (every __syncthreads of group_norm.cu and attention.cu in turn), a read
past the end, two MMA fragment registers swapped.
"""
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch

from fastdiff import backends, ops
from fastdiff.testing import skip_unless_backend

ROOT = pathlib.Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
_spec = importlib.util.spec_from_file_location("fastdiff_csrc_build", CSRC / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_conversions_round_to_nearest_even_as_torch(dtype):
    """d = x + m over every 16-bit pattern of x (subnormals, infinities, NaN) and random m: the sum is
    the same fp32 number in the kernel and in torch, so its rounding to dtype must match bit for bit."""
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    m = (torch.randn(x.shape) * torch.exp2(torch.rand(x.shape) * 40 - 20)).to(dtype)
    skip_unless_backend("cuda", "sampler_step", backends.Inputs(x.device, dtype))
    with ops.use_backend("cuda"):
        _, d = ops.sampler_step(x, m, (1.0, 1.0, 0.0, 1.0, 0.0, 0.0))
    want = (x.float() + m.float()).to(dtype)
    assert torch.equal(d.isnan(), want.isnan())
    assert torch.equal(d[~d.isnan()], want[~want.isnan()])


# --- sanitizer builds (slow: each compiles every kernel once more) ---

KERNEL_TESTS = [str(ROOT / "tests" / "ops" / name)
                for name in ("test_group_norm.py", "test_guidance.py", "test_attention.py")]
# Every cuda test but most of the attention head-dim x key-count matrix: its largest case, keys
# streamed through shared memory in chunks, stays.
KERNEL_SELECTION = "cuda and (not key_chunks or 512-160)"
CHUNKED_ATTENTION = str(ROOT / "tests" / "ops" / "test_attention.py") + \
    "::test_cuda_attention_head_dims_and_key_chunks[512-160-torch.float16]"

# Broken variants of the real sources: (file, text, replacement), the text found exactly once.
READ_PAST_THE_END = ("guidance.cu", "pv = *reinterpret_cast<const VT*>(prev + i);",
                     "pv = *reinterpret_cast<const VT*>(prev + i + W);")
SWAPPED_FRAGMENTS = ("attention.cu", "qa[kk][1] = word(qw + 8 * QP + kk * 16), qa[kk][2] = word(qw + kk * 16 + 8)",
                     "qa[kk][1] = word(qw + kk * 16 + 8), qa[kk][2] = word(qw + 8 * QP + kk * 16)")


def _runtime(sanitizer: str):
    """The sanitizer's runtime library, which Python must preload to host an instrumented module."""
    cxx = build.find_cxx()
    if cxx is None or build.ninja_bin() is None or not sys.platform.startswith("linux"):
        pytest.skip("needs Linux, a C++ compiler and ninja")
    lib = {"address": "libasan.so", "thread": "libtsan.so"}[sanitizer]
    path = subprocess.run([cxx, f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path):
        pytest.skip(f"{cxx} has no {lib}")
    return path


def _variant(out: pathlib.Path, broken) -> dict:
    file, text, replacement = broken
    source = (CSRC / file).read_text()
    assert source.count(text) == 1, f"{file} no longer holds the text the broken variant replaces"
    path = out / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source.replace(text, replacement))
    return {file: path}


@pytest.fixture(scope="module")
def address(tmp_path_factory):
    """Modules under AddressSanitizer + UBSan: the real kernels and the two broken variants, plus the
    example program, sharing their objects."""
    runtime = _runtime("address")
    out = tmp_path_factory.mktemp("address")
    mods = {name: out / name / build.host_module_name() for name in ("real", "overread", "swapped")}
    build.build_host(out / "build", {mods["real"]: {},
                                     mods["overread"]: _variant(out / "src1", READ_PAST_THE_END),
                                     mods["swapped"]: _variant(out / "src2", SWAPPED_FRAGMENTS)},
                     example=out / "run_ops", extra_flags=build.SPEC["sanitize"]["address"])
    return runtime, mods, out / "run_ops"


@pytest.fixture(scope="module")
def thread(tmp_path_factory):
    runtime = _runtime("thread")
    out = tmp_path_factory.mktemp("thread")
    module = out / build.host_module_name()
    build.build_host(out / "build", {module: {}}, extra_flags=build.SPEC["sanitize"]["thread"])
    return runtime, module


def _pytest(tmp_path, runtime, module, *args, **env):
    """pytest on the kernel tests in a fresh Python running `module` under its sanitizer, from
    tmp_path (so that the installed fastdiff is imported); (exit code, output, sanitizer reports)."""
    logs = tmp_path / "reports"
    logs.mkdir()
    options = f"log_path={logs / 'report'} halt_on_error=1"
    env = dict(os.environ, LD_PRELOAD=runtime, FASTDIFF_CUDA_EMULATE=str(module), CUDA_VISIBLE_DEVICES="",
               OMP_NUM_THREADS="1", ASAN_OPTIONS=options + " detect_leaks=0", UBSAN_OPTIONS=options,
               TSAN_OPTIONS=options, **env)
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", *args],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    reports = "".join(p.read_text() for p in sorted(logs.iterdir()))
    return out.returncode, out.stdout[-3000:] + out.stderr[-3000:], reports


@pytest.mark.slow
def test_example_runs_under_address_sanitizer(address):
    out = subprocess.run([str(address[2])], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("PASS"), out.stdout + out.stderr


@pytest.mark.slow
def test_kernels_pass_under_address_sanitizer(address, tmp_path):
    runtime, mods, _ = address
    code, out, reports = _pytest(tmp_path, runtime, mods["real"], *KERNEL_TESTS, "-k", KERNEL_SELECTION)
    assert code == 0 and not reports, reports[:6000] + out
    assert " passed" in out


@pytest.mark.slow
def test_kernels_pass_under_thread_sanitizer(thread, tmp_path):
    code, out, reports = _pytest(tmp_path, *thread, *KERNEL_TESTS, "-k", KERNEL_SELECTION)
    assert code == 0 and not reports, reports[:6000] + out
    assert " passed" in out


@pytest.mark.slow
def test_address_sanitizer_catches_a_read_past_the_end(address, tmp_path):
    runtime, mods, _ = address
    code, out, reports = _pytest(tmp_path, runtime, mods["overread"], KERNEL_TESTS[1],
                                 "-k", "cuda and test_sampler_step and both")
    assert code != 0 and "heap-buffer-overflow" in reports and "sampler_step_kernel" in reports, reports[:3000] + out


@pytest.mark.slow
def test_numerics_catch_swapped_mma_fragments(address, tmp_path):
    runtime, mods, _ = address
    code, out, reports = _pytest(tmp_path, runtime, mods["swapped"], CHUNKED_ATTENTION)
    assert code != 0 and not reports and "exceeds" in out, reports[:3000] + out


def _barriers(file):
    lines = (CSRC / file).read_text().splitlines()
    return [f"{file}:{i}" for i, line in enumerate(lines, 1) if re.search(r"\b__syncthreads\(\)", line)]


@pytest.mark.slow
@pytest.mark.parametrize("barrier", _barriers("group_norm.cu") + _barriers("attention.cu"))
def test_every_barrier_is_needed(thread, tmp_path, barrier):
    """The kernel tests fail, by a race ThreadSanitizer reports or by their numerics, with any one
    barrier of group_norm.cu or attention.cu skipped (FASTDIFF_EMULATE_DROP_BARRIER)."""
    tests = [CHUNKED_ATTENTION] if barrier.startswith("attention") else \
        [KERNEL_TESTS[0], "-k", "cuda_group_norm_paths and float32"]
    code, out, reports = _pytest(tmp_path, *thread, *tests, FASTDIFF_EMULATE_DROP_BARRIER=barrier)
    assert code != 0 and ("data race" in reports or "exceeds" in out), reports[:3000] + out
