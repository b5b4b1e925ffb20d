"""Attention at the anchor shapes of docs/design.md, fp16: fastdiff's backends beside every SDPA backend
PyTorch has here (forced one at a time) and torch.compile of SDPA, in one run.

FLOPs per call: 4 * B * H * Sq * Sk * D (two matmuls). The ratio is against the best SDPA backend.
"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from common import Results, auto_case, backend_impls, compile_static, env_info, matmul_flops, require_gpu, rotations
from fastdiff import backends, ops

# (name, B, Sq, Sk, H, D)
SHAPES = [("SD1.5 self 64x64", 2, 4096, 4096, 8, 40), ("SD1.5 cross 77", 2, 4096, 77, 8, 40),
          ("SDXL-like", 2, 4096, 4096, 10, 64), ("DiT-XL/2 512px", 2, 1024, 1024, 16, 72),
          ("Flux-like", 1, 4608, 4608, 24, 128)]
SDPA = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))


def sdpa_impls(name: str, sample: tuple) -> dict:
    """{"sdpa <backend>": SDPA with that backend forced} for each backend that takes the shape."""
    impls = {}
    for label, kind in SDPA.items():
        def run(q, k, v, kind=kind):
            with sdpa_kernel(kind):
                return sdpa(q, k, v)
        try:
            run(*sample)
        except RuntimeError as e:
            if "No available kernel" in str(e):  # this backend does not take the shape here
                print(f"{name}: sdpa {label} does not take this shape")
                continue  # any other error: timed anyway, so that it is recorded as a failed row
        impls[f"sdpa {label}"] = run
    return impls


def setup(name, b, sq, sk, h, d):
    """(input sets, fastdiff.backends.Inputs, {impl: fn}) of one shape."""
    nbytes = 2 * (2 * b * sq * h * d + 2 * b * sk * h * d)
    inputs = [tuple(torch.randn(b, s, h, d, device="cuda", dtype=torch.float16) for s in (sq, sk, sk))
              for _ in range(rotations(nbytes))]
    desc = backends.Inputs(torch.device("cuda"), torch.float16, head_dim=d, seq_k=sk, numel=b * sq * h * d)
    impls = {**sdpa_impls(name, inputs[0]), "torch.compile sdpa": compile_static(sdpa),
             **backend_impls("attention", desc, ops.attention)}
    return inputs, desc, impls


def main():
    require_gpu()
    ceiling = matmul_flops()
    results = Results("attention", ["shape", "impl", "us", "TFLOP/s", "of matmul peak", "vs best sdpa"])
    for name, b, sq, sk, h, d in SHAPES:
        case = results.call({"shape": name, "impl": "setup"}, setup, name, b, sq, sk, h, d)
        if case is None:
            continue
        inputs, desc, impls = case
        flops = 4 * b * h * sq * sk * d

        def fields(ms, flops=flops):
            return {"us": round(ms * 1e3, 1), "TFLOP/s": round(flops / ms / 1e9, 1),
                    "of matmul peak": round(flops / ms * 1e3 / ceiling, 3)}
        times, rows = results.time({"shape": name}, impls, inputs, fields)
        results.add_auto(auto_case("attention", desc, times))
        best = min((ms for impl, ms in times.items() if impl.startswith("sdpa")), default=None)
        for impl, row in rows.items():
            row["vs best sdpa"] = round(best / times[impl], 2) if best else None
        results.save()
        del case, inputs, impls
    status = results.finish()
    print(f"fp16 matmul {ceiling / 1e12:.0f} TFLOP/s on {env_info()['device']}")
    return status


if __name__ == "__main__":
    sys.exit(main())
