"""Loading a checkpoint into a model of a known kind: a diffusers model folder, a weights file
(.safetensors, .bin, .pt, .ckpt) or a state dict -> a fastdiff UNet, DiT, VAE, MMDiT or Flux.

Each model module declares its ModelKind (unet.KIND, dit.KIND, vae.KIND) and its from_pretrained
loads through `load(KIND, ...)`; fastdiff.models.kinds lists the kinds and tells which one a
checkpoint holds. This module knows no model class.

The model is built on the meta device and takes the converted tensors themselves
(load_state_dict(assign=True)); safetensors files are read one tensor at a time and every source
entry is dropped once converted, so loading never holds a second copy of the weights."""
from __future__ import annotations

import dataclasses
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from . import convert

_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "model.safetensors",
                 "pytorch_model.bin")
_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
ACCEPTED = "a diffusers model folder or a checkpoint file (" + ", ".join(_FILE_SUFFIXES) + ")"


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
    """A safetensors file as a mapping that reads a tensor only when it is popped; `config` is the
    model config a fastdiff weights file stores in its metadata (fastdiff train writes it), or None."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self._file = safe_open(str(path), framework="pt")
        self._keys = list(self._file.keys())
        self.config = json.loads((self._file.metadata() or {}).get("config", "null"))

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


def _not_a_checkpoint(path: Path, why: str) -> ValueError:
    return ValueError(f"fastdiff.models.from_pretrained: {path} is not a checkpoint ({why}); expected {ACCEPTED}")


def _open_weights(path: Path):
    if path.suffix not in _FILE_SUFFIXES:
        raise _not_a_checkpoint(path, f"the extension {path.suffix or '(none)'} is not a checkpoint's")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError

        try:
            return _SafetensorsSource(path)
        except (SafetensorError, json.JSONDecodeError) as e:
            raise _not_a_checkpoint(path, f"unreadable as safetensors: {e}") from None
    try:  # only zip-format files map; older torch.save files load whole
        sd = torch.load(str(path), map_location="cpu", mmap=zipfile.is_zipfile(path), weights_only=True)
    except OSError:
        raise
    except Exception as e:  # arbitrary bytes fail in the unpickler in arbitrary ways
        raise _not_a_checkpoint(path, f"unreadable by torch.load: {type(e).__name__}: {e}".splitlines()[0]) from None
    if not isinstance(sd, dict):
        raise _not_a_checkpoint(path, f"it holds a {type(sd).__name__}, not a state dict")
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
    its config.json (a diffusers folder) and the prediction_type of a sibling scheduler config; a
    fastdiff weights file carries its config instead (stored_config)."""
    weights: Any
    config_json: Optional[dict] = None
    prediction_type: Optional[str] = None
    where: str = "fastdiff.models.from_pretrained(state dict)"

    @property
    def stored_config(self) -> Optional[dict]:
        """The config fields a fastdiff weights file carries in its metadata, or None."""
        return getattr(self.weights, "config", None) or None

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
    config = config_of(kind, ckpt, config)
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


def config_from_fields(config_cls: type, fields: dict):
    """A config of config_cls from stored fields (JSON turned its tuples into lists), or None when
    the fields are not all config_cls's."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    if not fields or not set(fields) <= names:
        return None
    return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def config_of(kind: ModelKind, ckpt: Checkpoint, config=None):
    """The config given, else the one config.json describes or the weights file stores, else the
    one read off the shapes."""
    where, name = ckpt.where, kind.name
    if config is None and ckpt.config_json is not None:
        cls_name = ckpt.config_json.get("_class_name")
        if cls_name not in kind.diffusers_classes:
            raise ValueError(f"{where}: config.json describes {cls_name}, expected a {name}")
        config = kind.config_from_diffusers(ckpt.config_json, ckpt.prediction_type)
    if config is None and ckpt.config_json is None and ckpt.stored_config is not None:
        config = config_from_fields(kind.config, ckpt.stored_config)
    if config is None and kind.config_from_keys is not None and kind.recognise(ckpt.weights.keys()):
        config = kind.config_from_keys(ckpt.weights)
    if config is None:
        raise ValueError(f"{where}: no config.json; pass config= (e.g. fastdiff.models.UNetConfig.sd15())")
    if not isinstance(config, kind.config):
        raise ValueError(f"{where}: a {name} needs a {kind.config.__name__}, got {type(config).__name__}")
    return config
