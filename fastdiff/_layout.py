"""Memory-layout helpers shared by the elementwise launchers of every backend."""
from __future__ import annotations

import torch


def dense_format(t: torch.Tensor):
    """The memory format in which t is dense, or None."""
    if t.is_contiguous():
        return torch.contiguous_format
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return None


def is_channels_last(t: torch.Tensor) -> bool:
    """Dense in channels_last only (a tensor dense in both layouts counts as NCHW)."""
    return dense_format(t) is torch.channels_last


def dense_like(ref: torch.Tensor, *ts):
    """ref made dense and every other tensor laid out like it, so flat offsets line up.

    Dense inputs (contiguous NCHW or channels_last) are not copied. Returns (format, [ref, *ts]).
    """
    fmt = dense_format(ref) or torch.contiguous_format
    return fmt, [None if t is None else t.contiguous(memory_format=fmt) for t in (ref,) + ts]
