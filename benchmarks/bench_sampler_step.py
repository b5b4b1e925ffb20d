"""sampler_step with CFG (a DDIM step and a DPM-Solver++ 2M step) on every backend beside torch
eager and torch.compile of the same reference, measured in the same run.

Bytes moved per call: read x, [uncond; cond] model_out and prev (if any), write x_next and d.
"""
import argparse

import torch

from common import (auto_case, copy_bandwidth, env_info, report, require_gpu, rotations, time_backends,
                    time_ms)
from fastdiff import backends, ops, reference

# (name, latent shape, dtype, uses prev): the anchors of DESIGN.md first.
CASES = [
    ("ddim small", (1, 4, 64, 64), torch.float32, False),
    ("ddim large", (8, 16, 128, 128), torch.float32, False),
    ("dpm2m sd 512px", (1, 4, 64, 64), torch.float16, True),
    ("dpm2m large", (8, 16, 128, 128), torch.float16, True),
]
COEFFS = (0.7, -0.3, 0.9, 0.1, -0.05, 0.0)


def make_inputs(shape, dtype, with_prev):
    x = torch.randn(shape, device="cuda", dtype=dtype)
    m = torch.randn((2 * shape[0],) + shape[1:], device="cuda", dtype=dtype)
    prev = torch.randn(shape, device="cuda", dtype=dtype) if with_prev else None
    return x, m, prev


def main():
    argparse.ArgumentParser(description=__doc__).parse_args()
    require_gpu()
    ceiling = copy_bandwidth()
    eager = lambda x, m, prev: reference.sampler_step(x, m, COEFFS, guidance_scale=7.5, prev=prev)  # noqa: E731
    compiled = torch.compile(eager)
    rows, auto = [], []
    for name, shape, dtype, with_prev in CASES:
        n = torch.Size(shape).numel() * torch.finfo(dtype).bits // 8
        nbytes = n * (1 + 2 + (1 if with_prev else 0) + 2)
        inputs = [make_inputs(shape, dtype, with_prev) for _ in range(rotations(nbytes))]
        times = {"torch eager": time_ms(eager, inputs), "torch.compile": time_ms(compiled, inputs)}
        x = inputs[0][0]
        desc = backends.Inputs(x.device, x.dtype, numel=x.numel())
        times.update(time_backends("sampler_step", desc, lambda x, m, prev: ops.sampler_step(
            x, m, COEFFS, guidance_scale=7.5, prev=prev), inputs))
        auto.append(auto_case("sampler_step", desc, times))
        for impl, ms in times.items():
            rows.append({"case": name, "shape": str(shape), "dtype": str(dtype).removeprefix("torch."),
                         "impl": impl, "us": round(ms * 1e3, 2), "GB/s": round(nbytes / ms / 1e6, 1),
                         "of copy bw": round(nbytes / ms * 1e3 / ceiling, 3),
                         "vs eager": round(times["torch eager"] / ms, 2),
                         "vs compile": round(times["torch.compile"] / ms, 2)})
    report("sampler_step", rows, ["case", "dtype", "impl", "us", "GB/s", "of copy bw", "vs eager", "vs compile"], auto)
    print(f"copy bandwidth {ceiling / 1e12:.2f} TB/s on {env_info()['device']}")


if __name__ == "__main__":
    main()
