"""The built-in default models, loaded from the weights shipped in the package: a text-conditioned
latent U-Net with its text encoder, and a DiT conditioned on the (colour, shape) class of the
prompt; both decode through the same small VAE. `fastdiff sample` with no --model uses
`default_model()`."""
from __future__ import annotations

import dataclasses
import importlib

import torch

from . import checkpoint, data
from .text_encoder import TextEncoder, TextEncoderConfig
from .train import schedule

NAMES = ("unet", "dit")
CONTEXT_DIM = 64  # the text encoder's width = the U-Net's cross-attention width
_CLASSES = {"vae": ("VAE", "VAEConfig"), "unet": ("UNet", "UNetConfig"), "dit": ("DiT", "DiTConfig")}

# The sizes of the default models (fastdiff.models config fields): 32x32 RGB scenes, a VAE with
# 4x downsampling to 4x8x8 latents, a U-Net and a DiT of about 1-3M parameters over them.
CONFIGS = {
    "vae": dict(in_channels=3, latent_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
                sample_size=32, scaling_factor=1.0),
    "unet": dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(64, 128), layers_per_block=1,
                 cross_attention_dim=CONTEXT_DIM, attention_head_dim=8),
    "dit": dict(input_size=8, patch_size=2, in_channels=4, hidden_size=192, depth=6, num_heads=6,
                num_classes=data.num_classes(), learn_sigma=False),
}


def _build(part: str, config: dict):
    models = importlib.import_module("fastdiff.models")
    cls, cfg = _CLASSES[part]
    # JSON turned the configs' tuples into lists; frozen configs want them back.
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return getattr(models, cls)(getattr(models, cfg)(**config))


def new(part: str):
    """A freshly initialised default model: 'vae', 'unet' or 'dit'."""
    return _build(part, CONFIGS[part])


def new_text_encoder() -> TextEncoder:
    return TextEncoder(TextEncoderConfig(dim=CONTEXT_DIM))


def load(part: str, device="cpu", weights_dir=None):
    """A trained default model ('vae', 'unet', 'dit' or 'text_encoder') in eval mode."""
    config = checkpoint.config(part, weights_dir)
    model = TextEncoder(TextEncoderConfig(**config)) if part == "text_encoder" else _build(part, config)
    return checkpoint.load(model, part, weights_dir).to(device)


def label(prompt: str) -> int:
    """The DiT's class of a prompt: its (colour, shape) pair."""
    found = data.parse(prompt)
    if "colour" not in found or "shape" not in found:
        raise ValueError(f"fastdiff.training.default: the DiT needs a prompt naming a colour "
                         f"({', '.join(data.COLOUR_NAMES)}) and a shape ({', '.join(data.SHAPES)}), got {prompt!r}")
    return found["colour"] * len(data.SHAPES) + found["shape"]


# Trained on noisy captions, both built-in models need guidance to follow the prompt; accuracy
# peaks near CFG 7.5 (DPM-Solver++ 2M, 20 steps; README's table).
SAMPLING_DEFAULTS = {"sampler": "dpmpp_2m", "steps": 20, "guidance_scale": 7.5}


def default_model(name: str | None = None, *, device="cpu", weights_dir=None):
    """The SamplingModel of the built-in 'unet' (default) or 'dit'; both take prompts."""
    from ..sampling.model import SamplingModel

    name = name or "unet"
    if name not in NAMES:
        raise ValueError(f"fastdiff.training.default: no built-in model {name!r}; expected one of {', '.join(NAMES)}")
    vae = load("vae", device, weights_dir)
    if name == "unet":
        text = load("text_encoder", device, weights_dir)
        model = SamplingModel.from_unet(load("unet", device, weights_dir), text.encode, vae, schedule())
    else:
        base = SamplingModel.from_dit(load("dit", device, weights_dir), vae, schedule())
        model = dataclasses.replace(base, takes="prompt", condition=lambda prompts, guidance: base.condition(
            [label(p) for p in prompts], guidance))
    return dataclasses.replace(model, defaults={**model.defaults, **SAMPLING_DEFAULTS})


@torch.no_grad()
def generate(model, prompts: list[str], sampler: str = "dpmpp_2m", steps: int = 20, guidance_scale: float = 7.5,
             seed: int = 0, progress: bool = False) -> torch.Tensor:
    """Images (N, 3, 32, 32) in [-1, 1] for N prompts, through fastdiff's sampling pipeline."""
    from ..sampling import Pipeline, get_sampler

    guidance = None if guidance_scale == 1 else guidance_scale
    cond = model.condition(list(prompts), guidance is not None)
    pipe = Pipeline(model.denoise, model.schedule, prediction_type=model.prediction_type, vae=model.vae)
    latents = pipe.sample((len(prompts), *model.latent_shape), get_sampler(sampler), steps, cond=cond,
                          guidance_scale=guidance, seed=seed, device=cond[0].device, dtype=model.dtype,
                          progress=progress)
    return pipe.decode(latents).clamp(-1, 1)
