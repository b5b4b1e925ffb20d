"""Backend orders measured on GPUs, for `auto`.

fastdiff/measured.json holds, per device name and op, measured cases: the inputs' dtype, layout,
size (elements of the main input) and, for attention, head dim and key count, with the backends
ordered fastest first. benchmarks/record_auto.py writes it from the benchmarks' results. For new
inputs, `order` takes the case of the same dtype and layout nearest in log size (and log head dim
and key count): one measured shape speaks for its neighbours.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Optional

PATH = Path(__file__).with_name("measured.json")
_SIZES = ("numel", "head_dim", "seq_k")


@functools.lru_cache(maxsize=None)
def table() -> dict:
    return json.loads(PATH.read_text()) if PATH.is_file() else {}


def case(op: str, inputs, order) -> dict:
    """One measured case, as measured.json stores it (inputs: a fastdiff.backends.Inputs)."""
    out = {"op": op, "dtype": str(inputs.dtype).removeprefix("torch."), "channels_last": inputs.channels_last}
    out.update({k: getattr(inputs, k) for k in _SIZES if getattr(inputs, k) is not None})
    return {**out, "order": list(order)}


def order(device_name: str, op: str, inputs, cases: Optional[dict] = None) -> Optional[tuple[str, ...]]:
    """The measured backend order of the nearest case, or None when this device and op have none."""
    cases = (table() if cases is None else cases).get(device_name, {}).get(op, [])
    want = case(op, inputs, ())
    alike = [c for c in cases if c["dtype"] == want["dtype"] and c["channels_last"] == want["channels_last"]
             and all((k in c) == (k in want) for k in _SIZES)]
    if not alike:
        return None

    def distance(c):
        return sum(abs(math.log(max(c[k], 1) / max(want[k], 1))) for k in _SIZES if k in want)
    return tuple(min(alike, key=distance)["order"])
