"""PyTorch reference of attention: softmax(q k^T * scale) v, per batch and head."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(q, k, v, *, scale=None):
    # (B, S, H, D) -> (B, H, S, D) for SDPA, then back to a contiguous (B, Sq, H, D).
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       scale=scale)
    return o.transpose(1, 2).contiguous()
