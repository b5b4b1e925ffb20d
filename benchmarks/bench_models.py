"""One step (one forward pass) of each model, fp16 (Flux bf16, its released dtype), measured in one run:

  sd15 unet   SD1.5 U-Net, batch 2, 512px (2x4x64x64 latents, 2x77x768 context)
  dit-xl/2    DiT-XL/2, batch 2, 256px (2x4x32x32 latents, class labels)
  vae decode  SD VAE decode, 512px (1x4x64x64 latents)
  sd3-medium  SD3-medium transformer, batch 2 (CFG), 1024px (2x16x128x128 latents, 2x333x4096 text)
  flux-dev    Flux-dev transformer, batch 1 (embedded guidance), 1024px, bf16 (1x4096x64 packed
              latents, 1x512x4096 text)

Rows: fastdiff on auto's backends (run benchmarks/record_auto.py first, or auto keeps its static
orders), fastdiff forced onto the torch backend and preferring each fused backend (triton, cuda:
every op it can run, torch for the rest, e.g. cuda attention takes head dims up to 160 only),
torch.compile of the fastdiff model (fastdiff's ops stay custom ops inside the graph) and, when
diffusers is importable, diffusers eager and torch.compile of it. With diffusers the fastdiff model
gets the diffusers model's random weights (converted by from_pretrained); without it fastdiff is
built from its presets and the speedup is against fastdiff on its torch backend. The conv models
(U-Net, VAE) run channels_last, both libraries.

"first call s" is the wall time of the first call, compile and Triton JIT included. The Triton and
Inductor caches start empty, but in-process caches are shared: a later row may reuse kernels an
earlier one compiled. FLOPs are counted once per model (FlopCounterMode on the torch backend) and
shared by its rows; "of matmul peak" is against the measured dense fp16 matmul rate.
"""
import os
import tempfile

# Empty compile caches, set before torch and triton read them, so first calls include compilation.
_CACHE = tempfile.TemporaryDirectory(prefix="bench_models_")
os.environ["TRITON_CACHE_DIR"] = os.path.join(_CACHE.name, "triton")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(_CACHE.name, "inductor")

import gc  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula  # noqa: E402

from common import (FASTDIFF_BACKENDS, Results, compile_static, convert_diffusers, env_info, matmul_flops,  # noqa: E402
                    require_gpu, share_dit_embedders, time_ms)
from fastdiff import ops  # noqa: E402
from fastdiff.models import (DiT, DiTConfig, Flux, FluxConfig, MMDiT, MMDiTConfig, UNet, UNetConfig, VAE,  # noqa: E402
                             VAEConfig)

try:
    import diffusers
    from diffusers.utils import logging

    logging.set_verbosity_error()  # the fp16 cast notice of randomly initialised models
except ImportError:
    diffusers = None


@register_flop_formula(torch.ops.fastdiff.attention)
def _attention_flops(q_shape, k_shape, *args, out_shape=None, **kwargs) -> int:
    """Two matmuls over (B, S, H, D); without this FlopCounterMode sees an opaque op and counts 0."""
    b, sq, h, d = q_shape
    return 4 * b * h * sq * k_shape[1] * d


# Each case: (models, fastdiff call, diffusers call or None, inputs, conv model), built on the current device.

def sd15_unet():
    inputs = (torch.randn(2, 4, 64, 64), torch.randint(0, 1000, (2,)), torch.randn(2, 77, 768))
    if diffusers is None:
        fd = UNet(UNetConfig.sd15())
        return [fd], fd, None, inputs, True
    m = diffusers.UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    fd = convert_diffusers(m, dtype=torch.float16)
    return [fd, m], fd, lambda x, t, c: m(x, t, encoder_hidden_states=c, return_dict=False)[0], inputs, True


def dit_xl2():
    inputs = (torch.randn(2, 4, 32, 32), torch.randint(0, 1000, (2,)), torch.randint(0, 1000, (2,)))
    if diffusers is None:
        fd = DiT(DiTConfig.xl2(256))
        return [fd], fd, None, inputs, False
    m = diffusers.DiTTransformer2DModel(out_channels=8)
    share_dit_embedders(m)
    fd = convert_diffusers(m, dtype=torch.float16)
    return [fd, m], fd, lambda x, t, y: m(x, timestep=t, class_labels=y, return_dict=False)[0], inputs, False


def vae_decode():
    inputs = (torch.randn(1, 4, 64, 64),)
    if diffusers is None:
        fd = VAE(VAEConfig.sd())
        return [fd], fd.decode, None, inputs, True
    m = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                                block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                                sample_size=512)
    fd = convert_diffusers(m, dtype=torch.float16)
    return [fd, m], fd.decode, lambda z: m.decode(z, return_dict=False)[0], inputs, True


def sd3_medium():
    inputs = (torch.randn(2, 16, 128, 128), torch.randn(2, 333, 4096), torch.randn(2, 2048),
              torch.rand(2) * 1000)
    if diffusers is None:
        fd = MMDiT(MMDiTConfig.sd3_medium())
        return [fd], fd, None, inputs, False
    m = diffusers.SD3Transformer2DModel(num_layers=24, num_attention_heads=24, caption_projection_dim=1536,
                                        pos_embed_max_size=192)
    fd = convert_diffusers(m)
    return [fd, m], fd, lambda x, c, p, t: m(hidden_states=x, encoder_hidden_states=c, pooled_projections=p,
                                             timestep=t, return_dict=False)[0], inputs, False


def flux_dev():
    grid = torch.stack(torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij"), -1).reshape(-1, 2)
    img_ids, txt_ids = torch.cat([torch.zeros(4096, 1), grid.float()], dim=1), torch.zeros(512, 3)
    inputs = (torch.randn(1, 4096, 64), torch.randn(1, 512, 4096), torch.randn(1, 768), torch.rand(1),
              torch.full((1,), 3.5))

    def fd_call(x, c, p, t, g):
        return fd(x, c, p, t, img_ids, txt_ids, g)
    if diffusers is None:
        fd = Flux(FluxConfig.dev())
        return [fd], fd_call, None, inputs, False
    m = diffusers.FluxTransformer2DModel(guidance_embeds=True)
    fd = convert_diffusers(m)
    return [fd, m], fd_call, lambda x, c, p, t, g: m(
        hidden_states=x, encoder_hidden_states=c, pooled_projections=p, timestep=t, img_ids=img_ids, txt_ids=txt_ids,
        guidance=g, return_dict=False)[0], inputs, False


CASES = {"sd15 unet": sd15_unet, "dit-xl/2": dit_xl2, "vae decode": vae_decode, "sd3-medium 1024px": sd3_medium,
         "flux-dev 1024px": flux_dev}
# The dtype each case runs in (float16 otherwise); its weights are created in it: Flux's 12B
# parameters in fp32 would not fit beside a second copy.
DTYPES = {"flux-dev 1024px": torch.bfloat16}


def on_backend(name, fn):
    """fn with the torch backend forced, or a fused backend preferred: torch runs what it lacks."""
    def run(*args):
        with ops.use_backend(name, fallback=name != "torch"):
            return fn(*args)
    return run


def first_call_s(fn, inputs) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn(*inputs)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def prepare(build, dtype):
    """The case built on the GPU in dtype (channels_last for the conv models): (models, fastdiff
    call, diffusers call or None, inputs)."""
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("cuda"):
            models, fd_call, df_call, inputs, conv = build()
    finally:
        torch.set_default_dtype(default)
    for m in models:
        m.to(dtype).eval()
    inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
    if conv:
        for m in models:
            m.to(memory_format=torch.channels_last)
        inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs)
    return models, fd_call, df_call, inputs


def count_flops(fd_call, inputs) -> int:
    with FlopCounterMode(display=False) as counter, ops.use_backend("torch"):
        fd_call(*inputs)
    return counter.get_total_flops()


@torch.no_grad()
def main():
    require_gpu()
    if diffusers is None:
        print("diffusers is not importable: no diffusers rows, and fastdiff runs on its presets' random weights")
    ceiling = matmul_flops()
    base = "diffusers eager" if diffusers is not None else "fastdiff torch"
    results = Results("models", ["model", "impl", "ms", f"vs {base}", "first call s", "TFLOP/s", "of matmul peak"])
    for name, build in CASES.items():
        case = results.call({"model": name, "impl": "build"}, prepare, build, DTYPES.get(name, torch.float16))
        if case is None:
            continue
        models, fd_call, df_call, inputs = case
        impls = {"fastdiff auto": fd_call, **{f"fastdiff {b}": on_backend(b, fd_call) for b in FASTDIFF_BACKENDS},
                 "fastdiff + torch.compile": compile_static(fd_call)}
        if df_call:
            impls.update({"diffusers eager": df_call, "diffusers + torch.compile": compile_static(df_call)})
        times, rows = {}, {}
        for impl, fn in impls.items():
            with results.attempt(model=name, impl=impl):
                first = first_call_s(fn, inputs)
                # One input set: the weights alone exceed L2, so there is no cache-resident rerun to avoid.
                times[impl] = time_ms(fn, [inputs], warmup_ms=200, rep_ms=1000)
                rows[impl] = results.add({"model": name, "impl": impl, "ms": round(times[impl], 3),
                                          "first call s": round(first, 2)})
        # Counted after the timings, so that first calls stay cold.
        flops = results.call({"model": name, "impl": "flop count"}, count_flops, fd_call, inputs)
        for impl, row in rows.items():
            ms = times[impl]
            row[f"vs {base}"] = round(times[base] / ms, 2) if base in times else None
            if flops:
                row.update({"TFLOP/s": round(flops / ms / 1e9, 1),
                            "of matmul peak": round(flops / ms * 1e3 / ceiling, 3)})
        results.save()
        del case, models, fd_call, df_call, inputs, impls, fn
        torch._dynamo.reset()
        gc.collect()
        torch.cuda.empty_cache()
    status = results.finish()
    print(f"fp16 matmul {ceiling / 1e12:.0f} TFLOP/s on {env_info()['device']}")
    return status


if __name__ == "__main__":
    sys.exit(main())
