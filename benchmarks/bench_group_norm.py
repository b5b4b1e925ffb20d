"""GroupNorm+SiLU on every backend beside torch eager (F.group_norm + F.silu) and torch.compile
of it, at the SD1.5 U-Net and SD VAE shapes, fp16, NCHW and channels_last, in one run.

Bytes moved per call: read x once, write y once (weights are negligible).
"""
import torch
import torch.nn.functional as F

from common import (auto_case, copy_bandwidth, env_info, report, require_gpu, rotations, time_backends,
                    time_ms)
from fastdiff import backends, ops

SHAPES = [(2, 320, 64, 64), (2, 640, 32, 32), (2, 1280, 16, 16), (2, 1280, 8, 8), (2, 960, 32, 32),
          (1, 512, 64, 64), (1, 256, 256, 256), (2, 128, 512, 512), (1, 128, 1024, 1024)]


def eager(x, w, b):
    return F.silu(F.group_norm(x, 32, w, b, 1e-5))


def main():
    require_gpu()
    ceiling = copy_bandwidth()
    compiled = torch.compile(eager)
    rows, auto = [], []
    for shape in SHAPES:
        for layout in (torch.contiguous_format, torch.channels_last):
            nbytes = 2 * torch.Size(shape).numel() * 2
            inputs = [(torch.randn(shape, device="cuda", dtype=torch.float16).add_(0.5).to(memory_format=layout),
                       torch.randn(shape[1], device="cuda", dtype=torch.float16),
                       torch.randn(shape[1], device="cuda", dtype=torch.float16)) for _ in range(rotations(nbytes))]
            times = {"torch eager": time_ms(eager, inputs), "torch.compile": time_ms(compiled, inputs)}
            x = inputs[0][0]
            desc = backends.Inputs(x.device, x.dtype, channels_last=layout is torch.channels_last, numel=x.numel())
            times.update(time_backends("group_norm", desc, lambda x, w, b: ops.group_norm(x, 32, w, b, silu=True),
                                       inputs))
            auto.append(auto_case("group_norm", desc, times))
            for impl, ms in times.items():
                rows.append({"shape": str(shape), "layout": "NHWC" if layout is torch.channels_last else "NCHW",
                             "impl": impl, "us": round(ms * 1e3, 1), "GB/s": round(nbytes / ms / 1e6, 1),
                             "of copy bw": round(nbytes / ms * 1e3 / ceiling, 3),
                             "vs eager": round(times["torch eager"] / ms, 2)})
    report("group_norm", rows, ["shape", "layout", "impl", "us", "GB/s", "of copy bw", "vs eager"], auto)
    print(f"copy bandwidth {ceiling / 1e12:.2f} TB/s on {env_info()['device']}")


if __name__ == "__main__":
    main()
