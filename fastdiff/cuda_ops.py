"""The `cuda` backend: tensors in, raw pointers, shapes, strides, dtype codes and the stream out to fastdiff._C.

Each launcher takes exactly the arguments of its reference in fastdiff.reference (already
validated by fastdiff.ops), allocates outputs and workspaces through PyTorch and launches on the
current stream. Under FASTDIFF_CUDA_EMULATE the same launchers run fastdiff._C_host, the same
kernels and bindings built for the CPU (csrc/host), on CPU tensors.
"""
from __future__ import annotations

import importlib.util
import math

import torch

from fastdiff import backends
from fastdiff._layout import dense_like
from fastdiff.backends import GPU_FLOATS, OpSupport


def _load():
    emulate = backends._cuda_emulate()
    if not emulate:
        return importlib.import_module("fastdiff._C")
    if emulate == "1":
        return importlib.import_module("fastdiff._C_host")
    spec = importlib.util.spec_from_file_location("fastdiff._C_host", emulate)  # another build, e.g. a sanitizer's
    if spec is None:
        raise ImportError(f"FASTDIFF_CUDA_EMULATE={emulate} is neither 1 nor the path of a fastdiff._C_host build")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_C = _load()

_CODES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}
_DTYPES = {code: dtype for dtype, code in _CODES.items()}

# The kernels' limits, as csrc/include/fastdiff exports them (capability only: which inputs run
# fastest where is auto's business, fastdiff/measured.json). Attention runs any key count, longer
# sequences streaming through shared memory, though it is fastest for short ones (text).
SUPPORT = {
    "attention": OpSupport(frozenset(_DTYPES[code] for code in _C.ATTENTION_DTYPES),
                           head_dims=tuple(_C.ATTENTION_HEAD_DIMS), max_seq_k=_C.ATTENTION_MAX_SEQ_K),
    "group_norm": OpSupport(GPU_FLOATS),
    "cfg_combine": OpSupport(GPU_FLOATS),
    "sampler_step": OpSupport(GPU_FLOATS),
    "adaln": OpSupport(GPU_FLOATS),
    "qk_norm_rope": OpSupport(GPU_FLOATS),
}


def _stream(t: torch.Tensor) -> int:
    return 0 if t.device.type == "cpu" else torch.cuda.current_stream(t.device).cuda_stream


def _ptr(t) -> int:
    return 0 if t is None else t.data_ptr()


def cfg_combine(out_uncond, out_cond, scale):
    fmt, (c, u) = dense_like(out_cond, out_uncond)
    out = torch.empty_like(c, memory_format=fmt)
    _C.cfg_combine(u.data_ptr(), c.data_ptr(), out.data_ptr(), c.numel(), _CODES[c.dtype], float(scale), _stream(c))
    return out


def sampler_step(x, model_out, coeffs, *, guidance_scale=None, prev=None, noise=None):
    fmt, (x, model_out, prev, noise) = dense_like(x, model_out, prev, noise)
    x_next = torch.empty_like(x, memory_format=fmt)
    d = torch.empty_like(x, memory_format=fmt)
    if isinstance(coeffs, torch.Tensor):
        device_coeffs, coeffs = coeffs.to(torch.float32).contiguous(), (0.0,) * 6
    else:
        device_coeffs = None
    _C.sampler_step(x.data_ptr(), model_out.data_ptr(), _CODES[model_out.dtype], _ptr(prev), _ptr(noise),
                    x_next.data_ptr(), d.data_ptr(), x.numel(), _CODES[x.dtype], tuple(float(v) for v in coeffs),
                    _ptr(device_coeffs), None if guidance_scale is None else float(guidance_scale), _stream(x))
    return x_next, d


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, *, silu=False):
    fmt, (x,) = dense_like(x)
    n, c, spatial = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    y = torch.empty_like(x, memory_format=fmt)
    # The kernel reads weight and bias in x's dtype or in fp32 and converts them on chip; another
    # dtype (float64), or two different ones, are cast to fp32.
    params = [t for t in (weight, bias) if t is not None]
    wdtype = params[0].dtype if params else x.dtype
    if wdtype not in (x.dtype, torch.float32) or any(t.dtype != wdtype for t in params):
        wdtype = torch.float32
    weight, bias = (None if t is None else t.to(wdtype).contiguous() for t in (weight, bias))
    code = _CODES[x.dtype]
    ws_bytes = _C.group_norm_workspace_size(n, c, spatial, num_groups, code)
    workspace = torch.empty(ws_bytes, dtype=torch.uint8, device=x.device) if ws_bytes else None
    _C.group_norm(x.data_ptr(), y.data_ptr(), _ptr(weight), _ptr(bias), n, c, spatial, num_groups, float(eps),
                  bool(silu), fmt is not torch.contiguous_format, code, _CODES[wdtype], _ptr(workspace), ws_bytes,
                  _stream(x))
    return y


def attention(q, k, v, *, scale=None):
    b, sq, h, d = q.shape
    out = torch.empty((b, sq, h, d), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    _C.attention(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), (b, h, sq, k.shape[1], d),
                 q.stride()[:3], k.stride()[:3], v.stride()[:3], scale, _CODES[q.dtype], _stream(q))
    return out


def adaln(x, shift, scale, eps=1e-6, *, gate=None, residual=None):
    b, t, d = x.shape
    y = torch.empty((b, t, d), dtype=x.dtype, device=x.device)
    gated = gate is not None
    h = torch.empty_like(y) if gated else None
    # The kernel reads the modulation vectors in x's dtype: others are cast (B x D values).
    shift, scale, gate = (None if v is None else v.to(x.dtype) for v in (shift, scale, gate))
    _C.adaln(x.data_ptr(), x.stride(), shift.data_ptr(), shift.stride(), scale.data_ptr(), scale.stride(),
             _ptr(gate), gate.stride() if gated else (0, 1), _ptr(residual), residual.stride() if gated else (0, 0, 1),
             _ptr(h), y.data_ptr(), b, t, d, _CODES[x.dtype], float(eps), _stream(x))
    return (h, y) if gated else y


def qk_norm_rope(q, k, q_weight, k_weight, cos=None, sin=None, eps=1e-6):
    # The kernel reads the weights and the rotation tables in fp32, dense: others are converted.
    q_weight, k_weight, cos, sin = (None if v is None else v.to(torch.float32).contiguous()
                                    for v in (q_weight, k_weight, cos, sin))
    _C.qk_norm_rope(q.data_ptr(), q.stride(), k.data_ptr(), k.stride(), q_weight.data_ptr(), k_weight.data_ptr(),
                    _ptr(cos), _ptr(sin), tuple(q.shape), _CODES[q.dtype], float(eps), _stream(q))
    return q, k
