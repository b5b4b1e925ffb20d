"""Registries of ops and backends: what each backend can run, how one is chosen, and why.

Each op registers itself here (fastdiff/ops): its name, its public function, how its arguments
are described to backends (an `Inputs`), its reference and its static auto order. Each backend
declares next to its launchers what it can run (a `SUPPORT` table of `OpSupport` per op: dtypes,
head dims, key counts, layouts); the torch backend runs every op's reference on any float dtype.
That is capability. Speed policy, which capable backend wins where, is apart: the op's auto order,
overridden by the measured orders of fastdiff/measured.json on a GPU.

`not_supported_reasons` turns a description of the inputs into a list of reasons (empty when the
backend can run them). `auto` takes the first backend of the op's order that can run; a forced
backend (FASTDIFF_BACKEND or `use_backend`) that cannot run raises with every reason, while a
preferred one (`use_backend(name, fallback=True)`) gives way to auto. Choices are memoised per
(op, inputs, request). Nothing here touches the GPU or imports a compiled module until an op runs.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import importlib
import os
from typing import Callable, Iterator, NamedTuple, Optional

import torch

NAMES = ("torch", "triton", "cuda")  # every backend, in the order explain lists them
FLOATS = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
GPU_FLOATS = frozenset({torch.float16, torch.bfloat16, torch.float32})


class Inputs(NamedTuple):
    """What a backend needs to know about an op's inputs to say whether it can run them (a tuple:
    cheap to build and hash on every op call)."""

    device: torch.device
    dtype: torch.dtype
    head_dim: Optional[int] = None
    seq_k: Optional[int] = None
    channels_last: bool = False
    numel: Optional[int] = None  # elements of the main input: what measured choices are keyed on


@dataclasses.dataclass(frozen=True)
class OpSupport:
    """What one backend's kernel for one op can run: the kernel's limits, not a speed policy."""

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
class Op:
    name: str
    fn: Callable                  # the public function, fastdiff.ops.<name>
    describe: Callable[..., Inputs]  # the op's arguments -> Inputs
    reference: Callable           # fastdiff.reference.<name>: the torch backend and the test oracle
    auto_order: tuple[str, ...]   # auto's order before measurements (speed policy); torch is added last


OPS: dict[str, Op] = {}


def register_op(name: str, fn: Callable, describe: Callable[..., Inputs], reference: Callable,
                auto_order: tuple[str, ...]) -> None:
    """Called once by each op's module in fastdiff/ops."""
    unknown = set(auto_order) - set(NAMES)
    if unknown:
        raise ValueError(f"fastdiff.backends: {name}'s auto order names unknown backends {sorted(unknown)}")
    OPS[name] = Op(name, fn, describe, reference, tuple(dict.fromkeys(auto_order + ("torch",))))


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    module: Optional[str]  # launchers, one per op, and their SUPPORT table; None: the references
    cuda_only: bool = True
    min_capability: tuple[int, int] = (8, 0)

    def support(self, op: str) -> tuple[Optional[OpSupport], Optional[str]]:
        """(what this backend's kernel for op can run, or None; why the backend cannot load, or None)."""
        if self.module is None:
            return (OpSupport(FLOATS) if op in OPS else None), None
        module, err = _load(self.module)
        return (None if err else module.SUPPORT.get(op)), err

    def not_supported_reasons(self, op: str, inputs: Inputs) -> list[str]:
        reasons = []
        emulated = self.name == "cuda" and bool(_cuda_emulate())
        if emulated and inputs.device.type != "cpu":
            reasons.append(f"device {inputs.device.type} is not cpu (FASTDIFF_CUDA_EMULATE runs the CUDA kernels "
                           "on the CPU)")
        elif self.cuda_only and inputs.device.type != "cuda":
            interpreted = self.name == "triton" and _triton_interpret()
            if not (inputs.device.type == "cpu" and (interpreted or emulated)):
                reasons.append(f"device {inputs.device.type} is not cuda"
                               + (" (set TRITON_INTERPRET=1 to run Triton on the CPU)" if self.name == "triton" else
                                  " (set FASTDIFF_CUDA_EMULATE=1 to run the CUDA kernels on the CPU)"))
        elif inputs.device.type == "cuda" and not _capability_ok(inputs.device, self.min_capability):
            reasons.append(f"compute capability below sm_{self.min_capability[0]}{self.min_capability[1]}")
        support, err = self.support(op)
        if err:
            return reasons + [err]
        if support is None:
            return reasons + [f"backend {self.name!r} has no {op} kernel"]
        return reasons + support.reasons(inputs)

    def impl(self, op: str) -> Callable:
        return OPS[op].reference if self.module is None else getattr(_load(self.module)[0], op)


# The environment is read once per process, as Triton itself reads TRITON_INTERPRET once, when its
# kernels are defined: an op call reads no environment (about 1 us a variable). `use_backend`
# changes the backend at run time.
@functools.lru_cache(maxsize=None)
def _triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _cuda_emulate() -> str:
    """FASTDIFF_CUDA_EMULATE: "" (off), "1" (the cuda backend runs fastdiff._C_host, its kernels built
    for the CPU, on CPU tensors) or the path of another such build (a sanitizer's) to run instead."""
    value = os.environ.get("FASTDIFF_CUDA_EMULATE", "0")
    return "" if value == "0" else value


@functools.lru_cache(maxsize=None)
def _env_request() -> str:
    return _check_name(os.environ.get("FASTDIFF_BACKEND", "auto") or "auto")


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def _capability_ok(device: torch.device, need: tuple[int, int]) -> bool:
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _capability(index) >= need


@functools.lru_cache(maxsize=None)
def _load(module: str):
    """(the module, None), or (None, why it cannot be imported): Triton missing, fastdiff._C not built."""
    try:
        return importlib.import_module(module), None
    except ImportError as e:
        return None, f"{module} cannot be imported ({e}){_source_tree_hint()}"


def _source_tree_hint() -> str:
    """Run from a checkout's root, Python imports fastdiff from the sources there, which hold no
    built parts (fastdiff._triton is kernels/ once installed, fastdiff._C is compiled), and not
    the installed copy: say so, since that looks like a failed install."""
    import importlib.machinery
    import sys

    package = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(package)
    elsewhere = [p for p in sys.path if p and os.path.abspath(p) != root]
    installed = importlib.machinery.PathFinder.find_spec("fastdiff", elsewhere)
    if os.path.abspath(os.getcwd()) != root or installed is None or os.path.dirname(installed.origin) == package:
        return ""
    return f"; Python imported fastdiff from the source tree in the working folder, not the one installed in " \
           f"{os.path.dirname(os.path.dirname(installed.origin))}: run from another folder"


BACKENDS: dict[str, Backend] = {
    "torch": Backend("torch", None, cuda_only=False),
    "triton": Backend("triton", "fastdiff._triton"),
    "cuda": Backend("cuda", "fastdiff.cuda_ops"),
}
assert tuple(BACKENDS) == NAMES

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
    return _env_request(), False


def request_state() -> tuple:
    """Everything besides the inputs that decides which launcher runs an op call."""
    return _request(), _triton_interpret()


def requested() -> str:
    """The backend asked for: `use_backend` first, then FASTDIFF_BACKEND (read once per process),
    else 'auto'."""
    return _request()[0]


@contextlib.contextmanager
def use_backend(name: str, *, fallback: bool = False) -> Iterator[None]:
    """Force one backend ('torch', 'triton', 'cuda' or 'auto') for the ops run inside the block.

    A forced backend that cannot run an op's inputs raises. With fallback=True it is preferred
    instead: such an op runs on auto's choice (the torch reference at the latest), e.g.
    `use_backend("cuda", fallback=True)` runs a whole model on the cuda kernels wherever they
    apply, although cuda attention takes only fp16 and bf16 and head dims up to 160.
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
    static = OPS[op].auto_order
    return static if order is None else tuple(dict.fromkeys(order + static))  # measured first, each once


def _candidates(op: str, inputs: Inputs, name: str, fallback: bool) -> tuple[str, ...]:
    """The backends `select` tries, in order, for the request (name, fallback)."""
    if name == "auto":
        return _auto_candidates(op, inputs)
    return tuple(dict.fromkeys((name,) + _auto_candidates(op, inputs))) if fallback else (name,)


def launcher(op: str, inputs: Inputs) -> Callable:
    """The launcher of `op` on the backend `select` picks: what an op call runs, memoised."""
    return _launcher(op, inputs, *_request(), inputs.device.type != "cuda" and _triton_interpret())


@functools.lru_cache(maxsize=4096)
def _launcher(op: str, inputs: Inputs, name: str, fallback: bool, interpret: bool) -> Callable:
    return _select(op, inputs, name, fallback, interpret).impl(op)


def select(op: str, inputs: Inputs) -> Backend:
    """The backend that runs `op` on these inputs for the current request; raises BackendUnavailable."""
    # Triton's interpreter matters only off the GPU: an op call on CUDA reads no environment for it.
    return _select(op, inputs, *_request(), inputs.device.type != "cuda" and _triton_interpret())


@functools.lru_cache(maxsize=4096)
def _select(op: str, inputs: Inputs, name: str, fallback: bool, interpret: bool) -> Backend:
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
    for name in order + tuple(n for n in NAMES if n not in order):
        reasons = BACKENDS[name].not_supported_reasons(op, inputs)
        lines.append(f"  {name:7s} " + ("can run" if not reasons else "cannot: " + "; ".join(reasons)))
    try:
        chosen = select(op, inputs).name
        lines.append(f"  -> runs on {chosen}" + (" (its CUDA kernels emulated on the CPU: FASTDIFF_CUDA_EMULATE)"
                                                  if chosen == "cuda" and inputs.device.type == "cpu" else ""))
    except BackendUnavailable as e:
        lines.append(f"  -> error: {e}")
    return "\n".join(lines)
