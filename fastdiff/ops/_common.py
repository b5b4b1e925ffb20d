"""Input checks shared by the ops: every error names the op, what was expected and what was given."""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode as _dispatch_mode

from .. import backends

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Every op's output layout follows its input's (fastdiff._layout), so inductor must hand it inputs
# with exactly the strides it was traced with: keeping only their order let its channels-last
# layout optimisation feed a channels_last tensor to an op whose fake kernel saw NCHW.
OP_TAGS = (torch.Tag.needs_exact_strides,)


def check_tensor(op: str, name: str, t, *, ndim: Optional[int] = None, min_ndim: int = 0) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"fastdiff.{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"fastdiff.{op}: {name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if t.dim() < min_ndim:
        raise ValueError(f"fastdiff.{op}: {name} must have at least {min_ndim} dimensions, "
                         f"got shape {tuple(t.shape)}")
    if t.dtype not in _FLOATS:
        raise TypeError(f"fastdiff.{op}: {name} must be a floating-point tensor, got {t.dtype}")
    return t


def check_match(op: str, ref_name: str, ref: torch.Tensor, name: str, t: torch.Tensor, *,
                shape: bool = True, dtype: bool = True) -> None:
    if t.device != ref.device:
        raise ValueError(f"fastdiff.{op}: {name} is on {t.device} but {ref_name} is on {ref.device}")
    if dtype and t.dtype != ref.dtype:
        raise TypeError(f"fastdiff.{op}: {name} has dtype {t.dtype} but {ref_name} has {ref.dtype}")
    if shape and t.shape != ref.shape:
        raise ValueError(f"fastdiff.{op}: {name} has shape {tuple(t.shape)} but {ref_name} has "
                         f"{tuple(ref.shape)}")


def check_float(op: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"fastdiff.{op}: {name} must be a real number, got {type(value).__name__}")
    if torch.compiler.is_compiling():
        # A float that changes between calls is symbolic while torch.compile traces, so it has no
        # value to check yet; a non-finite one then shows as a non-finite output, never a wrong one.
        return value
    if not math.isfinite(value):
        raise ValueError(f"fastdiff.{op}: {name} must be finite, got {value}")
    return float(value)


def needs_autograd(*tensors) -> bool:
    """Whether the call must stay differentiable: then it runs the torch reference directly."""
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


_PLAIN = (torch.Tensor, torch.nn.Parameter)


def eager(*tensors) -> bool:
    """Whether to call the launcher directly rather than through the custom op, whose dispatch
    costs tens of microseconds on the host: outside torch.compile, with no dispatch mode, function
    mode or functorch transform active, on plain tensors. Everything else (compile, fake tensors,
    export, vmap, tensor subclasses) takes the custom op, which runs the same launcher."""
    return (not torch.compiler.is_compiling() and _dispatch_mode() is None
            and not torch._C._is_torch_function_mode_enabled()
            and torch._C._functorch.maybe_current_level() is None
            and all(t is None or type(t) in _PLAIN for t in tensors))


def launcher(op: str, inputs: backends.Inputs):
    """The launcher of the backend selected for these inputs. The kernels launch on the current
    device, so inputs on another GPU are launched with that GPU made current for the call."""
    fn = backends.launcher(op, inputs)
    device = inputs.device
    if device.type == "cuda" and device.index is not None and device.index != torch.cuda.current_device():
        return functools.partial(_on_device, device, fn)
    return fn


def _on_device(device: torch.device, fn, *args, **kwargs):
    with torch.cuda.device(device):
        return fn(*args, **kwargs)
