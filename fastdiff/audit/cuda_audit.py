"""Compile csrc/'s kernels with nvcc for each architecture, as csrc/build.py builds them
(build.json's flags, that arch's code only), and read every instantiation's registers, spills and
static shared memory off ptxas's report (-Xptxas -v), and its tensor-core instructions and global
access widths off the SASS (cuobjdump, the one Triton bundles when the toolkit has none).

A compile is cached per (source file, arch) under the sources' and flags' hash, so a second run
reads the reports back in well under a second.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .arch import Arch

def _csrc() -> Path:
    """csrc/ of the source tree: beside the package when it runs from a checkout, else the working
    directory's (an installed fastdiff carries no sources)."""
    here = Path(__file__).resolve().parents[2] / "csrc"
    return here if (here / "build.py").is_file() else Path.cwd() / "csrc"


CSRC = _csrc()


def build_module():
    """csrc/build.py, loaded by its path (it is not part of the package), or None without csrc/."""
    path = CSRC / "build.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("fastdiff_csrc_build", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cuobjdump(nvcc: str) -> str | None:
    own = Path(nvcc).parent / "cuobjdump"
    if own.exists():
        return str(own)
    from .triton_audit import _bin

    return _bin("cuobjdump") or shutil.which("cuobjdump")


def demangle(names: list[str]) -> dict:
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(log: str) -> dict:
    """{mangled name: {regs, smem (static), stack, spill_stores, spill_loads}} of a ptxas -v report."""
    out, current = {}, None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            current = out.setdefault(m[1], {"regs": 0, "smem": 0, "stack": 0, "spill_stores": 0, "spill_loads": 0})
        elif current is not None and (m := _PROPS.search(line)):
            current.update(stack=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
        elif current is not None and (m := _USED.search(line)):
            smem = _SMEM.search(line)
            current.update(regs=int(m[1]), smem=int(smem[1]) if smem else 0)
    return out


_SASS_ACCESS = re.compile(r"\b(LDG|STG)((?:\.[A-Z0-9_]+)*)")


def _sass_width(suffix: str) -> int:
    parts = suffix.split(".")
    for bits in ("128", "64"):
        if bits in parts:
            return int(bits) // 8
    if "U16" in parts or "S16" in parts:
        return 2
    if "U8" in parts or "S8" in parts:
        return 1
    return 4


def parse_sass(sass: str) -> dict:
    """{mangled name: {hmma, hgmma, ld: {bytes: n}, st: {bytes: n}}} of cuobjdump -sass output."""
    out, current = {}, None
    for line in sass.splitlines():
        if "Function :" in line:
            current = out.setdefault(line.split("Function :")[1].strip(), {"hmma": 0, "hgmma": 0, "ld": {}, "st": {}})
            continue
        if current is None:
            continue
        current["hmma"] += len(re.findall(r"\bHMMA\.", line))
        current["hgmma"] += len(re.findall(r"\bHGMMA\.", line))
        for op, suffix in _SASS_ACCESS.findall(line):
            hist = current["ld" if op == "LDG" else "st"]
            w = _sass_width(suffix)
            hist[w] = hist.get(w, 0) + 1
    return out


def _source_hash(build, arch_list) -> str:
    h = hashlib.sha256()
    for path in sorted(CSRC.rglob("*")):
        if path.suffix in (".cu", ".cuh", ".h", ".json") and path.is_file():
            h.update(str(path.relative_to(CSRC)).encode())
            h.update(path.read_bytes())
    h.update(json.dumps(build.nvcc_flags(arch_list)).encode())
    return h.hexdigest()[:24]


def compile_file(source: Path, arch: Arch, cache_dir: Path | None = None) -> dict:
    """{'kernels': {mangled: metrics}, 'error': None or the first lines of nvcc's error} for one
    source file on one arch."""
    build = build_module()
    nvcc = build.find_nvcc() if build else None
    if nvcc is None:
        return {"kernels": {}, "error": "nvcc not found (set CUDA_HOME)"}
    flags = build.nvcc_flags([arch.nvcc])
    key = _source_hash(build, [arch.nvcc]) + hashlib.sha256(nvcc.encode()).hexdigest()[:8]
    path = Path(cache_dir) / "cuda" / f"{source.stem}-{arch.name}-{key}.json" if cache_dir else None
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / f"{source.stem}.cubin"
        cmd = [nvcc, *flags, "-Xptxas", "-v", "-cubin", "-o", str(cubin), str(source)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            err = [line for line in (proc.stderr + proc.stdout).splitlines() if "error" in line.lower()]
            return {"kernels": {}, "error": "; ".join(err[:3]) or f"nvcc exited with {proc.returncode}"}
        kernels = parse_ptxas_log(proc.stderr + proc.stdout)
        tool = _cuobjdump(nvcc)
        if tool:
            sass = subprocess.run([tool, "-sass", str(cubin)], capture_output=True, text=True).stdout
            for name, found in parse_sass(sass).items():
                if name in kernels:
                    kernels[name].update(found)
    names = demangle(list(kernels))
    result = {"kernels": {k: {**v, "name": names[k]} for k, v in kernels.items()}, "error": None}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(path)
    return result


def short_name(demangled: str) -> str:
    """'fastdiff::(anonymous namespace)::attention_kernel<__half, 48>(...)' -> 'attention_kernel<__half, 48>'."""
    name = demangled.replace("(anonymous namespace)::", "").replace("fastdiff::", "")
    name = re.sub(r"^void ", "", name)
    depth = 0
    for i, ch in enumerate(name):  # drop the parameter list: the first '(' outside template brackets
        depth += {"<": 1, ">": -1}.get(ch, 0)
        if ch == "(" and depth == 0:
            return name[:i]
    return name


def _dtype_of(name: str) -> str:
    first = name.split("<", 1)[1].split(",")[0].strip().rstrip(">") if "<" in name else ""
    return {"__half": "fp16", "__nv_bfloat16": "bf16", "float": "fp32"}.get(first, first or "?")


def audit(archs, cache_dir: Path | None = None, jobs: int = 2) -> list[dict]:
    """One row per kernel instantiation per arch."""
    build = build_module()
    if build is None:
        return [{"backend": "cuda", "arch": a.name, "kernel": "-", "status": "error", "error": "no csrc/"}
                for a in archs]
    sources = build.kernels()
    tasks = [(s, a) for a in archs for s in sources]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda t: compile_file(t[0], t[1], cache_dir), tasks))
    rows = []
    for (source, arch), result in zip(tasks, results):
        base = {"backend": "cuda", "arch": arch.name, "op": source.stem, "source": source.name,
                "smem_limit": arch.smem_optin}
        if result["error"]:
            rows.append({**base, "kernel": source.stem, "status": "error", "error": result["error"]})
            continue
        for mangled, k in sorted(result["kernels"].items(), key=lambda kv: short_name(kv[1]["name"])):
            name = short_name(k["name"])
            from .triton_audit import width_summary

            rows.append({**base, "kernel": name, "mangled": mangled, "dtype": _dtype_of(name), "status": "ok",
                         "error": None, **{x: k.get(x, 0) for x in ("regs", "smem", "stack", "spill_stores",
                                                                     "spill_loads", "hmma", "hgmma")},
                         "ld": k.get("ld", {}), "st": k.get("st", {}),
                         "ld_width": width_summary(k.get("ld", {})), "st_width": width_summary(k.get("st", {}))})
    return rows
