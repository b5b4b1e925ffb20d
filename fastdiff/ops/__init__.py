"""The public ops of fastdiff. Each registers itself with fastdiff.backends and runs on the backend
chosen there."""
from __future__ import annotations

from .. import backends
from ..backends import use_backend
from .attention import attention
from .group_norm import group_norm
from .guidance import cfg_combine, sampler_step
from .adaln import adaln
from .qk_norm_rope import qk_norm_rope


def explain(op, *args, **kwargs) -> str:
    """Say which backend would run `op` on these arguments and why the others would not.

    `op` is an op name or function, e.g. explain(fastdiff.ops.attention, q, k, v).
    """
    name = op if isinstance(op, str) else getattr(op, "__name__", "")
    if name not in backends.OPS:
        raise ValueError(f"fastdiff.ops.explain: unknown op {op!r}; expected one of {', '.join(backends.OPS)}")
    return backends.explain_inputs(name, backends.OPS[name].describe(*args, **kwargs))


__all__ = ["attention", "group_norm", "cfg_combine", "sampler_step", "adaln", "qk_norm_rope", "use_backend", "explain"]
