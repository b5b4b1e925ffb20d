"""What `fastdiff sample --model` names, told apart before any weights load: a built-in model
(unet, dit, unet-lcm), a folder `fastdiff train` wrote (or one of its model files), a diffusers DiT
folder or pipeline folder (with its VAE in vae/), or a DiT checkpoint file (with vae/ beside it). Each
refusal says what it tried and why it failed."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .errors import UsageError

BUILTIN = ("unet", "dit", "unet-lcm")
# The files of a model in a folder written by fastdiff train (fastdiff.builtin.checkpoint).
TRAINED_FILES = {"unet": ("unet", "text_encoder", "vae"), "dit": ("dit", "vae"),
                 "unet-lcm": ("unet-lcm", "text_encoder", "vae")}


@dataclass(frozen=True)
class ModelSource:
    """what: how messages name it. builtin: 'unet', 'dit' or 'unet-lcm' for the built-in models' kind (their
    prompts are checked, see fastdiff.builtin.prompts). prompts: whether it takes prompts;
    num_classes: how many class labels it takes (None: none). sampler: its default sampler's name.
    load(device) -> SamplingModel."""
    what: str
    builtin: Optional[str]
    prompts: bool
    num_classes: Optional[int]
    sampler: str
    load: Callable


def resolve(value: Optional[str]) -> ModelSource:
    path = Path(value) if value is not None else None
    if value is None or (value in BUILTIN and not path.exists()):
        return _builtin(value or BUILTIN[0], None, f"the built-in {value or BUILTIN[0]}")
    if path.is_dir():
        if (path / "model_index.json").is_file() or (path / "config.json").is_file():
            return _diffusers(value, path)
        trained = [name for name in BUILTIN if (path / f"{name}.safetensors").is_file()]
        if trained:
            return _trained(value, path, trained[0])
        raise UsageError(f"--model {value}: a folder, but neither a diffusers folder (config.json or "
                         "model_index.json) nor one written by fastdiff train (unet.safetensors or dit.safetensors)")
    if path.is_file():
        if path.suffix == ".safetensors" and path.stem in BUILTIN:
            return _trained(value, path.parent, path.stem)
        return _checkpoint_file(value, path)
    raise UsageError(f"--model {value}: not a built-in model ({', '.join(BUILTIN)}) and no such file or folder")


def _builtin(name: str, weights_dir: Optional[Path], what: str) -> ModelSource:
    try:
        from .. import builtin
    except ImportError as e:
        raise UsageError(f"--model {name}: no built-in models in this build ({e}); pass --model with a "
                         "checkpoint folder or file") from None
    classes = builtin.data.num_classes() if name == "dit" else None
    return ModelSource(what, name, True, classes, builtin.defaults(name).sampler,
                       lambda device: builtin.sampling_model(name, device=device, weights_dir=weights_dir))


def _trained(value: str, folder: Path, name: str) -> ModelSource:
    missing = [f"{part}.safetensors" for part in TRAINED_FILES[name] if not (folder / f"{part}.safetensors").is_file()]
    if missing:
        raise UsageError(f"--model {value}: tried it as weights written by fastdiff train ({name}), but {folder} "
                         f"lacks {', '.join(missing)}")
    return _builtin(name, folder, f"the {name} in {folder}")


def _kind_named(class_name: Optional[str]):
    from ..models.kinds import KINDS

    return next((k for k in KINDS if class_name in k.diffusers_classes), None)


def _diffusers(value: str, root: Path) -> ModelSource:
    folder = root
    if (root / "model_index.json").is_file():
        folder = next((root / sub for sub in ("transformer", "unet") if (root / sub).is_dir()), None)
        if folder is None:
            raise UsageError(f"--model {value}: a diffusers pipeline folder without transformer/ or unet/")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"--model {value}: tried it as a diffusers folder, but cannot read "
                         f"{folder / 'config.json'} ({e})") from None
    kind = _kind_named(config.get("_class_name"))
    what = f"the diffusers folder {folder}"
    if kind is None or kind.name != "DiT":
        raise UsageError(f"--model {value}: {_not_sampled(kind, config.get('_class_name'), what)}")
    vae = root / "vae"
    if not vae.is_dir() and config.get("in_channels", 4) != 3:
        raise UsageError(f"--model {value}: {what} holds a latent DiT but there is no VAE to decode its "
                         f"latents in {vae}")
    return _dit_source(what, folder, vae if vae.is_dir() else None, config.get("num_embeds_ada_norm"))


def _checkpoint_file(value: str, path: Path) -> ModelSource:
    from ..models import kinds, loading

    try:
        ckpt = loading.Checkpoint.open(path)
        kind = kinds.kind_of(ckpt)
        config = loading.config_of(kind, ckpt)
    except (ValueError, OSError) as e:
        raise UsageError(f"--model {value}: tried it as a checkpoint file: {e}") from None
    what = f"the checkpoint {path}"
    if kind.name != "DiT":
        raise UsageError(f"--model {value}: {_not_sampled(kind, None, what)}")
    vae = path.parent / "vae"
    if not vae.is_dir() and config.in_channels != 3:
        raise UsageError(f"--model {value}: {what} holds a latent DiT but there is no VAE to decode its latents "
                         f"in {vae}")
    return _dit_source(what, path, vae if vae.is_dir() else None, config.num_classes)


def _not_sampled(kind, class_name: Optional[str], what: str) -> str:
    if kind is None:
        return f"{what} holds {class_name or 'a model without _class_name'}, not a model fastdiff samples (a DiT)"
    if kind.name == "VAE":
        return f"{what} holds a VAE, not a diffusion model"
    return (f"{what} holds a text-conditioned U-Net, which needs its own text encoder: sample it through the "
            "Python API (SamplingModel.from_unet), or pass a folder written by fastdiff train")


def _dit_source(what: str, weights: Path, vae: Optional[Path], num_classes: Optional[int]) -> ModelSource:
    from ..sampling import defaults

    def load(device):
        from .. import models
        from ..sampling import SamplingModel

        dit = models.from_pretrained(weights).to(device).eval()
        decoder = models.from_pretrained(vae).to(device).eval() if vae is not None else None
        return SamplingModel.from_dit(dit, decoder)
    return ModelSource(what, None, False, num_classes, defaults.DIT.sampler, load)
