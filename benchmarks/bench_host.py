"""Host cost of an op call: fastdiff's validation, backend selection, custom-op entry and output
layout, on top of the launcher it runs. Runs on any machine (the CPU with the torch backend, and on
a GPU every backend) with inputs so small that the call is all host work.

For each op and backend: the median wall time of an op call, of the same launcher called directly
with the arguments the op hands it (the bare launch), and their difference, the host cost that
fastdiff adds; the bound is 5 us. Calls on a GPU are queued back to back and synchronised once per
batch, so the times are host times, not kernel times.
"""
import argparse
import functools
import sys
import time

import torch

from common import FASTDIFF_BACKENDS, Results, env_info
from fastdiff import backends, ops

BOUND_US = 5.0


def cases(device: torch.device):
    """(op, args, kwargs of the op call, args and kwargs the op hands its launcher) for tiny inputs."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32

    def t(*shape, dtype=dtype):
        return torch.randn(shape, device=device, dtype=dtype)
    x, m = t(1, 4, 8, 8), t(2, 4, 8, 8)
    g, gw, gb = t(1, 32, 4, 4), t(32, dtype=torch.float32), t(32, dtype=torch.float32)
    q, k = t(1, 16, 2, 64), t(1, 8, 2, 64)
    coeffs = (0.7, -0.3, 0.9, 0.1, -0.05, 0.0)
    yield "cfg_combine", (m[:1], m[1:], 7.5), {}, (m[:1], m[1:], 7.5), {}
    yield ("sampler_step", (x, m, coeffs), {"guidance_scale": 7.5},
           (x, m, coeffs), {"guidance_scale": 7.5, "prev": None, "noise": None})
    yield "group_norm", (g, 8, gw, gb, 1e-5), {"silu": True}, (g, 8, gw, gb, 1e-5), {"silu": True}
    yield "attention", (q, k, k), {}, (q, k, k), {"scale": None}
    a, ab = t(1, 16, 64), t(1, 64)
    yield "adaln", (a, ab, ab, 1e-6), {}, (a, ab, ab, 1e-6), {"gate": None, "residual": None}
    rw, rc = t(64, dtype=torch.float32), t(16, 64)
    yield "qk_norm_rope", (q, q, rw, rw, rc, rc, 1e-6), {}, (q, q, rw, rw, rc, rc, 1e-6), {}


def host_us(fns, calls: int, repeats: int) -> list[float]:
    """The least wall time per call of `calls` back-to-back calls of each of fns, over `repeats`
    rounds that alternate between them, so that other load on the machine falls on all alike (the
    least, as such load only ever adds)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for fn in fns:  # warm-up: JIT, caches, allocator
        for _ in range(calls):
            fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            sync()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            sync()
            best[i] = min(best[i], (time.perf_counter() - start) / calls * 1e6)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per timed batch (default 2000)")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per measurement (default 15)")
    parser.add_argument("--results", default=None, help="folder for host.json (default results/)")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(1)  # the host cost of one dispatch thread, not of an intra-op pool
    results = Results("host", ["op", "backend", "op call us", "bare launch us", "added us", f"within {BOUND_US} us"],
                      folder=args.results)
    print(env_info())
    for op, args_, kwargs, bare_args, bare_kwargs in cases(device):
        inputs = backends.OPS[op].describe(*args_, **kwargs)
        fn = getattr(ops, op)
        for name in FASTDIFF_BACKENDS:
            backend = backends.BACKENDS[name]
            if backend.not_supported_reasons(op, inputs):
                continue
            with results.attempt(op=op, backend=name):
                launch = backend.impl(op)
                calls = [functools.partial(fn, *args_, **kwargs), functools.partial(launch, *bare_args, **bare_kwargs)]
                with ops.use_backend(name):  # the forced backend is what the op call selects
                    op_us, bare_us = host_us(calls, args.calls, args.repeats)
                added = op_us - bare_us
                results.add({"op": op, "backend": name, "op call us": round(op_us, 2),
                             "bare launch us": round(bare_us, 2), "added us": round(added, 2),
                             f"within {BOUND_US} us": added <= BOUND_US})
    return results.finish()


if __name__ == "__main__":
    sys.exit(main())
