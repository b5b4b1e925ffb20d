"""PyTorch reference of attention: softmax(q k^T * scale) v, per batch and head."""
from __future__ import annotations

import contextlib

import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def attention(q, k, v, *, scale=None):
    # PyTorch's fused CPU kernel turns a query row holding NaN into zeros; its math path keeps the
    # NaN, as float64 and the GPU kernels do.
    backend = sdpa_kernel(SDPBackend.MATH) if q.device.type == "cpu" else contextlib.nullcontext()
    with backend:  # (B, S, H, D) -> (B, H, S, D) for SDPA, then back to a contiguous (B, Sq, H, D)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           scale=scale)
    return o.transpose(1, 2).contiguous()
