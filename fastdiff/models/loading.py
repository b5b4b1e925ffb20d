"""from_pretrained: a diffusers model folder, a weights file (.safetensors, .bin, .pt, .ckpt) or a
state dict -> a fastdiff UNet, DiT or VAE.

The model is built on the meta device and takes the converted tensors themselves
(load_state_dict(assign=True)); safetensors files are read one tensor at a time and every source
entry is dropped once converted, so loading never holds a second copy of the weights."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import torch

from . import convert

_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "model.safetensors",
                 "pytorch_model.bin")
_DIFFUSERS_CLASSES = {"UNet2DConditionModel": "UNet", "DiTTransformer2DModel": "DiT", "Transformer2DModel": "DiT",
                      "AutoencoderKL": "VAE"}
_DIT_HEADS = {1152: 16, 1024: 16, 768: 12, 384: 6}  # hidden size -> heads of DiT-XL, -L, -B, -S


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
    """(weights source, config.json dict or None, prediction_type from a sibling scheduler or None)."""
    files = [folder / f for f in _WEIGHT_FILES if (folder / f).is_file()] or sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"fastdiff.models.from_pretrained: no weights in {folder}; expected one of "
                                f"{', '.join(_WEIGHT_FILES)}")
    cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else None
    sched = folder.parent / "scheduler" / "scheduler_config.json"
    prediction = json.loads(sched.read_text()).get("prediction_type") if sched.is_file() else None
    return _open_weights(files[0]), cfg, prediction


def _dit_config_from_shapes(src):
    """The original DiT checkpoints carry no config: read it off the tensor shapes."""
    from .configs import DiTConfig

    hidden, in_ch, patch, _ = src.shape("x_embedder.proj.weight")
    keys = src.keys()
    depth = len({k.split(".")[1] for k in keys if k.startswith("blocks.")})
    out = src.shape("final_layer.linear.weight")[0] // (patch * patch)
    grid = math.isqrt(src.shape("pos_embed")[1]) if "pos_embed" in keys else None
    if hidden not in _DIT_HEADS or grid is None:
        raise ValueError("fastdiff.models.from_pretrained: cannot infer this DiT's config (hidden size "
                         f"{hidden}, pos_embed {'present' if grid else 'absent'}); pass config=DiTConfig(...)")
    return DiTConfig(input_size=grid * patch, patch_size=patch, in_channels=in_ch, hidden_size=hidden, depth=depth,
                     num_heads=_DIT_HEADS[hidden], num_classes=src.shape("y_embedder.embedding_table.weight")[0] - 1,
                     learn_sigma=out == 2 * in_ch)


def _layout(kind: str, keys: list, config):
    """(renamer, extra tensors the layout lacks) for the checkpoint's key layout."""
    def has(prefix):
        return any(k.startswith(prefix) for k in keys)
    if kind == "UNet":
        for strip in ("model.diffusion_model.", ""):
            if has(strip + "input_blocks."):
                return convert.ldm_unet_renamer(config, strip), {}
        return convert.renamer(convert.UNET_DIFFUSERS), {}
    if kind == "VAE":
        for strip in ("first_stage_model.", ""):
            if has(strip + "encoder.down."):
                return convert.ldm_vae_renamer(config, strip), {}
        return convert.renamer(convert.VAE_DIFFUSERS), {}
    if "pos_embed.proj.weight" in keys:  # diffusers DiT: the fixed position embedding is not stored
        from .dit import sincos_pos_embed
        return convert.renamer(convert.DIT_DIFFUSERS), {
            "pos_embed": sincos_pos_embed(config.hidden_size, config.input_size // config.patch_size)}
    return convert.renamer(convert.DIT_ORIGINAL), {}


def _model_class(name: str):
    from . import dit, unet, vae
    return {"UNet": unet.UNet, "DiT": dit.DiT, "VAE": vae.VAE}[name]


def from_pretrained(source, *, config=None, model=None, dtype: Optional[torch.dtype] = None, device=None):
    """Load a fastdiff model.

    source: a diffusers model folder (config.json + diffusion_pytorch_model.safetensors/.bin), a
      weights file, or a state dict, in the diffusers, original (LDM single file, whose
      model.diffusion_model.* / first_stage_model.* part is taken) or fastdiff layout.
    config: the model config; read from config.json when the folder has one (a UNet's
      prediction_type from ../scheduler/scheduler_config.json), inferred for original DiT
      checkpoints, required otherwise.
    model: UNet, DiT or VAE; taken from config.json or the config's type when not given.
    dtype, device: each tensor is cast and moved as it is read.
    Raises ValueError listing every missing key, unexpected key and wrong shape."""
    from .configs import DiTConfig, UNetConfig, VAEConfig

    file_cfg = prediction = None
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            src, file_cfg, prediction = _read_folder(path)
        elif path.is_file():
            src = _open_weights(path)
        else:
            raise FileNotFoundError(f"fastdiff.models.from_pretrained: {path} does not exist")
    else:
        src = _DictSource(source)  # a shallow copy: popping it leaves the caller's dict alone
    where = f"fastdiff.models.from_pretrained({source if isinstance(source, (str, Path)) else 'state dict'})"

    kinds = {UNetConfig: "UNet", DiTConfig: "DiT", VAEConfig: "VAE"}
    if model is not None:
        kind = model.__name__
    elif config is not None:
        kind = kinds[type(config)]
    elif file_cfg is not None and file_cfg.get("_class_name") in _DIFFUSERS_CLASSES:
        kind = _DIFFUSERS_CLASSES[file_cfg["_class_name"]]
    elif "x_embedder.proj.weight" in src.keys():
        kind = "DiT"
    else:
        raise ValueError(f"{where}: cannot tell which model this is; pass config=UNetConfig/DiTConfig/VAEConfig(...)")
    if config is None and file_cfg is not None:
        cls_name = file_cfg.get("_class_name")
        if _DIFFUSERS_CLASSES.get(cls_name) != kind:
            raise ValueError(f"{where}: config.json describes {cls_name}, expected a {kind}")
        config = {"UNet": lambda c: UNetConfig.from_diffusers(c, prediction or "epsilon"),
                  "DiT": DiTConfig.from_diffusers, "VAE": VAEConfig.from_diffusers}[kind](file_cfg)
    if config is None and kind == "DiT" and "x_embedder.proj.weight" in src.keys():
        config = _dit_config_from_shapes(src)
    if config is None:
        raise ValueError(f"{where}: no config.json; pass config= (e.g. fastdiff.models.UNetConfig.sd15())")
    if kinds[type(config)] != kind:
        raise ValueError(f"{where}: a {kind} needs a {kind}Config, got {type(config).__name__}")

    with torch.device("meta"):
        net = _model_class(kind)(config)
    target = net.state_dict()
    rename, extra = _layout(kind, src.keys(), config)

    def prepare(t):
        return t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype)

    state = convert.convert(src, rename, target, where, prepare)
    like = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    state.update({k: v.to(device=device, dtype=like) for k, v in extra.items()})
    convert.check(state, target, where)
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval()
