"""Backend registry: what each backend supports, how one is chosen, and why.

A backend declares, per op, the dtypes, devices, layouts and head dims it runs and the minimum
compute capability; `not_supported_reasons` turns a description of the inputs into a list of
reasons (empty when it can run). `auto` takes the first backend of the op's preference order
that can run; a forced backend (FASTDIFF_BACKEND or `use_backend`) that cannot run raises with
every reason, while a preferred one (`use_backend(name, fallback=True)`) gives way to auto.
Nothing here touches the GPU or imports a compiled module until an op runs.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import importlib
import os
from typing import Callable, Iterator, Optional

import torch

OPS = ("attention", "group_norm", "cfg_combine", "sampler_step")
_F16, _BF16, _F32, _F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What a backend needs to know about an op's inputs to say whether it can run them."""

    device: torch.device
    dtype: torch.dtype
    head_dim: Optional[int] = None
    seq_k: Optional[int] = None
    channels_last: bool = False
    numel: Optional[int] = None  # elements of the main input: what measured choices are keyed on


@dataclasses.dataclass(frozen=True)
class OpSupport:
    dtypes: frozenset
    head_dims: Optional[tuple[int, int]] = None  # inclusive range
    max_seq_k: Optional[int] = None
    channels_last: bool = True

    def reasons(self, inputs: Inputs) -> list[str]:
        out = []
        if inputs.dtype not in self.dtypes:
            names = ", ".join(sorted(str(d).removeprefix("torch.") for d in self.dtypes))
            out.append(f"dtype {str(inputs.dtype).removeprefix('torch.')} is not one of {names}")
        if self.head_dims and inputs.head_dim is not None:
            lo, hi = self.head_dims
            if not lo <= inputs.head_dim <= hi:
                out.append(f"head dim {inputs.head_dim} is outside {lo}..{hi}")
        if self.max_seq_k is not None and inputs.seq_k is not None and inputs.seq_k > self.max_seq_k:
            out.append(f"{inputs.seq_k} keys exceed the maximum of {self.max_seq_k}")
        if inputs.channels_last and not self.channels_last:
            out.append("channels_last inputs are not supported")
        return out


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    ops: dict  # op name -> OpSupport
    module: Optional[str]  # module holding one launcher per op, imported on first use
    cuda_only: bool = True
    min_capability: tuple[int, int] = (8, 0)

    def not_supported_reasons(self, op: str, inputs: Inputs) -> list[str]:
        support = self.ops.get(op)
        if support is None:
            return [f"backend {self.name!r} has no {op} kernel"]
        reasons = []
        if self.cuda_only and inputs.device.type != "cuda":
            if not (inputs.device.type == "cpu" and self.name == "triton" and _triton_interpret()):
                reasons.append(f"device {inputs.device.type} is not cuda"
                               + (" (set TRITON_INTERPRET=1 to run Triton on the CPU)"
                                  if self.name == "triton" else ""))
        elif inputs.device.type == "cuda" and not _capability_ok(inputs.device, self.min_capability):
            reasons.append(f"compute capability below sm_{self.min_capability[0]}{self.min_capability[1]}")
        reasons += support.reasons(inputs)
        err = _launcher_error(self.module, op) if self.module else None
        if err:
            reasons.append(err)
        return reasons

    def impl(self, op: str) -> Callable:
        if self.module is None:
            from . import reference
            return getattr(reference, op)
        return getattr(importlib.import_module(self.module), op)


def _triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def _capability_ok(device: torch.device, need: tuple[int, int]) -> bool:
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _capability(index) >= need


@functools.lru_cache(maxsize=None)
def _launcher_error(module: str, op: str) -> Optional[str]:
    try:
        mod = importlib.import_module(module)
    except ImportError as e:  # Triton not installed, or fastdiff._C not built
        return f"{module} cannot be imported ({e})"
    return None if hasattr(mod, op) else f"{module} has no {op} launcher"


_ALL = frozenset({_F16, _BF16, _F32, _F64})
_GPU = frozenset({_F16, _BF16, _F32})

BACKENDS: dict[str, Backend] = {
    "torch": Backend("torch", {op: OpSupport(_ALL) for op in OPS}, None, cuda_only=False),
    "triton": Backend("triton", {
        "attention": OpSupport(_GPU, head_dims=(16, 256)),
        "group_norm": OpSupport(_GPU),
        "cfg_combine": OpSupport(_GPU),
        "sampler_step": OpSupport(_GPU),
    }, "fastdiff._triton"),
    "cuda": Backend("cuda", {
        "attention": OpSupport(frozenset({_F16, _BF16}), head_dims=(40, 160), max_seq_k=512),
        "group_norm": OpSupport(_GPU),
        "cfg_combine": OpSupport(_GPU),
        "sampler_step": OpSupport(_GPU),
    }, "fastdiff.cuda_ops"),
}

# `auto` tries, on a GPU with measurements in fastdiff/measured.json, the backends in the order
# measured for the nearest shape; otherwise these orders. Either way it takes the first backend
# that can run the inputs, and the torch reference comes last, so every input runs somewhere.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    # SDPA's cuDNN and flash kernels are the bar; the untuned Triton kernel has not been measured
    # against them yet, so auto keeps the reference (which calls SDPA).
    "attention": ("torch",),
    # The Triton kernel takes one program per group: at VAE sizes that leaves most SMs idle, so
    # auto keeps the reference until a split reduction is measured faster.
    "group_norm": ("torch",),
    "cfg_combine": ("cuda", "triton", "torch"),
    "sampler_step": ("cuda", "triton", "torch"),
}

# (name, fallback) from `use_backend`, else None
_forced: contextvars.ContextVar[Optional[tuple]] = contextvars.ContextVar("fastdiff_backend", default=None)


def _check_name(name: str) -> str:
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"fastdiff: unknown backend {name!r}; expected auto or one of {', '.join(BACKENDS)}")
    return name


def _request() -> tuple[str, bool]:
    forced = _forced.get()
    if forced:
        return forced
    return _check_name(os.environ.get("FASTDIFF_BACKEND", "auto") or "auto"), False


def requested() -> str:
    """The backend asked for: `use_backend` first, then FASTDIFF_BACKEND, else 'auto'."""
    return _request()[0]


@contextlib.contextmanager
def use_backend(name: str, *, fallback: bool = False) -> Iterator[None]:
    """Force one backend ('torch', 'triton', 'cuda' or 'auto') for the ops run inside the block.

    A forced backend that cannot run an op's inputs raises. With fallback=True it is preferred
    instead: such an op runs on auto's choice (the torch reference at the latest), e.g.
    `use_backend("cuda", fallback=True)` runs a whole model on the cuda kernels wherever they
    apply, although cuda attention takes only short key sequences.
    """
    token = _forced.set((_check_name(name), fallback))
    try:
        yield
    finally:
        _forced.reset(token)


class BackendUnavailable(RuntimeError):
    pass


@functools.lru_cache(maxsize=None)
def _device_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def _auto_candidates(op: str, inputs: Inputs) -> tuple[str, ...]:
    # On the CPU the interpreter exists for tests only: auto never picks it.
    if inputs.device.type != "cuda":
        return ("torch",)
    from . import measured

    index = inputs.device.index if inputs.device.index is not None else torch.cuda.current_device()
    order = measured.order(_device_name(index), op, inputs)
    if order is None:
        return AUTO_ORDER[op]
    return tuple(dict.fromkeys(order + AUTO_ORDER[op] + ("torch",)))  # measured first, each once


def _candidates(op: str, inputs: Inputs, name: str, fallback: bool) -> tuple[str, ...]:
    """The backends `select` tries, in order, for the request (name, fallback)."""
    if name == "auto":
        return _auto_candidates(op, inputs)
    return tuple(dict.fromkeys((name,) + _auto_candidates(op, inputs))) if fallback else (name,)


def select(op: str, inputs: Inputs) -> Backend:
    name, fallback = _request()
    if name != "auto" and not fallback:
        backend = BACKENDS[name]
        reasons = backend.not_supported_reasons(op, inputs)
        if reasons:
            raise BackendUnavailable(f"fastdiff.{op}: backend {name!r} cannot run these inputs: "
                                     + "; ".join(reasons))
        return backend
    for candidate in _candidates(op, inputs, name, fallback):
        if not BACKENDS[candidate].not_supported_reasons(op, inputs):
            return BACKENDS[candidate]
    raise BackendUnavailable(f"fastdiff.{op}: no backend can run these inputs")


def explain_inputs(op: str, inputs: Inputs) -> str:
    """A human-readable account of which backend runs `op` on these inputs, and why."""
    asked, fallback = _request()
    preferred = " (preferred, else auto)" if fallback and asked != "auto" else ""
    lines = [f"fastdiff.{op} on {inputs.device.type} {str(inputs.dtype).removeprefix('torch.')}"
             f", requested backend: {asked}{preferred}"]
    order = _candidates(op, inputs, asked, fallback)  # select's order, then the backends it does not try
    for name in order + tuple(n for n in BACKENDS if n not in order):
        reasons = BACKENDS[name].not_supported_reasons(op, inputs)
        lines.append(f"  {name:7s} " + ("can run" if not reasons else "cannot: " + "; ".join(reasons)))
    try:
        lines.append(f"  -> runs on {select(op, inputs).name}")
    except BackendUnavailable as e:
        lines.append(f"  -> error: {e}")
    return "\n".join(lines)
