"""qk_norm_rope (per-head RMSNorm of q and k, then the rotary embedding, in place on views of the
fused QKV projection) on every backend beside torch eager (F.rms_norm and diffusers' rotation of
interleaved pairs) and torch.compile of it, in one run, at the shapes of one transformer step of
Flux-dev at 1024px (batch 1: 4096 image and 512 text tokens in the double blocks, 4608 joint in
the single blocks; 24 heads of 128, rotated) and SD3.5-large at 1024px (batch 2 for CFG: 4096
image and 333 text tokens; 38 heads of 64, no rotation), fp16 and bf16.

Bytes moved per call: read and write q and k (weights and cos/sin tables are negligible).
"""
import sys

import torch
import torch.nn.functional as F

from common import Results, backend_impls, compile_static, copy_bandwidth, env_info, require_gpu, rotations
from fastdiff import backends, ops

# (B, S, H, D, rotated): the model and stream
SHAPES = {
    (1, 4096, 24, 128, True): "flux-dev image", (1, 512, 24, 128, True): "flux-dev text",
    (1, 4608, 24, 128, True): "flux-dev single",
    (2, 4096, 38, 64, False): "sd3.5-large image", (2, 333, 38, 64, False): "sd3.5-large text",
}


def eager(q, k, qw, kw, cos, sin):
    for x, w in ((q, qw), (k, kw)):
        y = F.rms_norm(x, x.shape[-1:], w, eps=1e-6)
        if cos is not None:
            real, imag = y.unflatten(-1, (-1, 2)).unbind(-1)
            y = y * cos[:, None] + torch.stack([-imag, real], dim=-1).flatten(-2) * sin[:, None]
        x.copy_(y)
    return q, k


def fused(q, k, qw, kw, cos, sin):
    return ops.qk_norm_rope(q, k, qw, kw, cos, sin, 1e-6)


def setup(b, s, h, d, rotated, dtype):
    """(input sets, fastdiff.backends.Inputs, {impl: fn}, bytes per call) of one case."""
    nbytes = 4 * b * s * h * d * dtype.itemsize

    def make():
        qkv = torch.randn(b, s, 3, h, d, device="cuda", dtype=dtype)  # the fused projection
        w = torch.randn(d, device="cuda", dtype=dtype)
        angles = torch.rand(s, d // 2, device="cuda").mul_(100).repeat_interleave(2, dim=1)
        tables = (angles.cos(), angles.sin()) if rotated else (None, None)
        return (qkv[:, :, 0], qkv[:, :, 1], w, w.clone(), *tables)

    inputs = [make() for _ in range(rotations(nbytes))]
    q = inputs[0][0]
    desc = backends.Inputs(q.device, q.dtype, head_dim=d, numel=q.numel())
    impls = {"torch eager": eager, "torch.compile": compile_static(eager),
             **backend_impls("qk_norm_rope", desc, fused)}
    return inputs, desc, impls, nbytes


def main():
    require_gpu()
    ceiling = copy_bandwidth()
    results = Results("qk_norm_rope", ["shape", "model", "rotated", "dtype", "impl", "us", "GB/s", "of copy bw",
                                       "vs eager"])
    for (b, s, h, d, rotated), model in SHAPES.items():
        for dtype in (torch.float16, torch.bfloat16):
            key = {"shape": str((b, s, h, d)), "model": model, "rotated": rotated,
                   "dtype": str(dtype).removeprefix("torch.")}
            case = results.call({**key, "impl": "setup"}, setup, b, s, h, d, rotated, dtype)
            if case is None:
                continue
            inputs, desc, impls, nbytes = case
            results.time_bandwidth(key, "qk_norm_rope", desc, impls, inputs, nbytes, ceiling)
            del case, inputs, impls
    status = results.finish()
    print(f"copy bandwidth {ceiling / 1e12:.2f} TB/s on {env_info()['device']}")
    return status


if __name__ == "__main__":
    sys.exit(main())
