"""DiT (Peebles & Xie, 2023): patchify, adaLN-Zero transformer blocks conditioned on the timestep
and the class, learned-sigma output. Parameter names follow facebookresearch/DiT."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from .. import ops
from . import convert, loading
from .blocks import Attention, Mlp, TimestepEmbedding, sincos_pos_embed, timestep_embedding
from .configs import DiTConfig

NORM_EPS = 1e-6  # the LayerNorms without affine before the attention and the output


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, in_ch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, HW/p^2, dim)


class LabelEmbedding(nn.Module):
    """Class labels -> vectors; label num_classes is the null class of classifier-free guidance."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


class DiTBlock(nn.Module):
    """Self-attention and MLP, each modulated (shift, scale) and gated by the conditioning."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, mlp_norm_eps: float):
        super().__init__()
        self.mlp_norm_eps = mlp_norm_eps
        self.attn = Attention(dim, heads, dim // heads, qkv_bias=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        h = ops.adaln(x, shift_msa, scale_msa, NORM_EPS)
        # the attention's gated residual add, the MLP's LayerNorm and its modulation in one pass
        x, h = ops.adaln(self.attn(h), shift_mlp, scale_mlp, self.mlp_norm_eps, gate=gate_msa, residual=x)
        return torch.addcmul(x, gate_mlp[:, None], self.mlp(h))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch: int, out_ch: int):
        super().__init__()
        self.linear = nn.Linear(dim, patch * patch * out_ch)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(ops.adaln(x, shift, scale, NORM_EPS))  # (B, T, p*p*out)


class DiT(nn.Module):
    """forward(x (B, C, H, W) latents, t (B,) timesteps, y (B,) long labels, num_classes = null)
    -> (B, out_channels, H, W); with learn_sigma the first C channels are the noise prediction."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = c = config
        self.x_embedder = PatchEmbed(c.patch_size, c.in_channels, c.hidden_size)
        self.t_embedder = TimestepEmbedding(256, c.hidden_size)
        self.y_embedder = LabelEmbedding(c.num_classes, c.hidden_size)
        # Fixed, but kept in the state dict as in the original DiT checkpoints.
        self.register_buffer("pos_embed", sincos_pos_embed(c.hidden_size, c.input_size // c.patch_size))
        self.blocks = nn.ModuleList(DiTBlock(c.hidden_size, c.num_heads, c.mlp_ratio, c.mlp_norm_eps)
                                    for _ in range(c.depth))
        self.final_layer = FinalLayer(c.hidden_size, c.patch_size, c.out_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c, (b, _, h, w) = self.config, x.shape
        dtype = self.x_embedder.proj.weight.dtype
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(b)
        tokens = self.x_embedder(x.to(dtype)) + self.pos_embed                      # (B, T, D)
        cond = self.t_embedder(timestep_embedding(t, 256, True, c.freq_shift)) + self.y_embedder(y)  # (B, D)
        for block in self.blocks:
            tokens = block(tokens, cond)
        out = self.final_layer(tokens, cond)                                        # (B, T, p*p*C)
        p, gh, gw = c.patch_size, h // c.patch_size, w // c.patch_size
        out = out.reshape(b, gh, gw, p, p, c.out_channels).permute(0, 5, 1, 3, 2, 4)  # (B, C, gh, p, gw, p)
        return out.reshape(b, c.out_channels, h, w)

    @classmethod
    def from_pretrained(cls, source, config: Optional[DiTConfig] = None, **kw) -> "DiT":
        """See fastdiff.models.from_pretrained."""
        return loading.load(KIND, source, config=config, **kw)


_HEADS = {1152: 16, 1024: 16, 768: 12, 384: 6}  # hidden size -> heads of DiT-XL, -L, -B, -S


def config_from_shapes(weights) -> DiTConfig:
    """The original DiT checkpoints carry no config: read it off the tensor shapes."""
    hidden, in_ch, patch, _ = weights.shape("x_embedder.proj.weight")
    keys = weights.keys()
    depth = len({k.split(".")[1] for k in keys if k.startswith("blocks.")})
    out = weights.shape("final_layer.linear.weight")[0] // (patch * patch)
    grid = math.isqrt(weights.shape("pos_embed")[1]) if "pos_embed" in keys else None
    if hidden not in _HEADS or grid is None:
        raise ValueError("fastdiff.models.from_pretrained: cannot infer this DiT's config (hidden size "
                         f"{hidden}, pos_embed {'present' if grid else 'absent'}); pass config=DiTConfig(...)")
    return DiTConfig(input_size=grid * patch, patch_size=patch, in_channels=in_ch, hidden_size=hidden, depth=depth,
                     num_heads=_HEADS[hidden], num_classes=weights.shape("y_embedder.embedding_table.weight")[0] - 1,
                     learn_sigma=out == 2 * in_ch)


KIND = loading.ModelKind(
    "DiT", DiTConfig, DiT, diffusers_classes=("DiTTransformer2DModel", "Transformer2DModel"),
    config_from_diffusers=lambda cfg, prediction_type: DiTConfig.from_diffusers(cfg), layout=convert.dit_layout,
    recognise=lambda keys: "y_embedder.embedding_table.weight" in keys, config_from_keys=config_from_shapes)
