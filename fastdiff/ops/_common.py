"""Input checks shared by the ops: every error names the op, what was expected and what was given."""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import torch

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
_is_compiling = torch.compiler.is_compiling
_dispatch_modes = torch._C._len_torch_dispatch_stack
_function_mode = torch._C._is_torch_function_mode_enabled
_functorch_level = torch._C._functorch.maybe_current_level


def _plain_mode() -> bool:
    """Outside torch.compile, with no dispatch mode, function mode or functorch transform active."""
    return not (_is_compiling() or _dispatch_modes() or _function_mode() or _functorch_level() is not None)


def eager(*tensors) -> bool:
    """Whether to call the launcher directly rather than through the custom op, whose dispatch
    costs tens of microseconds on the host: in plain mode, on plain tensors. Everything else
    (compile, fake tensors, export, vmap, tensor subclasses) takes the custom op, which runs the
    same launcher."""
    return _plain_mode() and all(t is None or type(t) in _PLAIN for t in tensors)


# An op call's checks, the description of its inputs and the choice of backend cost several times
# what the launch itself does on the host, and a model repeats the same few calls every step. So
# each op memoises, per call signature, the launcher its first eager call chose (and the scalar
# argument its checks made): a later call with the same signature skips straight to it. The
# signature is everything the checks and the choice read: call_state() and each argument's meta()
# (aux_meta() where neither reads its strides) or value and type. Each op builds it inline, as one
# tuple: on a small CPU a loop over the arguments, or a helper call more, costs a good part of what
# the memo saves.
MEMO_SIZE = 1024


def call_state(x):
    """What besides its arguments decides an op call's launcher (grad mode, the requested backend,
    the current GPU where x lives on one), or None when the call must not take the memo: outside
    plain mode, or when x is not a tensor (the checks then say so)."""
    if not _plain_mode():
        return None
    try:
        gpu = x.is_cuda and torch.cuda.current_device()
    except AttributeError:
        return None
    return torch.is_grad_enabled(), backends.request_state(), gpu


def meta(t):
    """What the checks read of a tensor argument: its type, shape, strides, dtype, device and
    requires_grad (None for None; for anything else its type, which the checks refuse)."""
    if t is None:
        return None
    try:
        return type(t), t.shape, t.stride(), t.dtype, t.device, t.requires_grad
    except (AttributeError, TypeError):
        return type(t)


def aux_meta(t):
    """meta() without the strides, for an argument whose strides neither the checks nor the choice
    of backend read (weights, modulations, angle tables): the launcher takes any, and reading them
    is a good part of the memo's cost."""
    if t is None:
        return None
    try:
        return type(t), t.shape, t.dtype, t.device, t.requires_grad
    except (AttributeError, TypeError):
        return type(t)


def remember(memo: dict, key, launch: Callable, value) -> tuple:
    """Store (launch, value) for the calls with signature key, and return it: the launcher and the
    scalar argument the checks made of the call's (a float, a default resolved)."""
    entry = launch, value
    if key is not None:
        if len(memo) >= MEMO_SIZE:  # signatures that keep changing (a sweep of sizes) start afresh
            memo.clear()
        memo[key] = entry
    return entry


def launcher(op: str, inputs: backends.Inputs) -> Callable:
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
