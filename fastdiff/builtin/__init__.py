"""The models fastdiff ships, so that sampling works right after install: a text-conditioned latent
U-Net with its text encoder, and a DiT conditioned on the (colour, shape) class of the prompt; both
decode through one small VAE. `fastdiff train` trained them on procedural scenes (data), with
captions read by a word-level tokenizer (tokenizer) and a tiny transformer (text_encoder); their
float16 weights are in fastdiff/builtin/weights (checkpoint).

Here are their sizes (CONFIGS), their forward process (schedule), their sampling defaults
(SAMPLING), fresh (new) and trained (load) parts, and the SamplingModel of each
(sampling_model), which `fastdiff sample` and `fastdiff eval` sample through."""
from __future__ import annotations

import dataclasses

from ..models import DiT, DiTConfig, UNet, UNetConfig, VAE, VAEConfig
from ..sampling import NoiseSchedule, SamplingDefaults, SamplingModel
from . import checkpoint, data, prompts
from .text_encoder import TextEncoder, TextEncoderConfig

# The models that sample, the first the default: the U-Net, the DiT, and the U-Net distilled for
# few steps (fastdiff.training.lcm).
NAMES = ("unet", "dit", "unet-lcm")
# Whether a model reads the size and the place a prompt names: the DiT's class is (colour, shape).
READS_SCENE = {"unet": True, "dit": False, "unet-lcm": True}
CONTEXT_DIM = 64  # the text encoder's width = the U-Net's cross-attention width
_CLASSES = {"vae": (VAE, VAEConfig), "unet": (UNet, UNetConfig), "dit": (DiT, DiTConfig),
            "unet-lcm": (UNet, UNetConfig)}

# The sizes of the built-in models (fastdiff.models config fields): 32x32 RGB scenes, a VAE with
# 4x downsampling to 4x8x8 latents, a U-Net and a DiT of about 1-3M parameters over them.
CONFIGS = {
    "vae": dict(in_channels=3, latent_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
                sample_size=32, scaling_factor=1.0),
    "unet": dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(64, 128), layers_per_block=1,
                 cross_attention_dim=CONTEXT_DIM, attention_head_dim=8),
    "dit": dict(input_size=8, patch_size=2, in_channels=4, hidden_size=192, depth=6, num_heads=6,
                num_classes=data.num_classes(), learn_sigma=False),
}

# Trained on noisy captions, the U-Net and the DiT need guidance to follow the prompt; accuracy
# peaks near CFG 7.5 (DPM-Solver++ 2M, 20 steps; README's table).
SAMPLING = SamplingDefaults(sampler="dpmpp_2m", steps=20, guidance_scale=7.5)
# The distilled U-Net learned the guided trajectories: 4 LCM steps, one forward pass each.
FEW_STEP = SamplingDefaults(sampler="lcm", steps=4, guidance_scale=1.0)


def defaults(name: str) -> SamplingDefaults:
    """The sampling defaults of the built-in model `name`."""
    return FEW_STEP if name == "unet-lcm" else SAMPLING


def schedule() -> NoiseSchedule:
    """The forward process of both built-in models: DDPM's linear betas, whose last step leaves
    almost no signal (alpha_bar_T = 4e-5), which suits 8x8 latents."""
    return NoiseSchedule.from_betas("linear", 1000, 1e-4, 0.02)


def _build(part: str, config: dict):
    model_cls, config_cls = _CLASSES[part]
    # JSON turned the configs' tuples into lists; frozen configs want them back.
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return model_cls(config_cls(**config))


def new(part: str):
    """A freshly initialised built-in model: 'vae', 'unet' or 'dit'."""
    return _build(part, CONFIGS[part])


def new_text_encoder() -> TextEncoder:
    return TextEncoder(TextEncoderConfig(dim=CONTEXT_DIM))


def load(part: str, device="cpu", weights_dir=None):
    """A trained built-in model ('vae', 'unet', 'dit', 'unet-lcm' or 'text_encoder') in eval mode."""
    config = checkpoint.config(part, weights_dir)
    model = TextEncoder(TextEncoderConfig(**config)) if part == "text_encoder" else _build(part, config)
    return checkpoint.load(model, part, weights_dir).to(device)


def label(prompt) -> int:
    """The DiT's class of a prompt, its (colour, shape) pair; a class label is taken as it is."""
    if not isinstance(prompt, str):
        if not 0 <= int(prompt) < data.num_classes():
            raise ValueError(f"fastdiff.builtin: the DiT's class labels are 0 to {data.num_classes() - 1}, "
                             f"got {prompt}")
        return int(prompt)
    why = prompts.missing_class(prompt)
    if why:
        raise ValueError(f"fastdiff.builtin: {why}")
    found = data.parse(prompt)
    return found["colour"] * len(data.SHAPES) + found["shape"]


def sampling_model(name: str | None = None, *, device="cpu", weights_dir=None) -> SamplingModel:
    """The SamplingModel of the built-in 'unet' (default), 'dit' or 'unet-lcm'; all take prompts
    (the DiT class labels too, see prompts.class_names) and sample with defaults(name)."""
    name = name or NAMES[0]
    if name not in NAMES:
        raise ValueError(f"fastdiff.builtin: no built-in model {name!r}; expected one of {', '.join(NAMES)}")
    vae = load("vae", device, weights_dir)
    if name != "dit":
        text = load("text_encoder", device, weights_dir)
        model = SamplingModel.from_unet(load(name, device, weights_dir), text.encode, vae, schedule())
    else:
        base = SamplingModel.from_dit(load("dit", device, weights_dir), vae, schedule())
        model = dataclasses.replace(base, takes="prompt", condition=lambda prompts, guidance: base.condition(
            [label(p) for p in prompts], guidance))
    return dataclasses.replace(model, defaults=defaults(name))
