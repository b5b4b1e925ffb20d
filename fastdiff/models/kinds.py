"""The table of model kinds, and from_pretrained, which tells the kind of a checkpoint."""
from __future__ import annotations

from typing import Optional

import torch

from . import dit, flux, loading, mmdit, unet, vae
from .loading import Checkpoint, ModelKind

KINDS: tuple[ModelKind, ...] = (unet.KIND, dit.KIND, vae.KIND, mmdit.KIND, flux.KIND)


def kind_of(ckpt: Checkpoint, *, config=None, model=None) -> ModelKind:
    """The kind of model class `model`, else of `config`, else the one config.json names or whose
    config the weights file stores, else the one whose keys the weights have."""
    if model is not None:
        found = [k for k in KINDS if k.model is model]
    elif config is not None:
        found = [k for k in KINDS if isinstance(config, k.config)]
    else:
        named = (ckpt.config_json or {}).get("_class_name")
        found = [k for k in KINDS if named in k.diffusers_classes] or \
            [k for k in KINDS if ckpt.stored_config and loading.config_from_fields(k.config, ckpt.stored_config)] or \
            [k for k in KINDS if k.recognise(ckpt.weights.keys())]
    if not found:
        raise ValueError(f"{ckpt.where}: cannot tell which model this is; "
                         "pass config=UNetConfig/DiTConfig/VAEConfig/MMDiTConfig/FluxConfig(...)")
    return found[0]


def from_pretrained(source, *, config=None, model=None, dtype: Optional[torch.dtype] = None, device=None):
    """Load a fastdiff model.

    source: a diffusers model folder (config.json + diffusion_pytorch_model.safetensors/.bin), a
      weights file, or a state dict, in the diffusers, original (LDM, SD3 or Flux single file, whose
      model.diffusion_model.* / first_stage_model.* part is taken) or fastdiff layout.
    config: the model config; read from config.json when the folder has one (a UNet's
      prediction_type from ../scheduler/scheduler_config.json), inferred for original DiT, SD3
      and Flux checkpoints, required otherwise.
    model: UNet, DiT, VAE, MMDiT or Flux; taken from config.json or the config's type when not given.
    dtype, device: each tensor is cast and moved as it is read.
    Raises ValueError listing every missing key, unexpected key and wrong shape."""
    ckpt = Checkpoint.open(source)
    return loading.load(kind_of(ckpt, config=config, model=model), ckpt, config=config, dtype=dtype, device=device)
