"""Small stand-ins with the fastdiff.models interfaces (config fields of fastdiff.training.default.CONFIGS,
UNet(x, t, context), DiT(x, t, y), VAE.encode -> (mean, logvar), VAE.decode), to exercise the
training loops and the sampling glue in seconds."""
import types
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int
    latent_channels: int
    block_out_channels: tuple
    layers_per_block: int
    sample_size: int
    scaling_factor: float


class VAE(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config, c, w = config, config.latent_channels, 16
        self.enc = nn.Sequential(nn.Conv2d(3, w, 4, 2, 1), nn.SiLU(), nn.Conv2d(w, 2 * c, 4, 2, 1))
        self.dec = nn.Sequential(nn.ConvTranspose2d(c, w, 4, 2, 1), nn.SiLU(), nn.ConvTranspose2d(w, 3, 4, 2, 1))

    def encode(self, x):
        return self.enc(x).chunk(2, dim=1)

    def decode(self, z):
        return self.dec(z)


def _time(t, n):
    return torch.cos(t.float()[:, None] / 1000 * torch.arange(1, n + 1, device=t.device))[:, :, None, None]


@dataclass(frozen=True)
class UNetConfig:
    sample_size: int
    in_channels: int
    out_channels: int
    block_out_channels: tuple
    layers_per_block: int
    cross_attention_dim: int
    attention_head_dim: int


class UNet(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config, w = config, 32
        self.inp, self.ctx = nn.Conv2d(config.in_channels, w, 3, padding=1), nn.Linear(config.cross_attention_dim, w)
        self.out = nn.Conv2d(w, config.out_channels, 3, padding=1)

    def forward(self, x, t, context):
        h = self.inp(x) + self.ctx(context.mean(1))[:, :, None, None] + _time(t, 32)
        return self.out(torch.nn.functional.silu(h))


@dataclass(frozen=True)
class DiTConfig:
    input_size: int
    patch_size: int
    in_channels: int
    hidden_size: int
    depth: int
    num_heads: int
    num_classes: int
    learn_sigma: bool


class DiT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config, w = config, 32
        self.inp, self.y = nn.Conv2d(config.in_channels, w, 3, padding=1), nn.Embedding(config.num_classes + 1, w)
        self.out = nn.Conv2d(w, config.in_channels, 3, padding=1)

    def forward(self, x, t, y):
        return self.out(torch.nn.functional.silu(self.inp(x) + self.y(y)[:, :, None, None] + _time(t, 32)))


MODULE = types.SimpleNamespace(VAE=VAE, VAEConfig=VAEConfig, UNet=UNet, UNetConfig=UNetConfig, DiT=DiT,
                               DiTConfig=DiTConfig)
