"""GroupNorm with optional fused SiLU."""
from __future__ import annotations

from typing import Optional

import torch

from .. import backends, reference
from .._layout import is_channels_last, output_format
from ._common import (OP_TAGS, call_state, check_float, check_match, aux_meta, check_tensor, eager, launcher, meta,
                      needs_autograd, remember)

_memo: dict = {}  # call signature -> (launcher, eps) (fastdiff.ops._common)


def _describe(x: torch.Tensor, *args, **kwargs) -> backends.Inputs:
    return backends.Inputs(x.device, x.dtype, channels_last=is_channels_last(x), numel=x.numel())


def _launch(x, num_groups, weight, bias, eps, silu):
    return launcher("group_norm", _describe(x))(x, num_groups, weight, bias, eps, silu=silu)


@torch.library.custom_op("fastdiff::group_norm", mutates_args=(), tags=OP_TAGS)
def _group_norm_op(x: torch.Tensor, num_groups: int, weight: Optional[torch.Tensor],
                   bias: Optional[torch.Tensor], eps: float, silu: bool) -> torch.Tensor:
    return _launch(x, num_groups, weight, bias, eps, silu)


@_group_norm_op.register_fake
def _(x, num_groups, weight, bias, eps, silu):
    return torch.empty_like(x, memory_format=output_format(x))


def _check(x, num_groups, weight, bias, eps):
    op = "group_norm"
    check_tensor(op, "x", x, min_ndim=2)
    if isinstance(num_groups, bool) or not isinstance(num_groups, int):
        raise TypeError(f"fastdiff.group_norm: num_groups must be an int, got {type(num_groups).__name__}")
    channels = x.shape[1]
    if num_groups <= 0 or channels % num_groups:
        raise ValueError(f"fastdiff.group_norm: num_groups must divide the {channels} channels of x, "
                         f"got {num_groups}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(op, name, t, ndim=1)
            check_match(op, "x", x, name, t, shape=False, dtype=False)
            if t.shape[0] != channels:
                raise ValueError(f"fastdiff.group_norm: {name} must have shape ({channels},), "
                                 f"got {tuple(t.shape)}")
    eps = check_float(op, "eps", eps)
    if eps < 0:
        raise ValueError(f"fastdiff.group_norm: eps must be >= 0, got {eps}")
    return eps


def group_norm(x: torch.Tensor, num_groups: int, weight: Optional[torch.Tensor] = None,
               bias: Optional[torch.Tensor] = None, eps: float = 1e-5, *, silu: bool = False) -> torch.Tensor:
    """GroupNorm over (N, C, *spatial), optionally followed by SiLU, in one pass.

    x: (N, C, *spatial), fp16/bf16/fp32 (fp64 on the torch backend), NCHW or channels_last.
    weight, bias: (C,) or None, any float dtype. Statistics are taken in fp32 per (sample, group).
    Returns a new tensor with x's shape, dtype and memory format.
    """
    state = call_state(x)
    key = state and (state, meta(x), aux_meta(weight), aux_meta(bias), num_groups, type(num_groups), eps, type(eps))
    entry = _memo.get(key)
    if entry is None:
        eps = _check(x, num_groups, weight, bias, eps)
        if needs_autograd(x, weight, bias):
            return reference.group_norm(x, num_groups, weight, bias, eps, silu=silu)
        if not eager(x, weight, bias):
            return _group_norm_op(x, num_groups, weight, bias, eps, bool(silu))
        entry = remember(_memo, key, launcher("group_norm", _describe(x)), eps)
    launch, eps = entry
    return launch(x, num_groups, weight, bias, eps, silu=bool(silu))


# Measured on an H100, the kernels beat eager PyTorch only at large (VAE) shapes, so without a
# measured order for the device (fastdiff/measured.json) auto keeps the reference.
backends.register_op("group_norm", group_norm, _describe, reference.group_norm, auto_order=("torch",))
