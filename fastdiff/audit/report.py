"""The audit's thresholds, its table and its JSON."""
from __future__ import annotations

import json
from pathlib import Path

PAD_WASTE_MAX = 0.25   # attention: share of the tiles' work spent on padding
NARROW_BYTES = 8       # a streaming global load narrower than this, where the layout allows 16 bytes


def violations(row: dict) -> list[str]:
    """The thresholds a row breaks: 'error' (no kernel compiled), 'smem' (shared memory over the
    arch's opt-in limit), 'spill' (registers spilled in an fp16/bf16 kernel), 'narrow' (Triton
    attention or group_norm streaming global loads narrower than 8 bytes where the tensors allow
    16), 'pad' (attention padding waste above 25%). Unsupported workloads break none."""
    if row.get("status", "").startswith("unsupported"):
        return []
    if row.get("status") == "error":
        return ["error"]
    out = []
    if row.get("smem", 0) > row.get("smem_limit", float("inf")):
        out.append("smem")
    if row.get("dtype") in ("fp16", "bf16") and row.get("spill_stores", 0) + row.get("spill_loads", 0) > 0:
        out.append("spill")
    bulk = (row.get("ld_width") or {}).get("bulk")
    if (row.get("backend") == "triton" and row.get("op") in ("attention", "group_norm")
            and row.get("vector_bytes", 0) >= 16 and bulk is not None and bulk < NARROW_BYTES):
        out.append("narrow")
    if row.get("pad_waste", 0.0) > PAD_WASTE_MAX:
        out.append("pad")
    return out


def row_id(row: dict) -> str:
    """backend:arch:kernel:workload, unique within a run (CUDA rows have no workload)."""
    return ":".join(str(row.get(k)) for k in ("backend", "arch", "kernel")) + (
        f":{row['workload']}" if row.get("workload") else "")


def _width(w: dict | None) -> str:
    if not w or w.get("bulk") is None:
        return "-"
    return f"{w['bulk']}" + (f" ({w['min']}-{w['max']})" if w["min"] != w["max"] else "")


def _cells(row: dict) -> list[str]:
    ok = row.get("status") == "ok"
    tc = row.get("hgmma", row.get("wgmma", 0)) or 0, row.get("hmma", row.get("mma_sync", 0)) or 0
    tc_text = (f"hgmma {tc[0]}" if tc[0] else f"hmma {tc[1]}" if tc[1] else "-") if ok else ""
    blocks = f"{row['blocks_per_sm']} {row['occupancy_limit']}" if ok and "blocks_per_sm" in row else ""
    status = row.get("status", "")
    if status == "error":
        status = "ERROR " + str(row.get("error"))[:80]
    elif ok:
        status = ",".join(violations(row)) or "ok"
    return [
        row.get("backend", ""), row.get("arch", ""), row.get("kernel", ""), row.get("workload", "") or "",
        row.get("config", "") or "",
        str(row.get("regs", "")) if ok else "",
        f"{row.get('spill_stores', 0)}/{row.get('spill_loads', 0)}" if ok else "",
        f"{row.get('smem', 0)}/{row.get('smem_limit', 0) // 1024}K" if ok else "",
        str(row.get("warps", "")) if ok else "", blocks, tc_text,
        _width(row.get("ld_width")) if ok else "", _width(row.get("st_width")) if ok else "",
        f"{row['pad_waste']:.0%}" if "pad_waste" in row else "",
        f"{row['floor_us']:.1f}" if row.get("floor_us") is not None else "",
        status,
    ]


HEADER = ["backend", "arch", "kernel", "workload", "config", "regs", "spill st/ld", "smem/limit", "warps",
          "blocks/SM", "tensor cores", "ld bytes", "st bytes", "pad", "H100 floor us", "status"]


def table(rows: list[dict]) -> str:
    """An aligned text table: one line per row."""
    lines = [HEADER] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def summary(rows: list[dict]) -> str:
    counts: dict = {}
    for r in rows:
        for v in violations(r) or (["unsupported"] if r.get("status", "").startswith("unsupported") else []):
            counts[v] = counts.get(v, 0) + 1
    ok = sum(1 for r in rows if r.get("status") == "ok" and not violations(r))
    parts = [f"{len(rows)} rows", f"{ok} within every threshold"] + [f"{n} {k}" for k, n in sorted(counts.items())]
    return ", ".join(parts)


def write_json(rows: list[dict], path) -> None:
    out = [{**r, "id": row_id(r), "violations": violations(r)} for r in rows]
    Path(path).write_text(json.dumps(out, indent=1, default=str))
