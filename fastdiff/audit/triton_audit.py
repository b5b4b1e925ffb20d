"""Compile the Triton kernels exactly as fastdiff's launchers would launch them on a GPU, for a GPU
that is not here, and read what the compiler produced.

The launchers themselves run (kernels/attention.py `attention`, kernels/group_norm.py
`group_norm`, kernels/adaln.py `adaln`, kernels/qk_norm_rope.py `qk_norm_rope`, kernels/guidance.py
`cfg_combine` and `sampler_step`), from private copies of their modules loaded with the
interpreter off, on meta tensors of each workload's shapes, strides and dtype. Their kernels (the
module globals of LAUNCHERS) are swapped for recorders of
the launch (arguments, grid, constexprs, num_warps, num_stages), and the device facts a launch
asks its GPU for (`shared_memory_of`, `sm_count_of` from kernels/_device.py) return the target's:
its opt-in shared memory and its SM count. Each recorded launch is then specialized by Triton's
own binder for that target (pointer alignment, integers divisible by 16 or equal to 1, as a
launch does) and compiled with `triton.compile` to PTX and a cubin: ptxas's report gives the
registers and spills, the metadata the shared memory and warps, the PTX the global access widths
and tensor-core instructions (cuobjdump's SASS too, when Triton bundles it).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

from .arch import ARCHS, Arch
from .workloads import DTYPES, Workload

_LOCK = threading.Lock()  # the launchers' modules are patched while one runs

# op: (launcher module, launcher, the kernels it launches: module global -> label)
LAUNCHERS = {
    "attention": ("fastdiff._triton.attention", "attention", {"_attention_kernel": "attention"}),
    "group_norm": ("fastdiff._triton.group_norm", "group_norm",
                   {"_fused_kernel": "group_norm.fused", "_stats_kernel": "group_norm.stats",
                    "_normalize_kernel": "group_norm.normalize"}),
    "adaln": ("fastdiff._triton.adaln", "adaln", {"_adaln_kernel": "adaln"}),
    "qk_norm_rope": ("fastdiff._triton.qk_norm_rope", "qk_norm_rope", {"_qk_norm_rope_kernel": "qk_norm_rope"}),
    "cfg_combine": ("fastdiff._triton.guidance", "cfg_combine", {"_cfg_combine_kernel": "cfg_combine"}),
    "sampler_step": ("fastdiff._triton.guidance", "sampler_step", {"_sampler_step_kernel": "sampler_step"}),
}


@contextlib.contextmanager
def _compiling():
    """Triton as on a GPU: the interpreter off (it changes how constexprs are built)."""
    from triton import knobs

    with knobs.runtime.scope():
        knobs.runtime.interpret = False
        yield


def kernel_module(name: str):
    """A private copy of the launcher module `name` (fastdiff._triton.attention, ...), loaded from
    the same file with Triton's interpreter off: its kernels are JITFunctions whatever
    TRITON_INTERPRET says (the tests run with it on), and patching its globals touches nothing
    that fastdiff's ops call."""
    import sys


    package, base = name.rsplit(".", 1)
    private = f"{package}._audited_{base}"  # beside the original: its relative imports resolve the same
    module = sys.modules.get(private)
    if module is None:
        spec = importlib.util.spec_from_file_location(private, importlib.util.find_spec(name).origin)
        module = importlib.util.module_from_spec(spec)
        module.__audit_source__ = name
        with _compiling():
            spec.loader.exec_module(module)
        sys.modules[private] = module
    return module


class Pointer:
    """What Triton's binder needs of a tensor argument: its dtype and its address, which is a
    16-byte aligned base (PyTorch's allocator gives 512) plus the view's storage offset."""

    def __init__(self, dtype: torch.dtype, offset_bytes: int = 0):
        self.dtype, self.offset = dtype, offset_bytes

    def data_ptr(self) -> int:
        return (1 << 24) + self.offset


def _pointers(args):
    return [Pointer(a.dtype, a.storage_offset() * a.element_size()) if isinstance(a, torch.Tensor) else a
            for a in args]


def _pointer_kwargs(kwargs: dict) -> dict:
    return dict(zip(kwargs, _pointers(kwargs.values())))


class _Recorder:
    def __init__(self, label, fn, launches):
        self.label, self.fn, self.launches = label, fn, launches

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append((self.label, self.fn, tuple(grid), _pointers(args), _pointer_kwargs(kwargs)))
        return launch


def _meta_view(dtype, shape, strides, offset):
    size = offset + sum((n - 1) * s for n, s in zip(shape, strides)) + 1
    return torch.empty(size, dtype=dtype, device="meta").as_strided(shape, strides, offset)


def _call_launcher(w: Workload):
    """Run the workload's real launcher on meta tensors (its kernels are recorders by now)."""
    module, name, _ = LAUNCHERS[w.op]
    fn = getattr(kernel_module(module), name)
    p, dtype = w.p, DTYPES[w.dtype]
    if w.op == "attention":
        b, sq, sk, h, d = p["B"], p["Sq"], p["Sk"], p["H"], p["D"]
        q, k, v = (_meta_view(dtype, (b, s, h, d), (*p[f"{t}_strides"], 1), p[f"{t}_offset"])
                   for t, s in (("q", sq), ("k", sk), ("v", sk)))
        fn(q, k, v)
    elif w.op == "group_norm":
        shape = (p["N"], p["C"], *p["spatial"])
        fmt = torch.channels_last if p["layout"] == "channels_last" else torch.contiguous_format
        x = torch.empty(shape, dtype=dtype, device="meta").contiguous(memory_format=fmt)
        weight = torch.empty(p["C"], dtype=dtype, device="meta") if p["affine"] else None
        bias = torch.empty(p["C"], dtype=dtype, device="meta") if p["affine"] else None
        fn(x, p["groups"], weight, bias, 1e-5, silu=p["silu"])
    elif w.op == "adaln":
        b, t, d = p["B"], p["T"], p["D"]
        x = torch.empty((b, t, d), dtype=dtype, device="meta")
        mod = torch.empty((b, 6 * d), dtype=dtype, device="meta")  # shift, scale, gate: chunks of one projection
        gated = {"gate": mod[:, 2 * d:3 * d], "residual": torch.empty_like(x)} if p["gated"] else {}
        fn(x, mod[:, :d], mod[:, d:2 * d], 1e-6, **gated)
    elif w.op == "qk_norm_rope":
        b, s, h, d = p["B"], p["S"], p["H"], p["D"]
        q, k = (_meta_view(dtype, (b, s, h, d), (*p[f"{t}_strides"], 1), 0) for t in "qk")
        weight = torch.empty(d, dtype=dtype, device="meta")
        tables = [torch.empty((s, d), dtype=torch.float32, device="meta")] * 2 if p["rope"] else [None, None]
        fn(q, k, weight, weight, *tables, 1e-6)
    elif w.op == "sampler_step":
        n = p["n"]
        x = torch.empty(n, dtype=dtype, device="meta")
        out = torch.empty(2 * n if p["guided"] else n, dtype=dtype, device="meta")
        coeffs = torch.empty(6, dtype=torch.float32, device="meta")  # device-resident, as in a CUDA graph
        fn(x, out, coeffs, guidance_scale=7.5 if p["guided"] else None,
           prev=torch.empty_like(x) if p["prev"] else None, noise=torch.empty_like(x) if p["noise"] else None)
    else:
        u = torch.empty(p["n"], dtype=dtype, device="meta")
        fn(u, torch.empty_like(u), 7.5)


def launches(w: Workload, arch: Arch, compiler: "Compiler") -> list:
    """[(kernel label, JITFunction, grid, args, kwargs)]: what the launcher launches for w on arch.
    A launcher sizing its tiles by the compiled kernel's shared memory gets the target's compile."""
    module_name, _, kernels = LAUNCHERS[w.op]
    module = kernel_module(module_name)
    recorded: list = []

    def compiled_shared_memory(_t, kernel, args, kwargs):
        result = compiler(kernel.fn, _pointers(args), _pointer_kwargs(kwargs), arch)
        return result.get("smem")  # None on a compile error, which the launch's row then reports

    # the device facts a launch asks its GPU for: those of the target
    facts = {"shared_memory_of": lambda t: arch.smem_optin, "sm_count_of": lambda t: arch.sm_count,
             "compiled_shared_memory": compiled_shared_memory}
    with _LOCK:
        saved = {name: getattr(module, name) for name in (*kernels, *facts) if hasattr(module, name)}
        try:
            for name in facts:
                if name in saved:
                    setattr(module, name, facts[name])
            for name, label in kernels.items():
                setattr(module, name, _Recorder(label, saved[name], recorded))
            _call_launcher(w)
        finally:
            for name, value in saved.items():
                setattr(module, name, value)
    return recorded


def _target(arch: Arch):
    from triton.backends.compiler import GPUTarget

    return GPUTarget("cuda", arch.capability, 32)


def specialize(fn, args, kwargs, arch: Arch):
    """(signature, constexprs, attrs, options) as Triton's launch path computes them for arch."""
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    with _compiling():
        backend = make_backend(_target(arch))
        binder = create_function_from_signature(fn.signature, fn.params, backend)
        bound, spec, opts = binder(*args, **kwargs)
        options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, spec, opts)
    return signature, constexprs, attrs, options


def _bin(tool: str) -> str | None:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / tool
    return str(path) if path.exists() else None


_PTXAS_FUNC = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGS = re.compile(r"Used (\d+) registers")


def parse_ptxas(log: str) -> dict:
    """Registers, stack and spills of the (one) entry function in a ptxas -v report."""
    out = {}
    if m := _PTXAS_FUNC.search(log):
        out.update(stack=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
    if m := _PTXAS_REGS.search(log):
        out["regs"] = int(m[1])
    return out


_PTX_ACCESS = re.compile(r"\b(ld|st)\.global((?:\.[A-Za-z0-9_:]+)*)")
_PTX_LABEL = re.compile(r"^\s*(\$L\w+):")
_PTX_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$L\w+)")


def _loop_lines(lines) -> set:
    """Line numbers inside a loop: between a label and a later branch back to it."""
    labels, inside = {}, set()
    for i, line in enumerate(lines):
        if m := _PTX_LABEL.match(line):
            labels[m[1]] = i
        elif (m := _PTX_BRANCH.search(line)) and m[1] in labels:
            inside.update(range(labels[m[1]], i + 1))
    return inside


def ptx_accesses(ptx: str) -> dict:
    """The global loads and stores in PTX as {bytes: count} histograms: 'ld' and 'st' of the whole
    kernel, 'ld_loop' and 'st_loop' of those inside a loop (the streaming ones: a kernel's loads of
    per-channel weights or of a pivot stay outside its loops)."""
    lines = ptx.splitlines()
    loop = _loop_lines(lines)
    out = {"ld": {}, "st": {}, "ld_loop": {}, "st_loop": {}}
    for i, line in enumerate(lines):
        for kind, suffix in _PTX_ACCESS.findall(line):
            parts = suffix.split(".")
            vec = next((int(x[1:]) for x in parts if re.fullmatch(r"v\d", x)), 1)
            bits = next((int(x[1:]) for x in parts if re.fullmatch(r"[bfsu]\d+", x)), None)
            if bits is None:
                continue
            width = vec * bits // 8
            for key in (kind, kind + "_loop") if i in loop else (kind,):
                out[key][width] = out[key].get(width, 0) + 1
    return out


def width_summary(hist: dict, loop: dict | None = None) -> dict:
    """min and max width of an access histogram, and the bulk width: the one moving the most bytes
    per pass among the accesses inside loops (all of them when none is in a loop)."""
    if not hist:
        return {"min": None, "max": None, "bulk": None}
    hist = {int(k): v for k, v in hist.items()}
    main = {int(k): v for k, v in loop.items()} if loop else hist
    return {"min": min(hist), "max": max(hist), "bulk": max(main, key=lambda w: (w * main[w], w))}


def tensor_core_counts(ptx: str, cubin: bytes | None) -> dict:
    out = {"mma_sync": len(re.findall(r"\bmma\.sync\.", ptx)), "wgmma": len(re.findall(r"\bwgmma\.mma_async", ptx))}
    tool = _bin("cuobjdump")
    if cubin and tool:
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(cubin)
            f.flush()
            sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
        out["hmma"] = len(re.findall(r"\bHMMA\.", sass))
        out["hgmma"] = len(re.findall(r"\bHGMMA\.", sass))
    return out


def _ptxas_report(ptx: str, arch: Arch, fp_fusion: bool) -> str:
    """ptxas -v on PTX (as Triton runs it): when Triton's cache gave the cubin without a report."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        cmd = [get_ptxas(arch.capability).path, "-lineinfo", *([] if fp_fusion else ["--fmad=false"]), "-v",
               f"--gpu-name={sm_arch_from_capability(arch.capability)}", str(src), "-o", str(src) + ".o"]
        return subprocess.run(cmd, capture_output=True, text=True).stderr


def _compile(fn, signature, constexprs, attrs, options: dict, arch: Arch) -> dict:
    import triton
    from triton import knobs
    from triton.compiler import ASTSource

    log = io.StringIO()
    try:
        with _compiling(), knobs.nvidia.scope(), contextlib.redirect_stdout(log):
            knobs.nvidia.dump_ptxas_log = True
            kernel = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=_target(arch), options=options)
    except Exception as e:  # a compile error is a finding, not a crash of the audit
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        return {"error": f"{type(e).__name__}: {first}"[:300]}
    ptx = kernel.asm["ptx"]
    report = log.getvalue()
    if "spill" not in report:
        report = _ptxas_report(ptx, arch, options.get("enable_fp_fusion", True))
    md = kernel.metadata
    return {"error": None, **parse_ptxas(report), "smem": int(md.shared), "warps": int(md.num_warps),
            "stages": int(md.num_stages), **ptx_accesses(ptx), **tensor_core_counts(ptx, kernel.asm.get("cubin"))}


def _compile_task(task) -> dict:
    """In a worker process: (kernel module, kernel name, signature, constexprs, attrs, options, arch name)."""
    module, name, signature, constexprs, attrs, options, arch = task
    fn = getattr(kernel_module(module), name)
    if isinstance(fn, _Recorder):  # compiling in this process while a launcher runs (its shared memory)
        fn = fn.fn
    return _compile(fn, signature, constexprs, attrs, options, ARCHS[arch])


def _key(fn, signature, constexprs, attrs, options, arch: Arch) -> str:
    import triton

    blob = json.dumps([triton.__version__, fn.cache_key, sorted(signature.items()),
                       sorted((str(k), repr(v)) for k, v in constexprs.items()),
                       sorted((str(k), repr(v)) for k, v in attrs.items()),
                       sorted((k, repr(v)) for k, v in options.__dict__.items()), arch.name])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class Compiler:
    """Compiles each distinct specialization once (in `jobs` processes); results persist in cache_dir."""

    def __init__(self, cache_dir: Path | None = None, jobs: int | None = None):
        self.cache_dir = Path(cache_dir) / "triton" if cache_dir else None
        self.jobs = jobs or default_jobs()
        self.memo: dict = {}
        self.pending: dict = {}

    def _path(self, key):
        return self.cache_dir / f"{key}.json" if self.cache_dir else None

    def prepare(self, fn, args, kwargs, arch: Arch):
        """The launch's key, its compile queued unless cached; or an error dict."""
        try:
            signature, constexprs, attrs, options = specialize(fn, args, kwargs, arch)
        except Exception as e:
            return {"error": f"specialization: {type(e).__name__}: {e}"[:300]}
        key = _key(fn, signature, constexprs, attrs, options, arch)
        if key in self.memo or key in self.pending:
            return key
        path = self._path(key)
        if path is not None and path.is_file():
            self.memo[key] = json.loads(path.read_text())
        else:
            module = sys.modules[fn.fn.__module__]
            name = fn.fn.__name__  # the module global the kernel is defined as
            self.pending[key] = (module.__audit_source__, name, signature, constexprs, attrs, dict(options.__dict__),
                                 arch.name)
        return key

    def compile_pending(self) -> None:
        items = list(self.pending.items())
        self.pending.clear()
        if not items:
            return
        if self.jobs > 1 and len(items) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(self.jobs, len(items)), mp_context=ctx) as pool:
                results = list(pool.map(_compile_task, [task for _, task in items]))
        else:
            results = [_compile_task(task) for _, task in items]
        for (key, _), result in zip(items, results):
            self.memo[key] = result
            path = self._path(key)
            if path is not None and result.get("error") is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(result))
                tmp.replace(path)

    def __call__(self, fn, args, kwargs, arch: Arch) -> dict:
        key = self.prepare(fn, args, kwargs, arch)
        if isinstance(key, dict):
            return key
        self.compile_pending()
        return self.memo[key]


def _config_text(label: str, kw: dict) -> str:
    if label == "attention":
        d = f"{kw['D0']}+{kw['D1']}" if kw["D1"] else f"{kw['D0']}"
        return f"M{kw['BLOCK_M']} N{kw['BLOCK_N']} D{d} a{kw['ALIGN']} w{kw['num_warps']} s{kw['num_stages']}"
    if label.startswith("group_norm"):
        return (f"gpb{kw['GPB']} C{kw['BLOCK_C']} HW{kw['BLOCK_HW']}{' wide' if kw['WIDE'] else ''}"
                f" w{kw.get('num_warps', 4)}")
    if label == "adaln":
        return f"B{kw['BLOCK']} x{kw['CHUNKS']} w{kw['num_warps']}"
    if label == "qk_norm_rope":
        return f"H{kw['BLOCK_H']} D{kw['BLOCK_D']} w{kw['num_warps']}"
    return f"B{kw['BLOCK']}"


def pad_waste(w: Workload, kw: dict) -> float:
    """Attention: the share of the tiles' multiply-adds spent on padding (queries to BLOCK_M,
    keys to BLOCK_N, the head dim to its chunks D0 + D1)."""
    p = w.p
    bm, bn, bd = kw["BLOCK_M"], kw["BLOCK_N"], kw["D0"] + kw["D1"]
    tiles = math.ceil(p["Sq"] / bm) * bm * math.ceil(p["Sk"] / bn) * bn * bd
    return 1.0 - p["Sq"] * p["Sk"] * p["D"] / tiles


def support_reasons(w: Workload) -> list[str]:
    """Why the Triton backend's SUPPORT table declines w (nothing: it runs)."""
    from fastdiff import _triton
    from fastdiff.backends import Inputs

    p = w.p
    inputs = Inputs(torch.device("cuda"), DTYPES[w.dtype], head_dim=p.get("D"), seq_k=p.get("Sk"),
                    channels_last=p.get("layout") == "channels_last")
    return _triton.SUPPORT[w.op].reasons(inputs)


def audit(workloads, archs, compiler: Compiler | None = None, overrides: dict | None = None) -> list[dict]:
    """One row per (workload, arch, kernel launched). Every launch is recorded and specialized
    first; then the distinct ones not cached compile together. `overrides` replaces launch
    keywords (BLOCK_M=..., num_stages=...): a forced configuration instead of the launcher's."""
    compiler = compiler or Compiler()
    planned = []
    for w in workloads:
        reasons = support_reasons(w)
        for arch in archs:
            base = {"backend": "triton", "arch": arch.name, "op": w.op, "workload": w.name, "dtype": w.dtype,
                    "models": list(w.models), "vector_bytes": w.vector_bytes(), "smem_limit": arch.smem_optin}
            if reasons:
                planned.append(({**base, "kernel": w.op, "status": "unsupported: " + "; ".join(reasons)}, None))
                continue
            for label, fn, grid, args, kwargs in launches(w, arch, compiler):
                kwargs = {**kwargs, **(overrides or {})}
                row = {**base, "kernel": label, "config": _config_text(label, kwargs), "grid": list(grid)}
                if label == "attention":
                    row["pad_waste"] = pad_waste(w, kwargs)
                planned.append((row, (compiler.prepare(fn, args, kwargs, arch), arch, kwargs)))
    compiler.compile_pending()
    rows = []
    for row, job in planned:
        if job is not None:
            key, arch, kwargs = job
            result = key if isinstance(key, dict) else compiler.memo[key]
            row.update(result)
            row["status"] = "ok" if result.get("error") is None else "error"
            if row["status"] == "ok":
                row["blocks_per_sm"], row["occupancy_limit"] = arch.blocks(row.get("regs", 0), row["smem"],
                                                                          row["warps"] * 32)
                row["ld_width"] = width_summary(row["ld"], row["ld_loop"])
                row["st_width"] = width_summary(row["st"], row["st_loop"])
        rows.append(row)
    return rows


def interpreted() -> bool:
    """Whether this process's Triton was imported under TRITON_INTERPRET=1 (then its library
    functions are interpreted ones, and nothing here can compile for a GPU)."""
    import triton.language.standard as standard
    from triton.runtime.jit import JITFunction

    return not isinstance(standard.cdiv, JITFunction)


def audit_anywhere(workloads, archs, cache_dir=None, jobs=None, overrides=None) -> list[dict]:
    """audit(), in a fresh process with the interpreter off when this one has it on."""
    if not interpreted():
        return audit(workloads, archs, Compiler(cache_dir, jobs), overrides)
    from .workloads import _encode

    spec = {"workloads": [_encode(w) for w in workloads], "archs": [a.name for a in archs],
            "cache_dir": str(Path(cache_dir).resolve()) if cache_dir else None, "jobs": jobs, "overrides": overrides}
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    # run from beside this fastdiff, so that `-m` imports it again: from a source checkout's root it
    # would import the checkout's fastdiff/, which has no _triton (the installed package has)
    home = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "fastdiff.audit._worker"], input=json.dumps(spec), cwd=home,
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"fastdiff.audit: the Triton audit process failed: {proc.stderr[-2000:]}")
    rows = json.loads(proc.stdout)
    for row in rows:  # JSON turned the width histograms' keys into strings
        for k in ("ld", "st", "ld_loop", "st_loop"):
            if isinstance(row.get(k), dict):
                row[k] = {int(w): n for w, n in row[k].items()}
    return rows


def resolve_archs(names) -> list[Arch]:
    return [ARCHS[n] for n in names]
