"""Loading a checkpoint into a model of a known kind: a diffusers model folder, a weights file
(.safetensors, .bin, .pt, .ckpt) or a state dict -> a fastdiff UNet, DiT or VAE.

Each model module declares its ModelKind (unet.KIND, dit.KIND, vae.KIND) and its from_pretrained
loads through `load(KIND, ...)`; fastdiff.models.kinds lists the kinds and tells which one a
checkpoint holds. This module knows no model class.

The model is built on the meta device and takes the converted tensors themselves
(load_state_dict(assign=True)); safetensors files are read one tensor at a time and every source
entry is dropped once converted, so loading never holds a second copy of the weights."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from . import convert

_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "model.safetensors",
                 "pytorch_model.bin")


@dataclass(frozen=True)
class ModelKind:
    """How checkpoints of one model family load.

    name: "UNet", "DiT" or "VAE"; config, model: its config and model classes.
    diffusers_classes: the _class_name values of its diffusers config.json.
    config_from_diffusers(config_json, prediction_type): its config from a config.json (and the
      prediction_type of a sibling scheduler config, or None).
    layout(keys, config) -> (rename, extra): the renamer of the checkpoint's key layout and the
      tensors that layout does not store (fastdiff.models.convert).
    recognise(keys): whether a checkpoint without config.json is of this kind, by its keys.
    config_from_keys(weights): the config read off the tensor shapes, for checkpoints that carry
      none (the original DiT files); None when they cannot tell it."""
    name: str
    config: type
    model: type
    diffusers_classes: tuple
    config_from_diffusers: Callable[[dict, Optional[str]], Any]
    layout: Callable[[list, Any], tuple]
    recognise: Callable[[list], bool] = lambda keys: False
    config_from_keys: Optional[Callable[[Any], Any]] = None


class _SafetensorsSource:
    """A safetensors file as a mapping that reads a tensor only when it is popped."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self._file = safe_open(str(path), framework="pt")
        self._keys = list(self._file.keys())

    def keys(self):
        return list(self._keys)

    def pop(self, key):
        self._keys.remove(key)
        return self._file.get_tensor(key)

    def shape(self, key):
        return tuple(self._file.get_slice(key).get_shape())


class _DictSource(dict):
    def shape(self, key):
        return tuple(self[key].shape)


def _open_weights(path: Path):
    if path.suffix == ".safetensors":
        return _SafetensorsSource(path)
    sd = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    for wrapper in ("state_dict", "module"):  # LDM .ckpt / some training checkpoints
        if isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    return _DictSource(sd)


def _read_folder(folder: Path):
    """(weights, config.json dict or None, prediction_type from a sibling scheduler or None)."""
    files = [folder / f for f in _WEIGHT_FILES if (folder / f).is_file()] or sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"fastdiff.models.from_pretrained: no weights in {folder}; expected one of "
                                f"{', '.join(_WEIGHT_FILES)}")
    cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else None
    sched = folder.parent / "scheduler" / "scheduler_config.json"
    prediction = json.loads(sched.read_text()).get("prediction_type") if sched.is_file() else None
    return _open_weights(files[0]), cfg, prediction


@dataclass
class Checkpoint:
    """An opened checkpoint: weights (keys(), pop(key), shape(key); each tensor read when popped),
    its config.json (a diffusers folder) and the prediction_type of a sibling scheduler config."""
    weights: Any
    config_json: Optional[dict] = None
    prediction_type: Optional[str] = None
    where: str = "fastdiff.models.from_pretrained(state dict)"

    @classmethod
    def open(cls, source) -> "Checkpoint":
        """A diffusers model folder, a weights file or a state dict (shallow-copied: converting
        pops entries, which leaves the caller's dict alone)."""
        if not isinstance(source, (str, Path)):
            return cls(_DictSource(source))
        path = Path(source)
        where = f"fastdiff.models.from_pretrained({source})"
        if path.is_dir():
            return cls(*_read_folder(path), where=where)
        if path.is_file():
            return cls(_open_weights(path), where=where)
        raise FileNotFoundError(f"fastdiff.models.from_pretrained: {path} does not exist")


def load(kind: ModelKind, source, *, config=None, dtype: Optional[torch.dtype] = None, device=None):
    """A model of `kind` from `source` (a Checkpoint, or what Checkpoint.open takes), in eval mode.
    config: read from config.json or off the tensor shapes when not given. dtype, device: each
    tensor is cast and moved as it is read. Raises ValueError listing every missing key,
    unexpected key and wrong shape."""
    ckpt = source if isinstance(source, Checkpoint) else Checkpoint.open(source)
    config = _config(kind, ckpt, config)
    with torch.device("meta"):
        net = kind.model(config)
    target = net.state_dict()
    rename, extra = kind.layout(ckpt.weights.keys(), config)

    def prepare(t):
        return t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype)

    state = convert.convert(ckpt.weights, rename, target, ckpt.where, prepare)
    like = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    state.update({k: v.to(device=device, dtype=like) for k, v in extra.items()})
    convert.check(state, target, ckpt.where)
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval()


def _config(kind: ModelKind, ckpt: Checkpoint, config):
    """The config given, else the one config.json describes, else the one read off the shapes."""
    where, name = ckpt.where, kind.name
    if config is None and ckpt.config_json is not None:
        cls_name = ckpt.config_json.get("_class_name")
        if cls_name not in kind.diffusers_classes:
            raise ValueError(f"{where}: config.json describes {cls_name}, expected a {name}")
        config = kind.config_from_diffusers(ckpt.config_json, ckpt.prediction_type)
    if config is None and kind.config_from_keys is not None and kind.recognise(ckpt.weights.keys()):
        config = kind.config_from_keys(ckpt.weights)
    if config is None:
        raise ValueError(f"{where}: no config.json; pass config= (e.g. fastdiff.models.UNetConfig.sd15())")
    if not isinstance(config, kind.config):
        raise ValueError(f"{where}: a {name} needs a {kind.config.__name__}, got {type(config).__name__}")
    return config
