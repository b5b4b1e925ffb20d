"""Building blocks shared by the U-Net, the DiT and the VAE. Every GroupNorm (with the SiLU that
follows it) and every attention runs through fastdiff.ops; parameter names follow diffusers where
they can, so loading a diffusers checkpoint is mostly a rename."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops


def timestep_embedding(t: torch.Tensor, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0,
                       max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) in fp32, as diffusers' get_timestep_embedding."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - freq_shift)
    args = t.float()[:, None] * exponent.exp()[None]
    sin, cos = args.sin(), args.cos()
    emb = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """DiT's fixed 2-D sin-cos position embedding (1, grid*grid, dim): the first half of the
    channels encodes the column, the second half the row."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    pos = torch.arange(grid, dtype=torch.float64)
    row, col = torch.meshgrid(pos, pos, indexing="ij")

    def embed(p):
        out = p.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)
    return torch.cat([embed(col), embed(row)], dim=1).float()[None]


class TimestepEmbedding(nn.Module):
    """Linear -> SiLU -> Linear on a sinusoidal embedding (B, in_dim) -> (B, dim)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(emb.to(self.linear_1.weight.dtype))))


class Mlp(nn.Module):
    """The transformers' feed-forward: Linear -> GELU (tanh approximation) -> Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm's parameters, computed by fastdiff.ops.group_norm, optionally fused with SiLU."""

    def __init__(self, num_groups: int, channels: int, eps: float = 1e-6, silu: bool = False):
        super().__init__(num_groups, channels, eps)
        self.silu = silu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.group_norm(x, self.num_groups, self.weight, self.bias, self.eps, silu=self.silu)


class ResBlock(nn.Module):
    """GroupNorm+SiLU -> conv -> (+ timestep embedding) -> GroupNorm+SiLU -> conv, plus a skip."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: Optional[int], groups: int, eps: float):
        super().__init__()
        self.norm1 = GroupNorm(groups, in_ch, eps, silu=True)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_dim, out_ch) if temb_dim else None
        self.norm2 = GroupNorm(groups, out_ch, eps, silu=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.conv1(self.norm1(x))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.norm2(h))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Attention(nn.Module):
    """Multi-head attention on tokens (B, S, dim). Self-attention projects q, k, v with ONE fused
    Linear and hands strided (B, S, H, D) views of it to fastdiff.ops.attention; cross-attention
    has a q Linear and one fused kv Linear over the context (B, L, context_dim)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: Optional[int] = None,
                 qkv_bias: bool = False):
        super().__init__()
        self.heads, self.head_dim, inner = heads, head_dim, heads * head_dim
        if context_dim is None:
            self.to_qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        else:
            self.to_q = nn.Linear(dim, inner, bias=qkv_bias)
            self.to_kv = nn.Linear(context_dim, 2 * inner, bias=qkv_bias)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        hd = (self.heads, self.head_dim)
        if context is None:
            q, k, v = self.to_qkv(x).unflatten(-1, (3, *hd)).unbind(2)  # 3 x (B, S, H, D) views
        else:
            q = self.to_q(x).unflatten(-1, hd)                            # (B, S, H, D)
            k, v = self.to_kv(context).unflatten(-1, (2, *hd)).unbind(2)  # 2 x (B, L, H, D) views
        return self.to_out(ops.attention(q, k, v).flatten(2))           # (B, S, dim)


class GEGLU(nn.Module):
    """Feed-forward with a GELU-gated hidden layer: (B, S, dim) -> (B, S, dim)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * mult * dim)
        self.out = nn.Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return self.out(h * F.gelu(gate))


class TransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention to the context, GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, context_dim: int):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim // heads)
        self.attn2 = Attention(dim, heads, dim // heads, context_dim)
        self.ff = GEGLU(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """GroupNorm -> tokens -> transformer blocks -> back to an image, plus a skip. A 1x1 conv
    and a Linear on tokens are the same map; the Linear works on the channels_last view for free."""

    def __init__(self, ch: int, heads: int, depth: int, context_dim: int, groups: int):
        super().__init__()
        self.norm = GroupNorm(groups, ch, 1e-6)
        self.proj_in = nn.Linear(ch, ch)
        self.transformer_blocks = nn.ModuleList(TransformerBlock(ch, heads, context_dim) for _ in range(depth))
        self.proj_out = nn.Linear(ch, ch)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c))  # (B, HW, C)
        for block in self.transformer_blocks:
            t = block(t, context)
        return x + self.proj_out(t).reshape(b, h, w, c).permute(0, 3, 1, 2)    # (B, C, H, W)


class Downsample(nn.Module):
    """Stride-2 3x3 conv; the VAE pads right/bottom only (padding=0 plus an asymmetric pad)."""

    def __init__(self, ch: int, asymmetric: bool = False):
        super().__init__()
        self.asymmetric = asymmetric
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0 if asymmetric else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)) if self.asymmetric else x)


class Upsample(nn.Module):
    """Nearest 2x upsampling then a 3x3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
