"""Memory layouts: the one rule that every backend's outputs and every fake kernel follow.

An op's output takes the memory format in which its main input is dense (contiguous,
channels_last or channels_last_3d), else the contiguous format. Channels-last inputs of any rank
are (N, spatial, C) in memory, which is all that the kernels need to know.
"""
from __future__ import annotations

import torch

_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def dense_format(t: torch.Tensor):
    """The memory format in which t is dense, or None."""
    if t.is_contiguous():
        return torch.contiguous_format
    fmt = _CHANNELS_LAST.get(t.dim())
    return fmt if fmt is not None and t.is_contiguous(memory_format=fmt) else None


def output_format(t: torch.Tensor):
    """The memory format of an op's outputs whose main input is t."""
    return dense_format(t) or torch.contiguous_format


def is_channels_last(t: torch.Tensor) -> bool:
    """Dense in a channels-last format only (a tensor dense in both layouts counts as NCHW)."""
    return output_format(t) is not torch.contiguous_format


def dense_like(ref: torch.Tensor, *ts):
    """ref made dense and every other tensor laid out like it, so flat offsets line up.

    Dense inputs are not copied. Returns (format, [ref, *ts]).
    """
    fmt = output_format(ref)
    return fmt, [None if t is None else t.contiguous(memory_format=fmt) for t in (ref,) + ts]
