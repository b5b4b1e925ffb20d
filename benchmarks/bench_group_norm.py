"""GroupNorm+SiLU on every backend beside torch eager (F.group_norm + F.silu) and torch.compile of
it, fp16, NCHW and channels_last, in one run, at every GroupNorm input shape of the SD1.5 U-Net
(512px) and the SDXL U-Net (1024px), both at batch 2 (CFG), and of the SD VAE decoder at 512px
and 1024px, batch 1. The shapes are read off a forward of fastdiff's models on the meta device.
Every shape is timed with SiLU fused (the attention norms run without it; the bytes are the same).

Bytes moved per call: read x once, write y once (weights are negligible).
"""
import sys

import torch
import torch.nn.functional as F

from common import Results, backend_impls, compile_static, copy_bandwidth, env_info, require_gpu, rotations
from fastdiff import backends, ops
from fastdiff.models import UNet, UNetConfig, VAE, VAEConfig
from fastdiff.models.blocks import GroupNorm


def model_shapes() -> dict:
    """{(input shape, groups): names of the models that norm it}, deduplicated, in model order."""
    r = torch.randn
    runs = {  # name: (model builder, forward)
        "sd15 unet": (lambda: UNet(UNetConfig.sd15()), lambda m: m(r(2, 4, 64, 64), r(2), r(2, 77, 768))),
        "sdxl unet": (lambda: UNet(UNetConfig.sdxl()), lambda m: m(r(2, 4, 128, 128), r(2), r(2, 77, 2048),
                                                                  {"text_embeds": r(2, 1280), "time_ids": r(2, 6)})),
        "vae 512px": (lambda: VAE(VAEConfig.sd()), lambda m: m.decode(r(1, 4, 64, 64))),
        "vae 1024px": (lambda: VAE(VAEConfig.sdxl()), lambda m: m.decode(r(1, 4, 128, 128))),
    }
    shapes = {}
    # Meta tensors carry shapes only: full-size models run here without memory or compute.
    with torch.device("meta"), torch.no_grad():
        for name, (build, forward) in runs.items():
            def record(module, args, name=name):
                shapes.setdefault((tuple(args[0].shape), module.num_groups), {})[name] = None

            model = build()
            for m in model.modules():
                if isinstance(m, GroupNorm):
                    m.register_forward_pre_hook(record)
            forward(model)
    return {key: list(names) for key, names in shapes.items()}


def setup(shape, groups, layout):
    """(input sets, fastdiff.backends.Inputs, {impl: fn}) of one shape and layout."""
    def eager(x, w, b):
        return F.silu(F.group_norm(x, groups, w, b, 1e-5))

    def fused(x, w, b):
        return ops.group_norm(x, groups, w, b, silu=True)

    nbytes = 2 * torch.Size(shape).numel() * 2
    inputs = [(torch.randn(shape, device="cuda", dtype=torch.float16).add_(0.5).to(memory_format=layout),
               torch.randn(shape[1], device="cuda", dtype=torch.float16),
               torch.randn(shape[1], device="cuda", dtype=torch.float16)) for _ in range(rotations(nbytes))]
    x = inputs[0][0]
    desc = backends.Inputs(x.device, x.dtype, channels_last=layout is torch.channels_last, numel=x.numel())
    impls = {"torch eager": eager, "torch.compile": compile_static(eager),
             **backend_impls("group_norm", desc, fused)}
    return inputs, desc, impls


def main():
    require_gpu()
    shapes = model_shapes()
    print(f"{len(shapes)} GroupNorm input shapes, each NCHW and channels_last")
    ceiling = copy_bandwidth()
    results = Results("group_norm", ["shape", "groups", "models", "layout", "impl", "us", "GB/s", "of copy bw",
                                     "vs eager"])
    for (shape, groups), models in shapes.items():
        for layout in (torch.contiguous_format, torch.channels_last):
            key = {"shape": str(shape), "groups": groups, "models": ", ".join(models),
                   "layout": "NHWC" if layout is torch.channels_last else "NCHW"}
            case = results.call({**key, "impl": "setup"}, setup, shape, groups, layout)
            if case is None:
                continue
            inputs, desc, impls = case
            results.time_bandwidth(key, "group_norm", desc, impls, inputs, 2 * torch.Size(shape).numel() * 2, ceiling)
            del case, inputs, impls
    status = results.finish()
    print(f"copy bandwidth {ceiling / 1e12:.2f} TB/s on {env_info()['device']}")
    return status


if __name__ == "__main__":
    sys.exit(main())
