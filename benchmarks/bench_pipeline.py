"""A diffusers pipeline three ways, measured in one run:

  diffusers eager            the pipeline as diffusers builds it
  diffusers + torch.compile  pipe.unet = torch.compile(pipe.unet)
  fastdiff.accelerate        fastdiff.accelerate(pipe): fastdiff's models on the pipeline's own
                             tensors, the fused CFG + sampler_step loop, a CUDA graph per step

Cases (batch 1, CFG 7.5, DPM-Solver++ 2M): sd15, SD1.5 at 512px, 20 steps; sdxl, SDXL at 1024px,
20 steps. Weights are random (timing does not depend on them), fp16 on the GPU; text encoders
and tokenizer have the real shapes, the tokenizer a small vocabulary written here.

For each: images/s of the whole call (prompt to decoded image), ms per step (a call that stops at
the latents, over the step count), the first call's latency after the pipeline is built (compile
or graph capture included), peak device memory over the timed calls, and the weights held by the
pipeline's modules plus fastdiff's models (unique storages: what sharing the tensors saves).

--tiny runs tiny pipelines on the CPU in float32: it checks the script and times nothing worth
quoting. Rows are saved as they complete; a row that raises is recorded with its error.
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import Results, env_info, release_memory, require_gpu

IMPLS = ("diffusers eager", "diffusers + torch.compile", "fastdiff.accelerate")
CASES = {"sd15": (512, 20), "sdxl": (1024, 20)}  # name: (image side, steps)
PROMPT = "a red ring on a blue square"


def _tokenizer(folder: Path):
    import string

    from transformers import CLIPTokenizer

    letters = list(string.ascii_lowercase)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{t: i + 2 for i, t in enumerate(
        letters + [c + "</w>" for c in letters])}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _text(hidden, layers, heads, projection=None, tiny=False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if tiny:
        hidden, layers, heads = hidden // 32, 2, 2
        projection = projection and projection // 32
    config = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=4 * hidden,
                            num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                            projection_dim=projection or hidden, hidden_act="gelu")
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(config).eval()


def build(case: str, tiny: bool, device, dtype, folder: Path):
    """The case's pipeline with random weights (the same ones for every impl)."""
    import diffusers
    from diffusers.utils import logging

    logging.set_verbosity_error()  # the notice on casting randomly initialised models
    torch.manual_seed(0)
    vae_channels = (32, 32) if tiny else (128, 256, 512, 512)
    vae = diffusers.AutoencoderKL(block_out_channels=vae_channels, layers_per_block=1 if tiny else 2,
                                  down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
                                  up_block_types=("UpDecoderBlock2D",) * len(vae_channels), latent_channels=4,
                                  norm_num_groups=32, sample_size=64 if tiny else CASES[case][0])
    sched = diffusers.DPMSolverMultistepScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    words = _tokenizer(folder)
    if case == "sd15":
        unet = diffusers.UNet2DConditionModel(
            **(dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=32, attention_head_dim=4,
                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24, sample_size=32)
               if tiny else dict(cross_attention_dim=768, attention_head_dim=8, sample_size=64)))
        pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=_text(768, 12, 12, tiny=tiny), tokenizer=words,
                                                 unet=unet, scheduler=sched, safety_checker=None,
                                                 feature_extractor=None, requires_safety_checker=False)
    else:
        unet = diffusers.UNet2DConditionModel(
            **(dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=32, attention_head_dim=(2, 4),
                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64,
                    transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=40 + 6 * 8,
                    addition_time_embed_dim=8, sample_size=32)
               if tiny else dict(block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10),
                                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                 cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
                                 projection_class_embeddings_input_dim=2816, addition_time_embed_dim=256,
                                 sample_size=128)),
            addition_embed_type="text_time", use_linear_projection=True)
        pipe = diffusers.StableDiffusionXLPipeline(
            vae=vae, text_encoder=_text(768, 12, 12, tiny=tiny), text_encoder_2=_text(1280, 32, 20, 1280, tiny=tiny),
            tokenizer=words, tokenizer_2=words, unet=unet, scheduler=sched, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)


def weights_mib(pipe) -> float:
    """MiB of the unique storages under the pipeline's modules and fastdiff's models on them."""
    tensors = [t for _, m in pipe.components.items() if isinstance(m, torch.nn.Module) for t in m.parameters()]
    acc = getattr(pipe, "_fastdiff", None)
    if acc is not None:
        tensors += [t for s in acc.shared.values() for t in (*s.model.parameters(), *s.model.buffers())]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return round(sum(storages.values()) / 2**20, 1)


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _seconds(fn) -> float:
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def run(impl: str, case: str, tiny: bool, device, dtype, repeats: int) -> dict:
    import fastdiff

    side, steps = CASES[case]
    if tiny:
        side, steps = 64, 4
    with tempfile.TemporaryDirectory() as folder:
        pipe = build(case, tiny, device, dtype, Path(folder))
    before = weights_mib(pipe)

    def call(output_type="pil"):
        return pipe(PROMPT, height=side, width=side, num_inference_steps=steps, guidance_scale=7.5,
                    generator=torch.Generator(device).manual_seed(0), output_type=output_type)

    start = time.perf_counter()
    if impl == "diffusers + torch.compile":
        pipe.unet = torch.compile(pipe.unet)
    elif impl == "fastdiff.accelerate":
        fastdiff.accelerate(pipe)
    call()
    _sync()
    first = time.perf_counter() - start
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    image_s = statistics.median(_seconds(call) for _ in range(repeats))
    latent_s = statistics.median(_seconds(lambda: call("latent")) for _ in range(repeats))
    row = {"case": case, "impl": impl, "images/s": round(1 / image_s, 3), "ms/step": round(latent_s / steps * 1e3, 2),
           "first call s": round(first, 2),
           "peak MiB": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
           "weights MiB before": before, "weights MiB after": weights_mib(pipe)}
    if impl == "fastdiff.accelerate":
        acc = pipe._fastdiff
        row["fused"] = acc.last == "fastdiff's fused loop"
        row["cuda graphs"] = sum(p.captured_graphs for _, p in acc.pipelines.values())
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median)")
    parser.add_argument("--tiny", action="store_true", help="tiny pipelines on the CPU: checks the script, times "
                                                            "nothing worth quoting")
    parser.add_argument("--results", default=None, help="folder for pipeline.json (default results/)")
    args = parser.parse_args()
    if not args.tiny:
        require_gpu()
    device, dtype = ("cpu", torch.float32) if args.tiny else ("cuda", torch.float16)
    results = Results("pipeline", ["case", "impl", "images/s", "vs eager", "ms/step", "first call s", "peak MiB",
                                   "weights MiB before", "weights MiB after", "fused", "cuda graphs"],
                      folder=args.results)
    for case in args.cases:
        base = None
        for impl in args.impls:
            row = results.call({"case": case, "impl": impl}, run, impl, case, args.tiny, device, dtype, args.repeats)
            release_memory()
            if row is None:
                continue
            if impl == "diffusers eager":
                base = row["images/s"]
            row["vs eager"] = round(row["images/s"] / base, 2) if base else None
            results.add(row)
    status = results.finish()
    print(f"on {env_info()['device']}")
    return status


if __name__ == "__main__":
    sys.exit(main())
