"""The AutoencoderKL of Stable Diffusion: a ResBlock encoder to a diagonal Gaussian over latents,
and the mirror decoder, each with one single-head attention in its middle block."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from . import convert, loading
from .blocks import Attention, Downsample, GroupNorm, ResBlock, Upsample
from .configs import VAEConfig


class VAEAttention(nn.Module):
    """Single-head self-attention over the H*W positions of (B, C, H, W), plus a skip."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.group_norm = GroupNorm(groups, ch, 1e-6)
        self.attn = Attention(ch, 1, ch, qkv_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.attn(self.group_norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c))  # (B, HW, C)
        return x + t.reshape(b, h, w, c).permute(0, 3, 1, 2)


class VAEMidBlock(nn.Module):
    def __init__(self, ch: int, groups: int, attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResBlock(ch, ch, None, groups, 1e-6), ResBlock(ch, ch, None, groups, 1e-6)])
        self.attentions = nn.ModuleList([VAEAttention(ch, groups)] if attention else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x)


class _VAELevel(nn.Module):
    """n ResBlocks, then the level's resampling (none at the last level)."""

    def __init__(self, in_ch: int, out_ch: int, n: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList(ResBlock(in_ch if i == 0 else out_ch, out_ch, None, groups, 1e-6)
                                     for i in range(n))

    def resample(self) -> Optional[nn.Module]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        resample = self.resample()
        return x if resample is None else resample(x)


class VAEDownLevel(_VAELevel):
    def __init__(self, in_ch: int, out_ch: int, n: int, groups: int, last: bool):
        super().__init__(in_ch, out_ch, n, groups)
        self.downsample = None if last else Downsample(out_ch, asymmetric=True)

    def resample(self) -> Optional[nn.Module]:
        return self.downsample


class VAEUpLevel(_VAELevel):
    def __init__(self, in_ch: int, out_ch: int, n: int, groups: int, last: bool):
        super().__init__(in_ch, out_ch, n, groups)
        self.upsample = None if last else Upsample(out_ch)

    def resample(self) -> Optional[nn.Module]:
        return self.upsample


class Encoder(nn.Module):
    def __init__(self, c: VAEConfig):
        super().__init__()
        ch, g, n = c.block_out_channels, c.norm_num_groups, len(c.block_out_channels)
        self.conv_in = nn.Conv2d(c.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            VAEDownLevel(ch[max(i - 1, 0)], ch[i], c.layers_per_block, g, last=i == n - 1) for i in range(n))
        self.mid_block = VAEMidBlock(ch[-1], g, c.mid_block_add_attention)
        self.conv_norm_out = GroupNorm(g, ch[-1], 1e-6, silu=True)
        self.conv_out = nn.Conv2d(ch[-1], 2 * c.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for block in self.down_blocks:
            h = block(h)
        return self.conv_out(self.conv_norm_out(self.mid_block(h)))  # (B, 2L, H/f, W/f)


class Decoder(nn.Module):
    def __init__(self, c: VAEConfig):
        super().__init__()
        ch, g, n = c.block_out_channels[::-1], c.norm_num_groups, len(c.block_out_channels)
        self.conv_in = nn.Conv2d(c.latent_channels, ch[0], 3, padding=1)
        self.mid_block = VAEMidBlock(ch[0], g, c.mid_block_add_attention)
        self.up_blocks = nn.ModuleList(
            VAEUpLevel(ch[max(i - 1, 0)], ch[i], c.layers_per_block + 1, g, last=i == n - 1) for i in range(n))
        self.conv_norm_out = GroupNorm(g, ch[-1], 1e-6, silu=True)
        self.conv_out = nn.Conv2d(ch[-1], c.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            h = block(h)
        return self.conv_out(self.conv_norm_out(h))  # (B, 3, H, W)


class VAE(nn.Module):
    """encode(x (B, 3, H, W) in [-1, 1]) -> (mean, logvar), each (B, latent_channels, H/f, W/f),
    f = 2 ** (levels - 1); decode(z) -> (B, 3, H, W). Neither applies scaling_factor: latents for
    a diffusion model are (mean - shift_factor) * scaling_factor."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = c = config
        self.encoder, self.decoder = Encoder(c), Decoder(c)
        two = 2 * c.latent_channels
        self.quant_conv = nn.Conv2d(two, two, 1) if c.use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(c.latent_channels, c.latent_channels, 1) if c.use_post_quant_conv else None

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.encoder.conv_in.weight.dtype)
        return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        moments = self.encoder(self._in(x))
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = moments.contiguous().chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = self._in(z)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z).contiguous()

    @classmethod
    def from_pretrained(cls, source, config: Optional[VAEConfig] = None, **kw) -> "VAE":
        """See fastdiff.models.from_pretrained."""
        return loading.load(KIND, source, config=config, **kw)


KIND = loading.ModelKind(
    "VAE", VAEConfig, VAE, diffusers_classes=("AutoencoderKL",),
    config_from_diffusers=lambda cfg, prediction_type: VAEConfig.from_diffusers(cfg), layout=convert.vae_layout)
