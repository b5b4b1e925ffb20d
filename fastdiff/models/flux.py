"""Flux.1 (Black Forest Labs, 2024): double-stream blocks (text and image tokens with their own
weights, attending jointly, text first) then single-stream blocks over the joined tokens, rotary
position embeddings from three position ids per token, and, in the guidance-distilled models,
the guidance scale as an input. Parameter names follow the original checkpoints with fastdiff's
names for the modulations, MLPs and q/k norms (fastdiff.models.convert_mmdit)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from . import convert_mmdit, loading
from .blocks import TimestepEmbedding, timestep_embedding
from .configs import FluxConfig
from .mmdit_blocks import NORM_EPS, FinalLayer, HeadNorm, StreamBlock, joint_attention, norm_rope


def rope_tables(ids: torch.Tensor, axes_dims: tuple, theta: float = 10000.0, dtype=torch.float32):
    """cos and sin (S, head_dim) of the rotary embedding of positions ids (S, n_axes): each axis
    rotates its own slice of the head dim at theta^(-2i/dim) per unit, every angle repeated for
    the two members of its pair. Angles in float64, as diffusers and the original compute them."""
    pos = ids.to(torch.float64)
    angles = []
    for i, d in enumerate(axes_dims):
        freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=ids.device) / d)
        angles.append(torch.outer(pos[:, i], freqs).repeat_interleave(2, dim=1))
    angles = torch.cat(angles, dim=1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


class DoubleBlock(nn.Module):
    """Text (txt) and image (img) streams, each modulated by six vectors, attending jointly."""

    def __init__(self, c: FluxConfig):
        super().__init__()
        args = (c.inner_dim, c.num_attention_heads, c.attention_head_dim, 6, True, c.mlp_ratio)
        self.img, self.txt = StreamBlock(*args), StreamBlock(*args)

    def forward(self, img, txt, silu_c, rope):
        cos, sin = rope
        n = txt.shape[1]
        mi, mt = self.img.modulate(silu_c), self.txt.modulate(silu_c)
        qkv_t = self.txt.attn.qkv_heads(ops.adaln(txt, mt[0], mt[1], NORM_EPS), (cos[:n], sin[:n]))
        qkv_i = self.img.attn.qkv_heads(ops.adaln(img, mi[0], mi[1], NORM_EPS), (cos[n:], sin[n:]))
        at, ai = joint_attention([qkv_t, qkv_i])
        return self.img.finish(img, ai, mi), _clip(self.txt.finish(txt, at, mt))


class SingleBlock(nn.Module):
    """One stream over the joined tokens: linear1 computes the fused QKV and the MLP input in one
    matmul, linear2 projects attention and MLP outputs together; modulated by three vectors."""

    def __init__(self, c: FluxConfig):
        super().__init__()
        dim, self.heads, self.head_dim = c.inner_dim, c.num_attention_heads, c.attention_head_dim
        self.mlp_hidden = int(dim * c.mlp_ratio)
        self.modulation = nn.Linear(dim, 3 * dim)
        self.linear1 = nn.Linear(dim, 3 * dim + self.mlp_hidden)
        self.norm_q, self.norm_k = HeadNorm(self.head_dim), HeadNorm(self.head_dim)
        self.linear2 = nn.Linear(dim + self.mlp_hidden, dim)

    def forward(self, x, silu_c, rope):
        shift, scale, gate = self.modulation(silu_c).chunk(3, dim=1)
        h = self.linear1(ops.adaln(x, shift, scale, NORM_EPS))
        # slices, not split(): qk_norm_rope writes into the QKV part, which autograd allows on a plain view only
        inner = 3 * self.heads * self.head_dim
        qkv, mlp = h[..., :inner].unflatten(-1, (3, self.heads, self.head_dim)), h[..., inner:]  # (B, S, 3, H, D)
        norm_rope(qkv, self.norm_q.weight, self.norm_k.weight, rope)
        attn = joint_attention([qkv])[0]                           # (B, S, H * D)
        out = self.linear2(torch.cat([attn, F.gelu(mlp, approximate="tanh")], dim=-1))
        return _clip(torch.addcmul(x, gate[:, None], out))


def _clip(x: torch.Tensor) -> torch.Tensor:
    """fp16 activations saturate at the largest finite value rather than overflow, as diffusers does."""
    return x.clamp(-65504, 65504) if x.dtype == torch.float16 else x


class Flux(nn.Module):
    """forward(hidden_states (B, S, in_channels) packed latents, encoder_hidden_states
    (B, L, joint_attention_dim), pooled_projections (B, pooled_projection_dim), timestep (B,) or
    scalar sigma in [0, 1], img_ids (S, 3), txt_ids (L, 3), guidance (B,) or scalar, for
    guidance-distilled models) -> (B, S, patch^2 * out_channels), the flow prediction."""

    def __init__(self, config: FluxConfig):
        super().__init__()
        self.config = c = config
        dim = c.inner_dim
        self.img_in = nn.Linear(c.in_channels, dim)
        self.txt_in = nn.Linear(c.joint_attention_dim, dim)
        self.time_in = TimestepEmbedding(256, dim)
        self.vector_in = TimestepEmbedding(c.pooled_projection_dim, dim)
        self.guidance_in = TimestepEmbedding(256, dim) if c.guidance_embeds else None
        self.double_blocks = nn.ModuleList(DoubleBlock(c) for _ in range(c.num_layers))
        self.single_blocks = nn.ModuleList(SingleBlock(c) for _ in range(c.num_single_layers))
        self.final_layer = FinalLayer(dim, c.patch_size ** 2 * c.output_channels)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                pooled_projections: torch.Tensor, timestep, img_ids: torch.Tensor, txt_ids: torch.Tensor,
                guidance=None) -> torch.Tensor:
        c, b = self.config, hidden_states.shape[0]
        dtype = self.img_in.weight.dtype
        img = self.img_in(hidden_states.to(dtype))                                  # (B, S, D)
        txt = self.txt_in(encoder_hidden_states.to(dtype))                          # (B, L, D)
        cond = self.time_in(timestep_embedding(self._per_sample(timestep, b, img), 256))
        if self.guidance_in is not None:
            if guidance is None:
                raise ValueError("fastdiff.models.Flux: this guidance-distilled model needs guidance=")
            cond = cond + self.guidance_in(timestep_embedding(self._per_sample(guidance, b, img), 256))
        silu_c = F.silu(cond + self.vector_in(pooled_projections.to(dtype)))       # (B, D)
        # ids with a batch axis (diffusers' deprecated form) are the same for every sample: the first's
        ids = torch.cat([txt_ids[0] if txt_ids.dim() == 3 else txt_ids, img_ids[0] if img_ids.dim() == 3 else img_ids])
        rope = rope_tables(ids, c.axes_dims_rope, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        for block in self.double_blocks:
            img, txt = block(img, txt, silu_c, rope)
        n = txt.shape[1]
        x = torch.cat([txt, img], dim=1)                                            # (B, L + S, D)
        for block in self.single_blocks:
            x = block(x, silu_c, rope)
        return self.final_layer(x[:, n:], silu_c)                                   # (B, S, p*p*C)

    @staticmethod
    def _per_sample(value, b: int, like: torch.Tensor) -> torch.Tensor:
        """A scalar or (B,) value in [0, 1] as (B,) in the model's dtype, times 1000 (diffusers' scale)."""
        return torch.as_tensor(value, device=like.device).reshape(-1).expand(b).to(like.dtype) * 1000

    @classmethod
    def from_pretrained(cls, source, config: Optional[FluxConfig] = None, **kw) -> "Flux":
        """See fastdiff.models.from_pretrained."""
        return loading.load(KIND, source, config=config, **kw)


def config_from_shapes(weights) -> FluxConfig:
    """The original Flux files carry no config: read it off the tensor shapes (head dim 128 and
    the rotary axes (16, 56, 56) of the released models)."""
    keys = weights.keys()
    pre = convert_mmdit.flux_original_prefix(keys)
    dim, in_ch = weights.shape(pre + "img_in.weight")

    def count(block):
        return len({k[len(pre):].split(".")[1] for k in keys if k.startswith(pre + block)})
    out = weights.shape(pre + "final_layer.linear.weight")[0]
    return FluxConfig(in_channels=in_ch, out_channels=None if out == in_ch else out,
                      num_layers=count("double_blocks."), num_single_layers=count("single_blocks."),
                      num_attention_heads=dim // 128, joint_attention_dim=weights.shape(pre + "txt_in.weight")[1],
                      pooled_projection_dim=weights.shape(pre + "vector_in.in_layer.weight")[1],
                      guidance_embeds=pre + "guidance_in.in_layer.weight" in keys)


KIND = loading.ModelKind(
    "Flux", FluxConfig, Flux, diffusers_classes=("FluxTransformer2DModel",),
    config_from_diffusers=lambda cfg, prediction_type: FluxConfig.from_diffusers(cfg),
    layout=convert_mmdit.flux_layout, recognise=lambda keys: convert_mmdit.flux_original_prefix(keys) is not None,
    config_from_keys=config_from_shapes)
