"""PyTorch reference of group_norm (with optional fused SiLU)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._layout import output_format


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, *, silu=False):
    # On the CUDA device torch's GroupNorm keeps fp32 statistics for fp16/bf16 inputs. On the CPU we
    # upcast, and compute in NCHW: torch's CPU channels_last kernel takes E[x^2] - E[x]^2, which
    # loses most digits when the mean is large against the spread (1e-5 off even in float64).
    # torch.group_norm, not F.group_norm, whose training-mode check refuses one value per group.
    if x.is_cuda:
        ct, xc = x.dtype, x
    else:
        ct = x.dtype if x.dtype == torch.float64 else torch.float32
        xc = x.contiguous()
    y = torch.group_norm(xc.to(ct), num_groups,
                         None if weight is None else weight.to(ct),
                         None if bias is None else bias.to(ct), eps)
    if silu:
        y = F.silu(y)
    return y.to(x.dtype).contiguous(memory_format=output_format(x))
