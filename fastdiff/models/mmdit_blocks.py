"""Building blocks shared by the SD3 and Flux MM-DiTs: a stream's attention half with its fused QKV
projection and q/k RMSNorm, a stream's transformer half (modulation, attention, MLP), joint
attention of several streams, and the final modulated projection. Every LayerNorm with its
modulation runs through fastdiff.ops.adaln, every q/k norm and rotary embedding through
fastdiff.ops.qk_norm_rope, every attention through fastdiff.ops.attention."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from .. import ops
from .blocks import Mlp

NORM_EPS = 1e-6  # every LayerNorm and q/k RMSNorm of SD3 and Flux


class HeadNorm(nn.Module):
    """The weight of a per-head RMSNorm (applied by ops.qk_norm_rope)."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(head_dim))


class StreamAttention(nn.Module):
    """One stream's part of an attention: a fused QKV projection, optional per-head RMSNorm of q and
    k, and the output projection (absent where the stream's attention output is not used)."""

    def __init__(self, dim: int, heads: int, head_dim: int, qk_norm: bool, proj: bool = True):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(dim, 3 * heads * head_dim)
        self.norm_q = HeadNorm(head_dim) if qk_norm else None
        self.norm_k = HeadNorm(head_dim) if qk_norm else None
        self.proj = nn.Linear(heads * head_dim, dim) if proj else None

    def qkv_heads(self, x: torch.Tensor, rope: Optional[tuple] = None) -> torch.Tensor:
        """(B, S, dim) -> (B, S, 3, H, D) projections, q and k normalized and rotated in place."""
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim))
        if self.norm_q is not None:
            norm_rope(qkv, self.norm_q.weight, self.norm_k.weight, rope)
        return qkv


def norm_rope(qkv: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor, rope: Optional[tuple]) -> None:
    """RMSNorm and rotate, in place, the q and k of (B, S, 3, H, D) projections; rope: (cos, sin)
    of the S positions, or None."""
    cos, sin = rope if rope is not None else (None, None)
    ops.qk_norm_rope(qkv[:, :, 0], qkv[:, :, 1], q_weight, k_weight, cos, sin, NORM_EPS)


def joint_attention(qkvs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Attention over the tokens of every stream together: (B, S_i, 3, H, D) projections ->
    (B, S_i, H * D) outputs, one per stream, in the order given."""
    qkv = qkvs[0] if len(qkvs) == 1 else torch.cat(qkvs, dim=1)  # (B, S, 3, H, D)
    out = ops.attention(*qkv.unbind(2)).flatten(2)                  # (B, S, H * D)
    return list(out.split([t.shape[1] for t in qkvs], dim=1))


class StreamBlock(nn.Module):
    """One stream of a double-stream block: its modulation (n_mod vectors of dim from the
    conditioning), attention part and MLP. pre_only: only its attention input is used (SD3's last
    text stream), so it has no output projection or MLP."""

    def __init__(self, dim: int, heads: int, head_dim: int, n_mod: int, qk_norm: bool, mlp_ratio: float = 4.0,
                 pre_only: bool = False, dual: bool = False):
        super().__init__()
        self.n_mod = n_mod
        self.modulation = nn.Linear(dim, n_mod * dim)
        self.attn = StreamAttention(dim, heads, head_dim, qk_norm, proj=not pre_only)
        self.attn2 = StreamAttention(dim, heads, head_dim, qk_norm) if dual else None
        self.mlp = None if pre_only else Mlp(dim, int(dim * mlp_ratio))

    def modulate(self, silu_c: torch.Tensor) -> tuple:
        """(B, dim) SiLU'd conditioning -> n_mod (B, dim) views: shift, scale, gate, ... in the
        original checkpoints' order."""
        return self.modulation(silu_c).chunk(self.n_mod, dim=1)

    def finish(self, x: torch.Tensor, attn_out: torch.Tensor, mod: tuple) -> torch.Tensor:
        """x + gated attention output, then x + gated MLP of its modulated norm (one adaln does the
        first residual, the norm and the modulation)."""
        _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod[:6]
        x, h = ops.adaln(self.attn.proj(attn_out), shift_mlp, scale_mlp, NORM_EPS, gate=gate_msa, residual=x)
        return torch.addcmul(x, gate_mlp[:, None], self.mlp(h))


class FinalLayer(nn.Module):
    """Modulated LayerNorm (shift, scale) and the projection to patches."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.modulation = nn.Linear(dim, 2 * dim)
        self.linear = nn.Linear(dim, out)

    def forward(self, x: torch.Tensor, silu_c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(silu_c).chunk(2, dim=1)
        return self.linear(ops.adaln(x, shift, scale, NORM_EPS))
