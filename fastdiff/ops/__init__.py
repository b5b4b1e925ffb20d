"""The public ops of fastdiff. Each runs on the backend chosen by fastdiff.backends."""
from __future__ import annotations

import sys

from .. import backends
from ..backends import use_backend
from .attention import attention
from .group_norm import group_norm
from .guidance import cfg_combine, sampler_step

# The submodules share their names with the op functions above, so reach them through sys.modules.
_mod = lambda name: sys.modules[f"{__name__}.{name}"]  # noqa: E731
_DESCRIBE = {
    "attention": lambda q, k, *a, **kw: _mod("attention")._inputs(q, k),
    "group_norm": lambda x, *a, **kw: _mod("group_norm")._inputs(x),
    "cfg_combine": lambda u, c, *a, **kw: _mod("guidance")._inputs(c),
    "sampler_step": lambda x, *a, **kw: _mod("guidance")._inputs(x),
}


def explain(op, *args, **kwargs) -> str:
    """Say which backend would run `op` on these arguments and why the others would not.

    `op` is an op name or function, e.g. explain(fastdiff.ops.attention, q, k, v).
    """
    name = op if isinstance(op, str) else getattr(op, "__name__", "")
    if name not in _DESCRIBE:
        raise ValueError(f"fastdiff.ops.explain: unknown op {op!r}; expected one of {', '.join(_DESCRIBE)}")
    return backends.explain_inputs(name, _DESCRIBE[name](*args, **kwargs))


__all__ = ["attention", "group_norm", "cfg_combine", "sampler_step", "use_backend", "explain"]
