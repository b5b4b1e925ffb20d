"""adaln (LayerNorm without affine and the per-sample modulation, plain and after the gated residual
add) on every backend beside torch eager and torch.compile of it, in one run, at the token shapes of
one transformer step of SD3-medium (batch 2 for CFG) and Flux-dev (batch 1, embedded guidance) at
1024px (4096 image tokens; 333 text tokens for SD3, 512 for Flux, 4608 joint in Flux's single
blocks), and DiT-XL/2 at 256px (batch 2), fp16 and bf16.

Bytes moved per call: read x and write y; gated, also read the residual and write h (the
modulation vectors are negligible).
"""
import sys

import torch
import torch.nn.functional as F

from common import Results, backend_impls, compile_static, copy_bandwidth, env_info, require_gpu, rotations
from fastdiff import backends, ops

# (B, T, D): the models whose blocks normalize that shape
SHAPES = {
    (2, 4096, 1536): "sd3-medium image", (2, 333, 1536): "sd3-medium text",
    (1, 4096, 3072): "flux-dev image", (1, 512, 3072): "flux-dev text", (1, 4608, 3072): "flux-dev single",
    (2, 256, 1152): "dit-xl/2",
}


def eager(x, shift, scale):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]


def eager_gated(x, shift, scale, gate, residual):
    h = residual + gate[:, None] * x
    return h, eager(h, shift, scale)


def setup(shape, dtype, gated):
    """(input sets, fastdiff.backends.Inputs, {impl: fn}, bytes per call) of one case."""
    b, _, d = shape
    nbytes = (4 if gated else 2) * torch.Size(shape).numel() * dtype.itemsize

    def make():
        mod = torch.randn(b, 6 * d, device="cuda", dtype=dtype)  # chunks of one modulation projection
        x = torch.randn(shape, device="cuda", dtype=dtype).add_(0.5)
        extra = (mod[:, 2 * d:3 * d], torch.randn(shape, device="cuda", dtype=dtype)) if gated else ()
        return (x, mod[:, :d], mod[:, d:2 * d], *extra)

    def fused(x, shift, scale, *gate_residual):
        gate, residual = gate_residual or (None, None)
        return ops.adaln(x, shift, scale, 1e-6, gate=gate, residual=residual)

    inputs = [make() for _ in range(rotations(nbytes))]
    x = inputs[0][0]
    desc = backends.Inputs(x.device, x.dtype, numel=x.numel())
    peer = eager_gated if gated else eager
    impls = {"torch eager": peer, "torch.compile": compile_static(peer), **backend_impls("adaln", desc, fused)}
    return inputs, desc, impls, nbytes


def main():
    require_gpu()
    ceiling = copy_bandwidth()
    results = Results("adaln", ["shape", "model", "dtype", "gated", "impl", "us", "GB/s", "of copy bw", "vs eager"])
    for shape, model in SHAPES.items():
        for dtype in (torch.float16, torch.bfloat16):
            for gated in (False, True):
                key = {"shape": str(shape), "model": model, "dtype": str(dtype).removeprefix("torch."),
                       "gated": gated}
                case = results.call({**key, "impl": "setup"}, setup, shape, dtype, gated)
                if case is None:
                    continue
                inputs, desc, impls, nbytes = case
                results.time_bandwidth(key, "adaln", desc, impls, inputs, nbytes, ceiling)
                del case, inputs, impls
    status = results.finish()
    print(f"copy bandwidth {ceiling / 1e12:.2f} TB/s on {env_info()['device']}")
    return status


if __name__ == "__main__":
    sys.exit(main())
