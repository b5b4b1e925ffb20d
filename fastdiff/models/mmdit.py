"""The MM-DiT of Stable Diffusion 3 and 3.5 (Esser et al., 2024): image and text tokens in two
streams with their own weights, attending jointly; adaLN-Zero modulation from the timestep and the
pooled text embedding. Parameter names follow the original checkpoints (model.diffusion_model.*)
with fastdiff's names for the modulations and q/k norms (fastdiff.models.convert_mmdit)."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from . import convert_mmdit, loading
from .blocks import TimestepEmbedding, timestep_embedding
from .configs import MMDiTConfig
from .dit import PatchEmbed
from .mmdit_blocks import NORM_EPS, FinalLayer, StreamBlock, joint_attention


class JointBlock(nn.Module):
    """The image stream (x_block) and the text stream (context_block) attend jointly, image tokens
    first. The last block's text stream only feeds the attention (context_pre_only). SD3.5-medium's
    dual blocks add a second, image-only attention to the image stream (9 modulation vectors)."""

    def __init__(self, c: MMDiTConfig, pre_only: bool, dual: bool):
        super().__init__()
        dim, heads, hd, qk = c.inner_dim, c.num_attention_heads, c.attention_head_dim, c.qk_norm is not None
        self.pre_only, self.dual = pre_only, dual
        self.x_block = StreamBlock(dim, heads, hd, 9 if dual else 6, qk, dual=dual)
        self.context_block = StreamBlock(dim, heads, hd, 2 if pre_only else 6, qk, pre_only=pre_only)

    def forward(self, x: torch.Tensor, context: torch.Tensor, silu_c: torch.Tensor):
        mx, mc = self.x_block.modulate(silu_c), self.context_block.modulate(silu_c)
        nx = ops.adaln(x, mx[0], mx[1], NORM_EPS)
        nc = ops.adaln(context, mc[0], mc[1], NORM_EPS)
        ax, ac = joint_attention([self.x_block.attn.qkv_heads(nx), self.context_block.attn.qkv_heads(nc)])
        if self.dual:  # the second attention reads the same norm of x, modulated by its own vectors
            nx2 = ops.adaln(x, mx[6], mx[7], NORM_EPS)
            x = torch.addcmul(x, mx[8][:, None], self.x_block.attn2.proj(joint_attention(
                [self.x_block.attn2.qkv_heads(nx2)])[0]))
        x = self.x_block.finish(x, ax, mx)
        return x, (None if self.pre_only else self.context_block.finish(context, ac, mc))


class MMDiT(nn.Module):
    """forward(hidden_states (B, C, H, W) latents, encoder_hidden_states (B, L, joint_attention_dim),
    pooled_projections (B, pooled_projection_dim), timestep (B,) or scalar, sigma * 1000)
    -> (B, out_channels, H, W), the flow (velocity) prediction."""

    def __init__(self, config: MMDiTConfig):
        super().__init__()
        self.config = c = config
        dim = c.inner_dim
        self.x_embedder = PatchEmbed(c.patch_size, c.in_channels, dim)
        # A fixed sin-cos table of pos_embed_max_size^2 positions, stored in the checkpoints; an image
        # takes its centre crop.
        self.register_buffer("pos_embed", torch.zeros(1, c.pos_embed_max_size ** 2, dim))
        self.t_embedder = TimestepEmbedding(256, dim)
        self.y_embedder = TimestepEmbedding(c.pooled_projection_dim, dim)
        self.context_embedder = nn.Linear(c.joint_attention_dim, c.caption_projection_dim)
        self.joint_blocks = nn.ModuleList(JointBlock(c, pre_only=i == c.num_layers - 1,
                                                     dual=i in c.dual_attention_layers) for i in range(c.num_layers))
        self.final_layer = FinalLayer(dim, c.patch_size ** 2 * c.out_channels)

    def cropped_pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        m = self.config.pos_embed_max_size
        if gh > m or gw > m:
            raise ValueError(f"fastdiff.models.MMDiT: a {gh}x{gw} patch grid exceeds pos_embed_max_size {m}")
        top, left = (m - gh) // 2, (m - gw) // 2
        return self.pos_embed.reshape(m, m, -1)[top:top + gh, left:left + gw].reshape(1, gh * gw, -1)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                pooled_projections: torch.Tensor, timestep) -> torch.Tensor:
        c, (b, _, h, w) = self.config, hidden_states.shape
        p, dtype = c.patch_size, self.x_embedder.proj.weight.dtype
        gh, gw = h // p, w // p
        x = self.x_embedder(hidden_states.to(dtype)) + self.cropped_pos_embed(gh, gw).to(dtype)  # (B, T, D)
        t = torch.as_tensor(timestep, device=x.device).reshape(-1).expand(b)
        cond = self.t_embedder(timestep_embedding(t, 256)) + self.y_embedder(pooled_projections.to(dtype))  # (B, D)
        silu_c = F.silu(cond)
        context = self.context_embedder(encoder_hidden_states.to(dtype))            # (B, L, D)
        for block in self.joint_blocks:
            x, context = block(x, context, silu_c)
        out = self.final_layer(x, silu_c)                                           # (B, T, p*p*C)
        out = out.reshape(b, gh, gw, p, p, c.out_channels).permute(0, 5, 1, 3, 2, 4)  # (B, C, gh, p, gw, p)
        return out.reshape(b, c.out_channels, h, w)

    @classmethod
    def from_pretrained(cls, source, config: Optional[MMDiTConfig] = None, **kw) -> "MMDiT":
        """See fastdiff.models.from_pretrained."""
        return loading.load(KIND, source, config=config, **kw)


def config_from_shapes(weights) -> MMDiTConfig:
    """The original SD3 files carry no config: read it off the tensor shapes (head dim 64 in every
    released model)."""
    keys = weights.keys()
    pre = convert_mmdit.sd3_original_prefix(keys)
    dim, in_ch, patch, _ = weights.shape(pre + "x_embedder.proj.weight")
    depth = len({k[len(pre):].split(".")[1] for k in keys if k.startswith(pre + "joint_blocks.")})
    dual = tuple(sorted({int(k[len(pre):].split(".")[1]) for k in keys
                         if k.startswith(pre + "joint_blocks.") and ".x_block.attn2." in k}))
    return MMDiTConfig(
        patch_size=patch, in_channels=in_ch, num_layers=depth,
        out_channels=weights.shape(pre + "final_layer.linear.weight")[0] // patch ** 2,
        attention_head_dim=64, num_attention_heads=dim // 64,
        joint_attention_dim=weights.shape(pre + "context_embedder.weight")[1], caption_projection_dim=dim,
        pooled_projection_dim=weights.shape(pre + "y_embedder.mlp.0.weight")[1],
        pos_embed_max_size=math.isqrt(weights.shape(pre + "pos_embed")[1]), dual_attention_layers=dual,
        qk_norm="rms_norm" if any(".attn.ln_q." in k for k in keys) else None)


KIND = loading.ModelKind(
    "MMDiT", MMDiTConfig, MMDiT, diffusers_classes=("SD3Transformer2DModel",),
    config_from_diffusers=lambda cfg, prediction_type: MMDiTConfig.from_diffusers(cfg),
    layout=convert_mmdit.sd3_layout, recognise=lambda keys: convert_mmdit.sd3_original_prefix(keys) is not None,
    config_from_keys=config_from_shapes)
