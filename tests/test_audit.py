"""fastdiff audit: the kernels compiled for GPUs that are not here, at the models' shapes, against
thresholds; and the audit machinery itself.

The threshold test is real: a row breaking a threshold fails unless KNOWN lists it, and each KNOWN
entry is a strict xfail that fails once the kernel is fixed, so the table shrinks with the fixes.
Compiles are cached ($FASTDIFF_AUDIT_CACHE, default ~/.cache/fastdiff/audit): the first run
compiles about 200 Triton specializations and csrc/ twice (a few minutes on 2 cores), later runs
take seconds.
"""
import importlib.util
import json
import shutil

import pytest

from fastdiff import audit
from fastdiff.audit import ARCHS, cuda_audit, report, triton_audit, workloads

# compiles for GPUs: minutes on 2 cores with a cold cache
pytestmark = [pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton"), pytest.mark.slow]

MODELS = ("sd15", "dit-xl2-256", "vae-512")  # SD1.5's U-Net, DiT-XL/2, the SD VAE decoder
ARCHS_CHECKED = ("sm_80", "sm_90a")           # every threshold
SMEM_ONLY = ("sm_86",)                        # attention's shared memory against 99 KiB
DTYPES = ("fp16", "bf16")


def _has_nvcc() -> bool:
    build = cuda_audit.build_module()
    return build is not None and build.find_nvcc() is not None


# Thresholds broken today: (check, arch, kernel, workload without its dtype: both fp16 and bf16;
# for CUDA rows the kernel instantiation, kernel ''): the measured number. Regenerate the
# entries from `fastdiff audit --json` when a kernel changes; never add one to hide a regression.
KNOWN: dict = {}


def _known_ids():
    """(row id, check, reason) of every KNOWN entry, one per dtype."""
    out = []
    for (check, arch, kernel, workload), reason in KNOWN.items():
        if not kernel:
            out.append((f"cuda:{arch}:{workload}", check, reason))
        elif workload.endswith(DTYPES):
            out.append((f"triton:{arch}:{kernel}:{workload}", check, reason))
        else:
            out += [(f"triton:{arch}:{kernel}:{workload} {dt}", check, reason) for dt in DTYPES]
    return out


KNOWN_IDS = _known_ids()


@pytest.fixture(scope="module")
def rows():
    backends = ("triton", "cuda") if _has_nvcc() else ("triton",)
    out = audit.run(archs=ARCHS_CHECKED, workloads=MODELS, dtypes=DTYPES, backends=backends)
    out += audit.run(archs=SMEM_ONLY, workloads=(*MODELS, "attention"), dtypes=DTYPES, backends=("triton",))
    return {report.row_id(r): r for r in out}


def _checked(row) -> list[str]:
    found = report.violations(row)
    return found if row["arch"] not in SMEM_ONLY else [v for v in found if v in ("smem", "error")]


def test_every_model_kernel_ran(rows):
    ops = {(r["backend"], r["op"]) for r in rows.values() if r.get("status") == "ok"}
    assert {("triton", "attention"), ("triton", "group_norm"), ("triton", "adaln"), ("triton", "sampler_step"),
            ("triton", "cfg_combine")} <= ops
    if _has_nvcc():
        assert {("cuda", "attention"), ("cuda", "group_norm"), ("cuda", "guidance")} <= ops
    # the VAE's single-head attention at head dim 512 is beyond the Triton kernel: reported, not compiled
    assert any(r["status"].startswith("unsupported") for r in rows.values())


def test_no_new_violations(rows):
    """Every threshold a row breaks is a KNOWN one: no compile error, no shared memory over the
    arch's limit, no spill in an fp16/bf16 kernel, no streaming load under 8 bytes where the
    layout allows 16, no attention padding waste over 25%."""
    known = {(rid, check) for rid, check, _ in KNOWN_IDS}
    new = [f"{rid}: {v}" for rid, row in rows.items() for v in _checked(row) if (rid, v) not in known]
    assert not new, "thresholds newly broken:\n" + "\n".join(new)


def test_known_entries_name_audited_rows(rows):
    stale = [rid for rid, _, _ in KNOWN_IDS if rid not in rows and (rid.startswith("triton") or _has_nvcc())]
    assert not stale, "KNOWN names rows the audit no longer has:\n" + "\n".join(stale)


@pytest.mark.parametrize("rid,check", [
    pytest.param(rid, check, marks=pytest.mark.xfail(strict=True, reason=reason), id=f"{check}:{rid}")
    for rid, check, reason in KNOWN_IDS])
def test_known_violation_fixed(rows, rid, check):
    """Fails today (xfail); passes, and so fails strictly, once the kernel is fixed: then drop the entry."""
    if rid not in rows:
        pytest.skip("row not audited here (no nvcc)")
    assert check not in _checked(rows[rid])


# The audit machinery

def test_workloads_come_from_the_presets():
    ws = audit.select(["sd15", "attention"], dtypes=("fp16",))
    names = {w.name for w in ws}
    assert "attention self B2 Sq4096 Sk4096 H8 D40 fp16" in names     # 64x64 latents, 8 heads of 40, CFG batch
    assert "attention cross B2 Sq4096 Sk77 H8 D40 fp16" in names      # 77 text tokens
    assert len(names) == len(ws)                                       # deduplicated
    gn = audit.select(["vae-512", "group_norm"], dtypes=("bf16",))
    assert {w.p["layout"] for w in gn} == {"nchw", "channels_last"}
    assert any(w.p["C"] == 512 and w.p["spatial"] == (64, 64) and w.p["silu"] for w in gn)


def test_transformer_workloads_come_from_the_presets():
    ws = {w.name: w for w in audit.select(["sd35-large", "flux-dev"], dtypes=("bf16",))}
    assert "attention self B1 Sq4608 Sk4608 H24 D128 bf16" in ws          # Flux: 4096 image + 512 text tokens
    assert "adaln B1 T4608 D3072 bf16" in ws and "adaln B1 T4096 D3072 gated bf16" in ws
    rope = ws["qk_norm_rope B1 S4096 H24 D128 rope bf16"]
    assert rope.p["q_strides"] == (4096 * 3 * 3072, 3 * 3072, 128)        # a view of the fused QKV projection
    assert "qk_norm_rope B2 S4096 H38 D64 bf16" in ws                       # SD3.5-large: CFG batch, no rotation
    assert "sampler_step n262144 prev bf16" in ws and "sampler_step n262144 cfg prev bf16" in ws


def test_a_small_kernel_reports_its_registers(tmp_path):
    import torch

    w = workloads.Workload("cfg_combine", "fp16", (("n", 4096),))
    row, = triton_audit.audit_anywhere([w], [ARCHS["sm_80"]], cache_dir=tmp_path, jobs=1)
    assert row["status"] == "ok", row.get("error")
    assert 0 < row["regs"] <= 255 and row["spill_stores"] == 0 and row["warps"] == 4
    assert row["ld_width"]["bulk"] == 16 and row["st_width"]["bulk"] == 16  # 8 fp16 a load
    assert row["blocks_per_sm"] >= 1 and report.violations(row) == []
    assert torch.float16 is workloads.DTYPES[row["dtype"]]
    # cached: the second run compiles nothing and reads the same
    again, = triton_audit.audit_anywhere([w], [ARCHS["sm_80"]], cache_dir=tmp_path, jobs=1)
    assert again["regs"] == row["regs"]


def test_a_forced_config_over_the_limit_is_reported(tmp_path):
    """Attention at head dim 256 forced to 128 x 64 tiles in 3 stages on an sm_86 (99 KiB)."""
    w = workloads.attention_workload(1, 4096, 4096, 8, 256)
    row, = triton_audit.audit_anywhere([w], [ARCHS["sm_86"]], cache_dir=tmp_path, jobs=1,
                                       overrides={"BLOCK_M": 128, "BLOCK_N": 64, "num_stages": 3})
    assert row["status"] == "ok", row.get("error")
    assert row["smem"] > row["smem_limit"] == ARCHS["sm_86"].smem_optin
    assert "smem" in report.violations(row)


def test_ptxas_and_sass_parsers():
    log = """ptxas info    : Compiling entry function '_Z1kPf' for 'sm_90a'
ptxas info    : Function properties for _Z1kPf
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 8 bytes cumulative stack size, 400 bytes smem
"""
    assert cuda_audit.parse_ptxas_log(log) == {"_Z1kPf": {"regs": 40, "smem": 400, "stack": 8, "spill_stores": 4,
                                                           "spill_loads": 12}}
    sass = """        Function : _Z1kPf
        /*0010*/  LDG.E.128.CONSTANT R4, desc[UR4][R2.64] ;
        /*0020*/  LDG.E.U16 R8, desc[UR4][R2.64] ;
        /*0030*/  HMMA.16816.F32 R12, R4, R8, R12 ;
        /*0040*/  STG.E.64 desc[UR4][R2.64], R4 ;
"""
    assert cuda_audit.parse_sass(sass) == {"_Z1kPf": {"hmma": 1, "hgmma": 0, "ld": {16: 1, 2: 1}, "st": {8: 1}}}
    ptx = "$L__BB0_1:\n ld.global.v4.b32 {%r1,%r2,%r3,%r4}, [%rd1];\n @%p1 bra $L__BB0_1;\n ld.global.b16 %rs1, [%rd2];"
    acc = triton_audit.ptx_accesses(ptx)
    assert acc["ld"] == {16: 1, 2: 1} and acc["ld_loop"] == {16: 1}
    assert triton_audit.width_summary(acc["ld"], acc["ld_loop"]) == {"min": 2, "max": 16, "bulk": 16}


def test_occupancy_and_roofline():
    assert ARCHS["sm_90a"].blocks(255, 24576, 128) == (2, "regs")
    assert ARCHS["sm_86"].blocks(32, 0, 1024) == (1, "threads")
    w = workloads.attention_workload(1, 4608, 4608, 24, 128, dtype="bf16")
    nbytes, flops = w.bytes_and_flops()
    assert flops == 4 * 24 * 4608 * 4608 * 128
    assert audit.floor_us(nbytes, flops) == pytest.approx(flops / 694e12 * 1e6)


def test_cli_validates_its_arguments(capsys):
    from fastdiff.cli import main

    for argv, flag in ((["--arch", "sm_99"], "--arch"), (["--workload", "sd99"], "--workload"),
                       (["--dtype", "fp8"], "--dtype"), (["--jobs", "0"], "--jobs")):
        assert main(["audit", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("fastdiff audit: " + flag) and "\n" not in err


def test_cli_table_and_json(tmp_path, capsys):
    from fastdiff.cli import main

    out = tmp_path / "audit.json"
    assert main(["audit", "--arch", "sm_90a", "--workload", "builtin-dit", "--workload", "cfg_combine",
                 "--backend", "triton", "--dtype", "fp16", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cfg_combine n256 fp16" in text and "H100 floor us" in text
    rows = json.loads(out.read_text())
    assert rows and all(r["backend"] == "triton" and r["arch"] == "sm_90a" and "violations" in r for r in rows)


@pytest.mark.skipif(shutil.which("c++filt") is None and shutil.which("cu++filt") is None, reason="no demangler")
def test_demangled_short_names():
    names = cuda_audit.demangle(["_ZN8fastdiff12_GLOBAL__N_116attention_kernelI6__halfLi48EEEvPKT_"])
    assert cuda_audit.short_name(next(iter(names.values()))) == "attention_kernel<__half, 48>"
