"""Attention at DESIGN.md's anchor shapes, fp16: fastdiff's backends beside every SDPA backend
PyTorch has here (forced one at a time) and torch.compile of SDPA, in one run.

FLOPs per call: 4 * B * H * Sq * Sk * D (two matmuls). The ratio is against the best SDPA backend.
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from common import (auto_case, compile_static, env_info, matmul_flops, report, require_gpu, rotations, time_backends,
                    time_ms)
from fastdiff import backends, ops

# (name, B, Sq, Sk, H, D)
SHAPES = [("SD1.5 self 64x64", 2, 4096, 4096, 8, 40), ("SD1.5 cross 77", 2, 4096, 77, 8, 40),
          ("SDXL-like", 2, 4096, 4096, 10, 64), ("DiT-XL/2 512px", 2, 1024, 1024, 16, 72),
          ("Flux-like", 1, 4608, 4608, 24, 128)]
SDPA = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))


def main():
    require_gpu()
    ceiling = matmul_flops()
    rows, auto = [], []
    for name, b, sq, sk, h, d in SHAPES:
        nbytes = 2 * (2 * b * sq * h * d + 2 * b * sk * h * d)
        inputs = [tuple(torch.randn(b, s, h, d, device="cuda", dtype=torch.float16) for s in (sq, sk, sk))
                  for _ in range(rotations(nbytes))]
        times = {}
        for label, kind in SDPA.items():
            def run(q, k, v, kind=kind):
                with sdpa_kernel(kind):
                    return sdpa(q, k, v)
            try:
                times[f"sdpa {label}"] = time_ms(run, inputs)
            except RuntimeError:  # this backend does not take the shape here
                pass
        times["torch.compile sdpa"] = time_ms(compile_static(sdpa), inputs)
        desc = backends.Inputs(torch.device("cuda"), torch.float16, head_dim=d, seq_k=sk, numel=b * sq * h * d)
        times.update(time_backends("attention", desc, ops.attention, inputs))
        auto.append(auto_case("attention", desc, times))
        best = min(ms for impl, ms in times.items() if impl.startswith("sdpa"))
        flops = 4 * b * h * sq * sk * d
        for impl, ms in times.items():
            rows.append({"shape": name, "impl": impl, "us": round(ms * 1e3, 1),
                         "TFLOP/s": round(flops / ms / 1e9, 1),
                         "of matmul peak": round(flops / ms * 1e3 / ceiling, 3), "vs best sdpa": round(best / ms, 2)})
    report("attention", rows, ["shape", "impl", "us", "TFLOP/s", "of matmul peak", "vs best sdpa"], auto)
    print(f"fp16 matmul {ceiling / 1e12:.0f} TFLOP/s on {env_info()['device']}")


if __name__ == "__main__":
    main()
