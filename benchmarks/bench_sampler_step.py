"""The guidance ops on every backend beside torch eager and torch.compile of the same reference,
measured in the same run: sampler_step with CFG (a DDIM step and a DPM-Solver++ 2M step) and
cfg_combine alone.

Bytes moved per call: sampler_step reads x, [uncond; cond] model_out and prev (if any) and writes
x_next and d; cfg_combine reads the two halves of model_out and writes the combined output.
"""
import argparse
import math
import sys

import torch

from common import Results, auto_case, backend_impls, compile_static, copy_bandwidth, env_info, require_gpu, rotations
from fastdiff import backends, ops, reference

# (name, latent shape, dtype, uses prev): the anchors of docs/design.md first.
STEP_CASES = [
    ("ddim small", (1, 4, 64, 64), torch.float32, False),
    ("ddim large", (8, 16, 128, 128), torch.float32, False),
    ("dpm2m sd 512px", (1, 4, 64, 64), torch.float16, True),
    ("dpm2m large", (8, 16, 128, 128), torch.float16, True),
]
# (name, latent shape, dtype of the model output): cfg_combine over the halves of that output.
CFG_CASES = [("cfg sd 512px", (1, 4, 64, 64), torch.float16), ("cfg large", (8, 16, 128, 128), torch.float16)]
COEFFS = (0.7, -0.3, 0.9, 0.1, -0.05, 0.0)
SCALE = 7.5


def step_case(shape, dtype, with_prev):
    """(eager, fused, maker of an input set, latent-sized tensors moved per call) of a CFG sampler_step."""
    def make():
        x = torch.randn(shape, device="cuda", dtype=dtype)
        m = torch.randn((2 * shape[0],) + shape[1:], device="cuda", dtype=dtype)
        return x, m, torch.randn(shape, device="cuda", dtype=dtype) if with_prev else None

    def eager(x, m, prev):
        return reference.sampler_step(x, m, COEFFS, guidance_scale=SCALE, prev=prev)

    def fused(x, m, prev):
        return ops.sampler_step(x, m, COEFFS, guidance_scale=SCALE, prev=prev)
    return eager, fused, make, 1 + 2 + int(with_prev) + 2


def cfg_case(shape, dtype):
    """The same for cfg_combine over the two halves of a CFG batch's model output."""
    def make():
        return torch.randn((2 * shape[0],) + shape[1:], device="cuda", dtype=dtype).chunk(2)

    def eager(u, c):
        return reference.cfg_combine(u, c, SCALE)

    def fused(u, c):
        return ops.cfg_combine(u, c, SCALE)
    return eager, fused, make, 3


def main():
    argparse.ArgumentParser(description=__doc__).parse_args()
    require_gpu()
    ceiling = copy_bandwidth()
    cases = ([("sampler_step", name, shape, dtype, step_case(shape, dtype, prev))
              for name, shape, dtype, prev in STEP_CASES]
             + [("cfg_combine", name, shape, dtype, cfg_case(shape, dtype)) for name, shape, dtype in CFG_CASES])
    results = Results("sampler_step", ["op", "case", "dtype", "impl", "us", "GB/s", "of copy bw", "vs eager",
                                       "vs compile"])
    for op, name, shape, dtype, (eager, fused, make, tensors) in cases:
        key = {"op": op, "case": name, "shape": str(shape), "dtype": str(dtype).removeprefix("torch.")}
        nbytes = tensors * math.prod(shape) * dtype.itemsize
        inputs = results.call({**key, "impl": "setup"},
                              lambda make=make, n=nbytes: [make() for _ in range(rotations(n))])
        if inputs is None:
            continue
        desc = backends.Inputs(torch.device("cuda"), dtype, numel=math.prod(shape))
        impls = {"torch eager": eager, "torch.compile": compile_static(eager), **backend_impls(op, desc, fused)}

        def fields(ms, nbytes=nbytes):
            return {"us": round(ms * 1e3, 2), "GB/s": round(nbytes / ms / 1e6, 1),
                    "of copy bw": round(nbytes / ms * 1e3 / ceiling, 3)}
        times, rows = results.time(key, impls, inputs, fields)
        results.add_auto(auto_case(op, desc, times))
        for impl, row in rows.items():
            for column, base in (("vs eager", "torch eager"), ("vs compile", "torch.compile")):
                row[column] = round(times[base] / times[impl], 2) if base in times else None
        results.save()
        del inputs, impls
    status = results.finish()
    print(f"copy bandwidth {ceiling / 1e12:.2f} TB/s on {env_info()['device']}")
    return status


if __name__ == "__main__":
    sys.exit(main())
