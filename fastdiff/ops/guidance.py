"""Classifier-free guidance and the fused scheduler update.

cfg_combine(u, c, s)  = u + s (c - u)
sampler_step(x, model_out, (p, q, a, b, c, e), guidance_scale=s, prev, noise):
    m      = u + s (c - u)         model_out = [uncond; cond] on the batch axis when s is given
    d      = p x + q m             the data prediction
    x_next = a x + b d + c prev + e noise
Every sampler of fastdiff is this one update with its own host-computed coefficients.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from .. import backends, reference
from .._layout import is_channels_last, output_format
from ._common import (OP_TAGS, call_state, check_float, check_match, aux_meta, check_tensor, eager, launcher, meta,
                      needs_autograd, remember)

# call signature -> (launcher, scale) (fastdiff.ops._common)
_cfg_combine_memo: dict = {}
_sampler_step_memo: dict = {}


def _describe_tensor(t: torch.Tensor) -> backends.Inputs:
    return backends.Inputs(t.device, t.dtype, channels_last=is_channels_last(t), numel=t.numel())


def _describe_cfg_combine(out_uncond, out_cond, *args, **kwargs) -> backends.Inputs:
    return _describe_tensor(out_cond)


def _describe_sampler_step(x, *args, **kwargs) -> backends.Inputs:
    return _describe_tensor(x)


# --- cfg_combine -------------------------------------------------------------------------------

def _launch_cfg_combine(out_uncond, out_cond, scale):
    return launcher("cfg_combine", _describe_cfg_combine(out_uncond, out_cond))(out_uncond, out_cond, scale)


@torch.library.custom_op("fastdiff::cfg_combine", mutates_args=(), tags=OP_TAGS)
def _cfg_combine_op(out_uncond: torch.Tensor, out_cond: torch.Tensor, scale: float) -> torch.Tensor:
    return _launch_cfg_combine(out_uncond, out_cond, scale)


@_cfg_combine_op.register_fake
def _(out_uncond, out_cond, scale):
    return torch.empty_like(out_cond, memory_format=output_format(out_cond))


def _check_cfg_combine(out_uncond, out_cond, scale):
    op = "cfg_combine"
    check_tensor(op, "out_uncond", out_uncond)
    check_tensor(op, "out_cond", out_cond)
    check_match(op, "out_cond", out_cond, "out_uncond", out_uncond)
    return check_float(op, "scale", scale)


def cfg_combine(out_uncond: torch.Tensor, out_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: out_uncond + scale * (out_cond - out_uncond).

    out_uncond, out_cond: same shape, dtype (fp16, bf16, fp32; fp64 on the torch backend) and
    device, any layout. scale: a finite float. Returns a new tensor like out_cond, computed in fp32.
    """
    state = call_state(out_cond)
    key = state and (state, aux_meta(out_uncond), meta(out_cond), scale, type(scale))
    entry = _cfg_combine_memo.get(key)
    if entry is None:
        scale = _check_cfg_combine(out_uncond, out_cond, scale)
        if needs_autograd(out_uncond, out_cond):
            return reference.cfg_combine(out_uncond, out_cond, scale)
        if not eager(out_uncond, out_cond):
            return _cfg_combine_op(out_uncond, out_cond, scale)
        entry = remember(_cfg_combine_memo, key, launcher("cfg_combine", _describe_cfg_combine(out_uncond, out_cond)),
                         scale)
    launch, scale = entry
    return launch(out_uncond, out_cond, scale)


# --- sampler_step ------------------------------------------------------------------------------

def _launch_sampler_step(x, model_out, coeffs, coeff_tensor, guidance_scale, prev, noise):
    # a coeffs tensor may be a view (a column of a (6, T) table): kernels read six consecutive values
    c = coeff_tensor.contiguous() if coeff_tensor is not None else tuple(coeffs)
    return launcher("sampler_step", _describe_sampler_step(x))(
        x, model_out, c, guidance_scale=guidance_scale, prev=prev, noise=noise)


@torch.library.custom_op("fastdiff::sampler_step", mutates_args=(), tags=OP_TAGS)
def _sampler_step_op(x: torch.Tensor, model_out: torch.Tensor, coeffs: list[float],
                     coeff_tensor: Optional[torch.Tensor], guidance_scale: Optional[float],
                     prev: Optional[torch.Tensor], noise: Optional[torch.Tensor]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch_sampler_step(x, model_out, coeffs, coeff_tensor, guidance_scale, prev, noise)


@_sampler_step_op.register_fake
def _(x, model_out, coeffs, coeff_tensor, guidance_scale, prev, noise):
    fmt = output_format(x)
    return torch.empty_like(x, memory_format=fmt), torch.empty_like(x, memory_format=fmt)


def _six_floats(coeffs) -> bool:
    # a plain loop: on a small CPU, between launches, each builtin it would call costs more than it
    if len(coeffs) != 6:
        return False
    for v in coeffs:
        if type(v) is not float or not math.isfinite(v):
            return False
    return True


def _check_sampler_step(x, model_out, coeffs, guidance_scale, prev, noise):
    op = "sampler_step"
    check_tensor(op, "x", x)
    check_tensor(op, "model_out", model_out)
    check_match(op, "x", x, "model_out", model_out, shape=False, dtype=False)
    if guidance_scale is not None:
        guidance_scale = check_float(op, "guidance_scale", guidance_scale)
        if x.dim() == 0:
            raise ValueError("fastdiff.sampler_step: with guidance, x needs a batch axis to pair with "
                             "model_out's [uncond; cond] halves, got a 0-d x")
        expected = (2 * x.shape[0],) + tuple(x.shape[1:])
        if tuple(model_out.shape) != expected:
            raise ValueError(f"fastdiff.sampler_step: with guidance, model_out must hold [uncond; cond] "
                             f"with shape {expected}, got {tuple(model_out.shape)}")
    elif model_out.shape != x.shape:
        raise ValueError(f"fastdiff.sampler_step: model_out has shape {tuple(model_out.shape)} but x has "
                         f"{tuple(x.shape)} (pass guidance_scale for a [uncond; cond] batch)")
    for name, t in (("prev", prev), ("noise", noise)):
        if t is not None:
            check_tensor(op, name, t)
            check_match(op, "x", x, name, t)
    if isinstance(coeffs, torch.Tensor):
        if coeffs.shape != (6,) or not coeffs.is_floating_point() or coeffs.device != x.device:
            raise ValueError(f"fastdiff.sampler_step: a coeffs tensor must be a float tensor of shape (6,) "
                             f"on {x.device}, got {coeffs.dtype} {tuple(coeffs.shape)} on {coeffs.device}")
        return coeffs, guidance_scale
    if isinstance(coeffs, (str, bytes)) or not isinstance(coeffs, (tuple, list, Sequence)) or len(coeffs) != 6:
        raise TypeError("fastdiff.sampler_step: coeffs must be six numbers (p, q, a, b, c, e) or a tensor "
                        f"of shape (6,), got {coeffs!r}")
    # The samplers' case, six finite Python floats, checked at once (while compiling they may be symbolic).
    if not torch.compiler.is_compiling() and _six_floats(coeffs):
        return tuple(coeffs), guidance_scale
    return tuple(check_float(op, f"coeffs[{i}]", v) for i, v in enumerate(coeffs)), guidance_scale


def sampler_step(x: torch.Tensor, model_out: torch.Tensor,
                 coeffs: Union[Sequence[float], torch.Tensor], *,
                 guidance_scale: Optional[float] = None, prev: Optional[torch.Tensor] = None,
                 noise: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One scheduler update, CFG included, in one pass over memory.

    x: the latents, (N, ...), fp16/bf16/fp32 (fp64 on the torch backend), any layout.
    model_out: (N, ...) or, with guidance_scale, (2N, ...) holding [uncond; cond]; any float dtype.
    coeffs: (p, q, a, b, c, e) as six floats, or a float tensor (6,) on x's device (read on the
        device, so a captured CUDA graph can be replayed with new coefficients).
    prev, noise: like x, or None (their coefficient is then ignored).
    Returns (x_next, d), both like x: d = p x + q m is the data prediction, the next `prev` of a
    multistep solver. Arithmetic in fp32.
    """
    coeff_tensor = coeffs if isinstance(coeffs, torch.Tensor) else None
    # The coefficients change every step, so only their kind is part of the signature.
    state = call_state(x)
    key = state and (state, meta(x), aux_meta(model_out), aux_meta(prev), aux_meta(noise), aux_meta(coeff_tensor),
                     guidance_scale, type(guidance_scale), type(coeffs))
    entry = _sampler_step_memo.get(key)
    if entry is None or (coeff_tensor is None and not _six_floats(coeffs)):
        coeffs, guidance_scale = _check_sampler_step(x, model_out, coeffs, guidance_scale, prev, noise)
        if needs_autograd(x, model_out, coeffs, prev, noise):
            return reference.sampler_step(x, model_out, coeffs, guidance_scale=guidance_scale,
                                          prev=prev, noise=noise)
        if not eager(x, model_out, coeff_tensor, prev, noise):
            floats = [] if coeff_tensor is not None else list(coeffs)
            return _sampler_step_op(x, model_out, floats, coeff_tensor, guidance_scale, prev, noise)
        entry = remember(_sampler_step_memo, key, launcher("sampler_step", _describe_sampler_step(x)),
                         guidance_scale)
    launch, guidance_scale = entry
    c = coeffs if coeff_tensor is None else coeff_tensor.contiguous()
    return launch(x, model_out, c, guidance_scale=guidance_scale, prev=prev, noise=noise)


# Elementwise: one fused pass beats PyTorch's several wherever a kernel runs.
backends.register_op("cfg_combine", cfg_combine, _describe_cfg_combine, reference.cfg_combine,
                     auto_order=("cuda", "triton"))
backends.register_op("sampler_step", sampler_step, _describe_sampler_step, reference.sampler_step,
                     auto_order=("cuda", "triton"))
