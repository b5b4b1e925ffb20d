"""PyTorch reference of group_norm (with optional fused SiLU)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, *, silu=False):
    # torch's GroupNorm keeps fp32 statistics for fp16/bf16 inputs on CUDA; on the CPU we upcast
    # so the fallback never computes variance in half precision. torch.group_norm, not
    # F.group_norm, whose training-mode check refuses a single value per group.
    ct = x.dtype if x.is_cuda or x.dtype == torch.float64 else torch.float32
    y = torch.group_norm(x.to(ct), num_groups,
                         None if weight is None else weight.to(ct),
                         None if bias is None else bias.to(ct), eps)
    if silu:
        y = F.silu(y)
    return y.to(x.dtype)
