"""The latent U-Net of Stable Diffusion (SD1.x, SD2.x, SDXL): ResBlocks with the timestep
embedding, spatial transformers with cross-attention to the text, down- and upsampling, skips."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from . import convert, loading
from .blocks import Downsample, GroupNorm, ResBlock, SpatialTransformer, TimestepEmbedding, Upsample, timestep_embedding
from .configs import UNetConfig


class _Level(nn.Module):
    """The resnets of one resolution level, each followed by a spatial transformer when depth > 0.
    in_chs: the input channels of each resnet."""

    def __init__(self, in_chs: list, out_ch: int, temb: int, depth: int, heads: int, c: UNetConfig):
        super().__init__()
        g, eps = c.norm_num_groups, c.norm_eps
        self.resnets = nn.ModuleList(ResBlock(i, out_ch, temb, g, eps) for i in in_chs)
        self.attentions = nn.ModuleList(SpatialTransformer(out_ch, heads, depth, c.cross_attention_dim, g)
                                        for _ in in_chs) if depth else nn.ModuleList()

    def layer(self, i: int, h, temb, context):
        h = self.resnets[i](h, temb)
        return self.attentions[i](h, context) if self.attentions else h


class UNetDownLevel(_Level):
    """A level of the down path: its layers, then a downsample (none at the deepest level). Every
    output, the downsampled one too, is appended to skips for the up path."""

    def __init__(self, in_ch: int, out_ch: int, temb: int, depth: int, heads: int, c: UNetConfig,
                 downsample: Optional[nn.Module]):
        super().__init__([in_ch] + [out_ch] * (c.layers_per_block - 1), out_ch, temb, depth, heads, c)
        self.downsample = downsample

    def forward(self, h, temb, context, skips: list):
        for i in range(len(self.resnets)):
            h = self.layer(i, h, temb, context)
            skips.append(h)
        if self.downsample is not None:
            h = self.downsample(h)
            skips.append(h)
        return h


class UNetUpLevel(_Level):
    """A level of the up path: each layer takes the last skip concatenated to its input; then an
    upsample (none at the last level)."""

    def __init__(self, in_chs: list, out_ch: int, temb: int, depth: int, heads: int, c: UNetConfig,
                 upsample: Optional[nn.Module]):
        super().__init__(in_chs, out_ch, temb, depth, heads, c)
        self.upsample = upsample

    def forward(self, h, temb, context, skips: list):
        for i in range(len(self.resnets)):
            h = self.layer(i, torch.cat([h, skips.pop()], dim=1), temb, context)
        return h if self.upsample is None else self.upsample(h)


class MidBlock(nn.Module):
    def __init__(self, ch: int, temb: int, heads: int, c: UNetConfig):
        super().__init__()
        g, eps = c.norm_num_groups, c.norm_eps
        self.resnets = nn.ModuleList([ResBlock(ch, ch, temb, g, eps), ResBlock(ch, ch, temb, g, eps)])
        self.attentions = nn.ModuleList([SpatialTransformer(ch, heads, c.mid_transformer_depth,
                                                            c.cross_attention_dim, g)])

    def forward(self, h, temb, context):
        return self.resnets[1](self.attentions[0](self.resnets[0](h, temb), context), temb)


class UNet(nn.Module):
    """forward(x (B, C, H, W), t (B,) timesteps, context (B, L, cross_attention_dim),
    added_cond {"text_embeds": (B, E), "time_ids": (B, 6)} for SDXL) -> (B, out_channels, H, W).
    On CUDA the activations run channels_last (convert the weights once with
    `.to(memory_format=torch.channels_last)`); the output is contiguous NCHW."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        ch, n, depths, heads = c.block_out_channels, len(c.block_out_channels), c.depths, c.heads
        temb = 4 * ch[0]
        self.conv_in = nn.Conv2d(c.in_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        if c.addition_embed_type == "text_time":
            self.add_embedding = TimestepEmbedding(c.projection_class_embeddings_input_dim, temb)

        lpb = c.layers_per_block
        self.down_blocks = nn.ModuleList()
        prev = ch[0]
        for i in range(n):
            self.down_blocks.append(UNetDownLevel(prev, ch[i], temb, depths[i], heads[i], c,
                                                  Downsample(ch[i]) if i < n - 1 else None))
            prev = ch[i]
        self.mid_block = MidBlock(ch[-1], temb, heads[-1], c)

        # Skip channels, in the order the up path pops them.
        skip_chs = [ch[0]] + [ch[i] for i in range(n) for _ in range(lpb + (i < n - 1))]
        self.up_blocks = nn.ModuleList()
        prev = ch[-1]
        for i in reversed(range(n)):
            in_chs = [a + skip_chs.pop() for a in [prev] + [ch[i]] * lpb]
            self.up_blocks.append(UNetUpLevel(in_chs, ch[i], temb, depths[i], heads[i], c,
                                              Upsample(ch[i]) if i > 0 else None))
            prev = ch[i]
        self.conv_norm_out = GroupNorm(c.norm_num_groups, ch[0], c.norm_eps, silu=True)
        self.conv_out = nn.Conv2d(ch[0], c.out_channels, 3, padding=1)

    def embed(self, t: torch.Tensor, batch: int, added_cond: Optional[dict]) -> torch.Tensor:
        """The timestep (plus SDXL's added conditioning) embedding, (B, 4 * C0)."""
        c = self.config
        t = t.reshape(-1).expand(batch)
        emb = self.time_embedding(timestep_embedding(t, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift))
        if c.addition_embed_type == "text_time":
            if added_cond is None:
                raise ValueError("fastdiff.models.UNet: this SDXL-style U-Net needs added_cond with text_embeds "
                                 "and time_ids")
            time_ids = added_cond["time_ids"]
            time_emb = timestep_embedding(time_ids.reshape(-1), c.addition_time_embed_dim, c.flip_sin_to_cos,
                                          c.freq_shift).reshape(time_ids.shape[0], -1)          # (B, 6 * 256)
            extra = torch.cat([added_cond["text_embeds"].to(time_emb.dtype), time_emb], dim=-1)  # (B, 2816)
            emb = emb + self.add_embedding(extra)
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                added_cond: Optional[dict] = None) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        dtype = self.conv_in.weight.dtype
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        temb = self.embed(t, x.shape[0], added_cond)
        context = context.to(dtype)
        h = self.conv_in(x.to(dtype))
        skips = [h]
        for block in self.down_blocks:
            h = block(h, temb, context, skips)
        h = self.mid_block(h, temb, context)
        for block in self.up_blocks:
            h = block(h, temb, context, skips)
        return self.conv_out(self.conv_norm_out(h)).contiguous()

    @classmethod
    def from_pretrained(cls, source, config: Optional[UNetConfig] = None, **kw) -> "UNet":
        """See fastdiff.models.from_pretrained."""
        return loading.load(KIND, source, config=config, **kw)


KIND = loading.ModelKind(
    "UNet", UNetConfig, UNet, diffusers_classes=("UNet2DConditionModel",),
    config_from_diffusers=lambda cfg, prediction_type: UNetConfig.from_diffusers(cfg, prediction_type or "epsilon"),
    layout=convert.unet_layout)
