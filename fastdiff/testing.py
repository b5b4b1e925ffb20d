"""Numerics rule, tolerance floors and adversarial input makers shared by tests and benchmarks.

The rule (docs/design.md): a kernel passes when its max error against the float64 reference is at
most twice the error of the PyTorch computation in the same dtype, plus a small absolute floor.
NaN never passes.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

# Absolute floors per dtype: a few ulps at magnitude 1, so an exactly-rounded baseline with zero
# error does not demand a bit-exact kernel.
ATOL_FLOOR = {
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
    torch.float32: 2e-6,
    torch.float64: 1e-12,
}


def max_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| in float64; inf when got is not finite where want is, or differs from a
    non-finite want (a NaN where want holds NaN matches)."""
    g, w = got.detach().to("cpu", torch.float64), want.detach().to("cpu", torch.float64)
    if g.shape != w.shape:
        raise AssertionError(f"shape {tuple(g.shape)} != reference shape {tuple(w.shape)}")
    finite = torch.isfinite(w)
    same = (g == w) | (g.isnan() & w.isnan())
    if not torch.isfinite(g[finite]).all() or not same[~finite].all():
        return float("inf")
    return (g[finite] - w[finite]).abs().max().item() if finite.any() else 0.0


def assert_numerics(got, baseline, ref64, *, name: str = "output", floor: Optional[float] = None,
                    factor: float = 2.0) -> None:
    """Assert that `got` meets the numerics rule against the float64 `ref64`.

    `baseline` is the PyTorch computation in got's dtype (the bar), measured where it is finite:
    an overflow in the baseline does not lift the bar. Tensors may be tuples.
    """
    if isinstance(got, (tuple, list)):
        for i, (g, b, r) in enumerate(zip(got, baseline, ref64)):
            assert_numerics(g, b, r, name=f"{name}[{i}]", floor=floor, factor=factor)
        return
    if floor is None:
        floor = ATOL_FLOOR[got.dtype] * max(1.0, ref64.abs().nan_to_num(posinf=0, neginf=0).max().item())
    b, r = baseline.detach().to("cpu", torch.float64), ref64.detach().to("cpu", torch.float64)
    both = torch.isfinite(b) & torch.isfinite(r)
    bar = max_error(b[both], r[both])
    err = max_error(got, ref64)
    limit = factor * bar + floor
    assert err <= limit, (f"{name}: max error {err:.3g} vs float64 reference exceeds {factor} x torch "
                          f"{got.dtype} error {bar:.3g} + floor {floor:.3g}")


def to64(*tensors):
    """Float64 CPU copies (None stays None), keeping strides irrelevant: the oracle's inputs."""
    out = tuple(None if t is None else t.detach().to("cpu", torch.float64) for t in tensors)
    return out if len(out) > 1 else out[0]


def randn(shape: Sequence[int], dtype=torch.float32, device="cpu", *, mean: float = 0.5,
          std: float = 1.0, generator: Optional[torch.Generator] = None,
          channels_last: bool = False) -> torch.Tensor:
    """Random normal input with a non-zero mean (a zero mean hides missing centering)."""
    t = torch.randn(shape, generator=generator, dtype=torch.float32) * std + mean
    t = t.to(device=device, dtype=dtype)
    return t.to(memory_format=torch.channels_last) if channels_last else t


def fused_qkv(b: int, s: int, h: int, d: int, dtype=torch.float32, device="cpu", *, mean: float = 0.3,
              generator: Optional[torch.Generator] = None):
    """q, k, v as strided views of one (B, S, 3, H, D) projection, as a fused QKV linear yields."""
    qkv = randn((b, s, 3, h, d), dtype, device, mean=mean, generator=generator)
    return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]


def strided(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """A non-contiguous view with t's values: every other slice along `dim` of a doubled tensor."""
    shape = list(t.shape)
    shape[dim] *= 2
    big = torch.empty(shape, dtype=t.dtype, device=t.device)
    view = big[(slice(None),) * dim + (slice(None, None, 2),)]
    view.copy_(t)
    return view


def assert_like(out: torch.Tensor, x: torch.Tensor, *, channels_last: bool = False) -> None:
    """out has x's shape and dtype, and the channels_last layout when asked."""
    assert out.dtype == x.dtype and out.shape == x.shape, \
        f"{out.dtype} {tuple(out.shape)} vs {x.dtype} {tuple(x.shape)}"
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last), "channels_last input, output not channels_last"


def skip_unless_backend(name: str, op: str, inputs) -> None:
    """Skip the calling test when backend `name` cannot run `op` on `inputs` (a backends.Inputs)."""
    import pytest

    from . import backends

    reasons = backends.BACKENDS[name].not_supported_reasons(op, inputs)
    if reasons:
        pytest.skip("; ".join(reasons))
