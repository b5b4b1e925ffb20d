"""A tiny transformer text encoder over the caption vocabulary, trained with the U-Net through the
diffusion loss. Like CLIP's in Stable Diffusion it returns one vector per token (padding included)
for the U-Net's cross-attention; the empty caption (all padding) is the unconditional input."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from . import tokenizer


@dataclass(frozen=True)
class TextEncoderConfig:
    vocab_size: int = len(tokenizer.VOCAB)
    max_len: int = tokenizer.MAX_LEN
    dim: int = 64
    layers: int = 2
    heads: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


class TextEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig = TextEncoderConfig()):
        super().__init__()
        self.config = c = config
        self.token = nn.Embedding(c.vocab_size, c.dim)
        self.position = nn.Parameter(torch.randn(c.max_len, c.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(c.dim, c.heads, 4 * c.dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, max_len) token ids -> (N, max_len, dim) context."""
        if ids.dim() != 2 or ids.shape[1] != self.config.max_len:
            raise ValueError(f"fastdiff.builtin.text_encoder: expected (N, {self.config.max_len}) token ids, "
                             f"got {tuple(ids.shape)}")
        return self.norm(self.blocks(self.token(ids) + self.position))

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Captions -> context, on the encoder's device."""
        return self(tokenizer.encode(texts, self.config.max_len).to(self.position.device))
