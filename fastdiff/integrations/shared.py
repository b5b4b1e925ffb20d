"""fastdiff models on a diffusers module's own parameter tensors: no second copy of the weights.

The fastdiff model is loaded from the module's state dict, whose tensors it takes as they are.
Where fastdiff stores one tensor for several of diffusers' (the fused q/k/v projections, the DiT
embedders every diffusers block repeats), the diffusers parameters are rebound to views of
fastdiff's tensor, so both models read the same memory; diffusers' loop, LoRA merging and
load_state_dict keep working on the module as before."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..models import dit, loading, unet, vae

_QKV = re.compile(r"^(.*)\.to_([qkv])\.(weight|bias)$")


@dataclass
class Shared:
    """A fastdiff model built on `module`'s parameters, and what the two hold in common."""
    model: torch.nn.Module
    module: torch.nn.Module
    seen: dict  # the module's fingerprint when the model was built on it
    shared_bytes: int
    extra_bytes: int
    storages: frozenset  # the memory of the model's tensors

    def stale(self) -> bool:
        """Whether the module's parameters are no longer the tensors the model reads (moved,
        cast or replaced), or a LoRA layer on a weight the model holds its own copy of was fused
        or unfused."""
        return fingerprint(self.module, self.storages) != self.seen


def lora_layers(module) -> list:
    """The PEFT LoRA layers in `module` (diffusers' load_lora_weights adds them)."""
    return [m for m in module.modules() if hasattr(m, "lora_A") and hasattr(m, "merged")]


def unfused_lora(module) -> bool:
    """Whether LoRA layers compute beside the base weights (not merged into them by fuse_lora,
    or disabled, which unmerges them at the next forward)."""
    return any(not m.merged or m.disable_adapters for m in lora_layers(module))


def fingerprint(module, storages: frozenset = frozenset()) -> dict:
    """What a model built on `module` depends on: each base parameter's memory, dtype, device and
    shape, and the state of the LoRA layers on weights outside `storages`. LoRA layers on weights
    the model shares merge into its memory in place (fuse_lora, unfuse_lora, a swap): the model,
    and a CUDA graph captured on it, read the new weights with no rebuild."""
    out = {_base_name(n): (p.data_ptr(), p.dtype, p.device, tuple(p.shape))
           for n, p in module.named_parameters() if ".lora_" not in n}
    out[None] = tuple((m.merged, m.disable_adapters, tuple(m.active_adapters)) for m in lora_layers(module)
                      if _storage(m.base_layer.weight) not in storages)
    return out


def _base_name(name: str) -> str:
    """A parameter's name as the plain model has it: a merged LoRA layer wraps it in base_layer."""
    return name.replace(".base_layer.", ".")


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _fused_view(name: str, shape, params: dict):
    """The slice of a fused fastdiff to_qkv / to_kv tensor that the diffusers q, k or v `name` is."""
    m = _QKV.match(name)
    if not m:
        return None
    base, part, kind = m.groups()
    for fused, parts in ((f"{base}.to_qkv.{kind}", "qkv"), (f"{base}.to_kv.{kind}", "kv")):
        if fused in params and part in parts:
            i, n = parts.index(part), shape[0]
            return params[fused][i * n:(i + 1) * n]
    return None


def share(kind: loading.ModelKind, module: torch.nn.Module, config) -> Shared:
    """A fastdiff model of `kind` with `config` that shares `module`'s parameters. Raises
    ValueError (from the loader) when the module's weights do not fit the model."""
    state = {_base_name(k): v for k, v in module.state_dict().items() if ".lora_" not in k}
    rename, _ = kind.layout(list(state.keys()), config)
    model = loading.load(kind, state, config=config)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in list(module.named_parameters()):
            if ".lora_" in name:
                continue
            new = rename(_base_name(name))
            target = params.get(new)
            view = target.view(p.shape) if target is not None and target.numel() == p.numel() else \
                _fused_view(new, p.shape, params) if new else None
            if view is None or view.data_ptr() == p.data_ptr():
                continue
            if not torch.equal(view, p):
                raise ValueError(f"{name} differs from the fastdiff tensor it maps to")
            owner, _, attr = name.rpartition(".")
            setattr(module.get_submodule(owner), attr, torch.nn.Parameter(view, requires_grad=p.requires_grad))
    theirs = {_storage(p) for n, p in module.named_parameters() if ".lora_" not in n}
    tensors = list(model.parameters()) + list(model.buffers())
    shared = sum(t.numel() * t.element_size() for t in tensors if _storage(t) in theirs)
    extra = sum(t.numel() * t.element_size() for t in tensors if _storage(t) not in theirs)
    storages = frozenset(_storage(t) for t in tensors)
    return Shared(model.eval(), module, fingerprint(module, storages), shared, extra, storages)


def share_unet(module, prediction_type: str) -> Shared:
    return share(unet.KIND, module, unet.KIND.config_from_diffusers(dict(module.config), prediction_type))


def share_dit(module) -> Shared:
    return share(dit.KIND, module, dit.KIND.config_from_diffusers(dict(module.config), None))


def share_vae(module) -> Shared:
    return share(vae.KIND, module, vae.KIND.config_from_diffusers(dict(module.config), None))
