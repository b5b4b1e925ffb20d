"""Shipped weights: safetensors files under fastdiff/builtin/weights, stored in float16, with the
config in their metadata."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..files import atomic_path

WEIGHTS_DIR = Path(__file__).parent / "weights"


def path(name: str, directory: str | Path | None = None) -> Path:
    return Path(directory or WEIGHTS_DIR) / f"{name}.safetensors"


def save(module: torch.nn.Module, name: str, config: dict | None, directory) -> Path:
    """Writes the module's floating-point state in float16 (the config goes in the metadata) to
    <directory>/<name>.safetensors, whole or not at all. There is no default directory: the
    shipped weights are never written."""
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in module.state_dict().items()}
    out = path(name, directory)
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={"config": json.dumps(config or {})})
    return out


def load(module: torch.nn.Module, name: str, directory=None) -> torch.nn.Module:
    """Loads `name` into `module` (cast back to the module's dtype), in eval mode."""
    file = path(name, directory)
    if not file.exists():
        raise FileNotFoundError(f"fastdiff.builtin.checkpoint: no weights {file}; run `fastdiff train` first")
    state = load_file(str(file))
    ref = module.state_dict()
    module.load_state_dict({k: v.to(ref[k].dtype) if k in ref else v for k, v in state.items()})
    return module.eval()


def config(name: str, directory=None) -> dict:
    from safetensors import safe_open

    with safe_open(str(path(name, directory)), "pt") as f:
        return json.loads((f.metadata() or {}).get("config", "{}"))
