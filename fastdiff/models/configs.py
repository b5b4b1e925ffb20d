"""Model configs: frozen dataclasses with named presets.

Each config reads the matching diffusers config.json through `from_diffusers(dict)`, which raises
on any setting the fastdiff model does not implement rather than silently computing something else.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Union

IntOrTuple = Union[int, tuple]


def _per_level(value, n: int, name: str) -> tuple:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"fastdiff.models.configs: {name} has {len(value)} entries, expected one per level ({n})")
        return tuple(value)
    return (value,) * n


def _unsupported(cls: str, cfg: dict, allowed: dict) -> None:
    """Raise listing every diffusers setting that differs from the one value fastdiff implements."""
    def same(a, b):  # a model's in-memory config holds tuples where config.json has lists
        return list(a) == list(b) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b
    bad = [f"{k}={cfg[k]!r} (expected {v!r})" for k, v in allowed.items() if k in cfg and not same(cfg[k], v)]
    if bad:
        raise ValueError(f"fastdiff.models.configs: {cls} config.json has settings fastdiff does not implement: "
                         + ", ".join(bad))


def _from_fields(cls, cfg: dict):
    """The config of cls from the config.json fields that share its field names (lists as tuples)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in names})


@dataclass(frozen=True)
class UNetConfig:
    """The latent U-Net of Stable Diffusion (defaults: SD1.5).

    transformer_depth: spatial-transformer blocks per level, 0 for a level without attention;
    None means 1 at every level but the deepest (the SD1.x/2.x layout). The heads of a level are
    num_attention_heads when given, else channels // attention_head_dim (64 when neither is given).
    Conv 1x1 and linear proj_in/proj_out checkpoints (SD1.x vs SD2.x) compute the same thing and
    both load into the one linear projection.
    addition_embed_type "text_time" is SDXL's added conditioning (pooled text embeds + time ids).
    """
    sample_size: int = 64
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    transformer_depth: Optional[tuple] = None
    mid_transformer_depth: int = 1
    cross_attention_dim: int = 768
    num_attention_heads: Optional[IntOrTuple] = None
    attention_head_dim: Optional[IntOrTuple] = None
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    addition_embed_type: Optional[str] = None
    addition_time_embed_dim: Optional[int] = None
    projection_class_embeddings_input_dim: Optional[int] = None
    prediction_type: str = "epsilon"

    def __post_init__(self):
        if self.num_attention_heads is not None and self.attention_head_dim is not None:
            raise ValueError("fastdiff.models.UNetConfig: give num_attention_heads or attention_head_dim, not both")
        if self.addition_embed_type not in (None, "text_time"):
            raise ValueError(f"fastdiff.models.UNetConfig: addition_embed_type must be None or 'text_time', "
                             f"got {self.addition_embed_type!r}")

    @property
    def depths(self) -> tuple:
        n = len(self.block_out_channels)
        if self.transformer_depth is None:
            return (1,) * (n - 1) + (0,)
        return _per_level(self.transformer_depth, n, "transformer_depth")

    @property
    def heads(self) -> tuple:
        n, ch = len(self.block_out_channels), self.block_out_channels
        if self.num_attention_heads is not None:
            return _per_level(self.num_attention_heads, n, "num_attention_heads")
        dims = _per_level(self.attention_head_dim or 64, n, "attention_head_dim")
        return tuple(c // d for c, d in zip(ch, dims))

    @classmethod
    def sd15(cls, **kw) -> "UNetConfig":
        return cls(**{**dict(num_attention_heads=8), **kw})

    @classmethod
    def sd2(cls, **kw) -> "UNetConfig":
        """SD2.x at 768px (v-prediction, head dim 64); sd2(sample_size=64, prediction_type='epsilon') is 2.x-base."""
        return cls(**{**dict(sample_size=96, cross_attention_dim=1024, attention_head_dim=64,
                             prediction_type="v_prediction"), **kw})

    @classmethod
    def sdxl(cls, **kw) -> "UNetConfig":
        return cls(**{**dict(sample_size=128, block_out_channels=(320, 640, 1280), transformer_depth=(0, 2, 10),
                             mid_transformer_depth=10, cross_attention_dim=2048, attention_head_dim=64,
                             addition_embed_type="text_time", addition_time_embed_dim=256,
                             projection_class_embeddings_input_dim=2816), **kw})

    @classmethod
    def tiny(cls, **kw) -> "UNetConfig":
        """32x32 latents, channels 32/64, attention at the 16x16 level and the middle: fast on a CPU."""
        return cls(**{**dict(sample_size=32, block_out_channels=(32, 64), layers_per_block=1, transformer_depth=(0, 1),
                             cross_attention_dim=64, attention_head_dim=16, norm_num_groups=8), **kw})

    @classmethod
    def from_diffusers(cls, cfg: dict, prediction_type: str = "epsilon") -> "UNetConfig":
        """A UNet2DConditionModel config.json (prediction_type lives in the scheduler's config)."""
        _unsupported("UNet2DConditionModel", cfg, dict(
            class_embed_type=None, encoder_hid_dim=None, time_embedding_type="positional", only_cross_attention=False,
            dual_cross_attention=False, resnet_time_scale_shift="default", conv_in_kernel=3, conv_out_kernel=3,
            attention_type="default", time_cond_proj_dim=None, mid_block_type="UNetMidBlock2DCrossAttn",
            reverse_transformer_layers_per_block=None, act_fn="silu", center_input_sample=False,
            time_embedding_act_fn=None, timestep_post_act=None, class_embeddings_concat=False,
            cross_attention_norm=None, mid_block_only_cross_attention=None))
        n = len(cfg["block_out_channels"])
        down = cfg.get("down_block_types", ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"])
        up = cfg.get("up_block_types", ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1))
        attn = [t.startswith("CrossAttn") for t in down]
        if [t.startswith("CrossAttn") for t in reversed(up)] != attn:
            raise ValueError(f"fastdiff.models.configs: up_block_types {up} do not mirror down_block_types {down}")
        per_block = _per_level(cfg.get("transformer_layers_per_block", 1), n, "transformer_layers_per_block")
        heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)  # diffusers' naming: heads
        ctx = cfg.get("cross_attention_dim", 1280)
        if isinstance(ctx, (list, tuple)):
            if len(set(ctx)) != 1:
                raise ValueError(f"fastdiff.models.configs: per-level cross_attention_dim {ctx} is not supported")
            ctx = ctx[0]
        return cls(sample_size=cfg.get("sample_size", 64), in_channels=cfg.get("in_channels", 4),
                   out_channels=cfg.get("out_channels", 4), block_out_channels=tuple(cfg["block_out_channels"]),
                   layers_per_block=cfg.get("layers_per_block", 2),
                   transformer_depth=tuple(d if a else 0 for d, a in zip(per_block, attn)),
                   mid_transformer_depth=per_block[-1], cross_attention_dim=ctx,
                   num_attention_heads=tuple(heads) if isinstance(heads, list) else heads,
                   norm_num_groups=cfg.get("norm_num_groups", 32), norm_eps=cfg.get("norm_eps", 1e-5),
                   flip_sin_to_cos=cfg.get("flip_sin_to_cos", True), freq_shift=cfg.get("freq_shift", 0),
                   addition_embed_type=cfg.get("addition_embed_type"),
                   addition_time_embed_dim=cfg.get("addition_time_embed_dim"),
                   projection_class_embeddings_input_dim=cfg.get("projection_class_embeddings_input_dim"),
                   prediction_type=prediction_type)


@dataclass(frozen=True)
class DiTConfig:
    """DiT (Peebles & Xie, 2023); defaults: DiT-XL/2 at 256px. input_size is the latent side.

    diffusers' DiTTransformer2DModel computes slightly differently from the original: its timestep
    embedding's frequency offset freq_shift is 1 (0 in the original) and the LayerNorm before each
    MLP has eps mlp_norm_eps = its norm_eps (1e-5 by default; 1e-6 in the original)."""
    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    learn_sigma: bool = True
    freq_shift: int = 0
    mlp_norm_eps: float = 1e-6

    @property
    def sample_size(self) -> int:
        return self.input_size

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @classmethod
    def xl2(cls, image_size: int = 256, **kw) -> "DiTConfig":
        return cls(**{**dict(input_size=image_size // 8), **kw})

    @classmethod
    def b2(cls, image_size: int = 256, **kw) -> "DiTConfig":
        return cls(**{**dict(input_size=image_size // 8, hidden_size=768, depth=12, num_heads=12), **kw})

    @classmethod
    def s2(cls, image_size: int = 256, **kw) -> "DiTConfig":
        return cls(**{**dict(input_size=image_size // 8, hidden_size=384, depth=12, num_heads=6), **kw})

    @classmethod
    def tiny(cls, **kw) -> "DiTConfig":
        """8x8 latents, width 128, 6 blocks, 10 classes: about 1.8M parameters."""
        return cls(**{**dict(input_size=8, hidden_size=128, depth=6, num_heads=4, num_classes=10,
                             learn_sigma=False), **kw})

    @classmethod
    def from_diffusers(cls, cfg: dict) -> "DiTConfig":
        """A DiTTransformer2DModel (or ada_norm_zero Transformer2DModel) config.json."""
        _unsupported("DiTTransformer2DModel", cfg, dict(norm_type="ada_norm_zero", activation_fn="gelu-approximate",
                                                        norm_elementwise_affine=False, attention_bias=True,
                                                        upcast_attention=False))
        inp = cfg.get("in_channels", 4)
        out = cfg.get("out_channels") or inp
        if out not in (inp, 2 * inp):
            raise ValueError(f"fastdiff.models.configs: DiT out_channels must be in_channels or twice it, got {out}")
        heads, head_dim = cfg.get("num_attention_heads", 16), cfg.get("attention_head_dim", 72)
        return cls(input_size=cfg.get("sample_size", 32), patch_size=cfg.get("patch_size", 2), in_channels=inp,
                   hidden_size=heads * head_dim, depth=cfg.get("num_layers", 28), num_heads=heads,
                   num_classes=cfg.get("num_embeds_ada_norm", 1000), learn_sigma=out == 2 * inp, freq_shift=1,
                   mlp_norm_eps=cfg.get("norm_eps", 1e-5))


@dataclass(frozen=True)
class VAEConfig:
    """The AutoencoderKL of Stable Diffusion (defaults: SD1.x/2.x, 8x downsampling to 4 channels).
    Latents fed to a diffusion model are (z - shift_factor) * scaling_factor."""
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    sample_size: int = 512
    scaling_factor: float = 0.18215
    shift_factor: Optional[float] = None
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    @classmethod
    def sd(cls, **kw) -> "VAEConfig":
        return cls(**kw)

    @classmethod
    def sdxl(cls, **kw) -> "VAEConfig":
        return cls(**{**dict(sample_size=1024, scaling_factor=0.13025), **kw})

    @classmethod
    def tiny(cls, **kw) -> "VAEConfig":
        """32x32 images to 4x8x8 latents, channels 32/64/64."""
        return cls(**{**dict(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8, sample_size=32,
                             scaling_factor=1.0), **kw})

    @classmethod
    def from_diffusers(cls, cfg: dict) -> "VAEConfig":
        """An AutoencoderKL config.json."""
        n = len(cfg["block_out_channels"])
        _unsupported("AutoencoderKL", cfg, dict(act_fn="silu", down_block_types=["DownEncoderBlock2D"] * n,
                                                up_block_types=["UpDecoderBlock2D"] * n))
        return _from_fields(cls, cfg)



@dataclass(frozen=True)
class MMDiTConfig:
    """The MM-DiT of Stable Diffusion 3 / 3.5 (defaults: SD3-medium); field names as in diffusers'
    SD3Transformer2DModel. The text stream is projected to the width of the image stream
    (caption_projection_dim = heads * head dim in every released model). dual_attention_layers:
    the blocks whose image stream has a second, image-only attention (SD3.5-medium); qk_norm:
    None or "rms_norm" (SD3.5), a per-head RMSNorm of q and k."""
    sample_size: int = 128
    patch_size: int = 2
    in_channels: int = 16
    out_channels: int = 16
    num_layers: int = 24
    attention_head_dim: int = 64
    num_attention_heads: int = 24
    joint_attention_dim: int = 4096
    caption_projection_dim: int = 1536
    pooled_projection_dim: int = 2048
    pos_embed_max_size: int = 192
    dual_attention_layers: tuple = ()
    qk_norm: Optional[str] = None

    def __post_init__(self):
        if self.caption_projection_dim != self.inner_dim:
            raise ValueError(f"fastdiff.models.configs: MMDiT caption_projection_dim must equal heads x head dim "
                             f"({self.inner_dim}), got {self.caption_projection_dim}")
        if self.qk_norm not in (None, "rms_norm"):
            raise ValueError(f"fastdiff.models.configs: MMDiT qk_norm must be None or 'rms_norm', got {self.qk_norm!r}")

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @classmethod
    def sd3_medium(cls, **kw) -> "MMDiTConfig":
        return cls(**kw)

    @classmethod
    def sd35_medium(cls, **kw) -> "MMDiTConfig":
        return cls(**{**dict(pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm"),
                      **kw})

    @classmethod
    def sd35_large(cls, **kw) -> "MMDiTConfig":
        return cls(**{**dict(num_layers=38, num_attention_heads=38, caption_projection_dim=2432,
                             qk_norm="rms_norm"), **kw})

    @classmethod
    def from_diffusers(cls, cfg: dict) -> "MMDiTConfig":
        """An SD3Transformer2DModel config.json."""
        cfg = {**cfg, "out_channels": cfg.get("out_channels") or cfg.get("in_channels", 16)}
        return _from_fields(cls, cfg)


@dataclass(frozen=True)
class FluxConfig:
    """Flux.1 (defaults: dev); field names as in diffusers' FluxTransformer2DModel. Latents come in
    packed, (B, H/2 * W/2, 64) tokens of 2x2 patches of 16 channels; guidance_embeds: the
    guidance-distilled models (dev) take the guidance scale as an input; axes_dims_rope: the head
    dims rotated by each of the three position ids (they sum to the head dim)."""
    patch_size: int = 1
    in_channels: int = 64
    out_channels: Optional[int] = None
    num_layers: int = 19
    num_single_layers: int = 38
    attention_head_dim: int = 128
    num_attention_heads: int = 24
    joint_attention_dim: int = 4096
    pooled_projection_dim: int = 768
    guidance_embeds: bool = True
    axes_dims_rope: tuple = (16, 56, 56)
    mlp_ratio: float = 4.0

    def __post_init__(self):
        if sum(self.axes_dims_rope) != self.attention_head_dim or any(d % 2 for d in self.axes_dims_rope):
            raise ValueError(f"fastdiff.models.configs: Flux axes_dims_rope must be even and sum to the head dim "
                             f"{self.attention_head_dim}, got {self.axes_dims_rope}")

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def output_channels(self) -> int:
        return self.out_channels or self.in_channels

    @classmethod
    def dev(cls, **kw) -> "FluxConfig":
        return cls(**kw)

    @classmethod
    def schnell(cls, **kw) -> "FluxConfig":
        return cls(**{**dict(guidance_embeds=False), **kw})

    @classmethod
    def from_diffusers(cls, cfg: dict) -> "FluxConfig":
        """A FluxTransformer2DModel config.json."""
        return _from_fields(cls, cfg)
