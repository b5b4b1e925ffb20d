"""`fastdiff sample --pipeline DIR`: a local diffusers pipeline folder, sampled through
fastdiff.accelerate (its scheduler, its models on fastdiff's kernels)."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UsageError

# The pipelines accelerate serves, by what they are conditioned on.
TEXT = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
CLASSES = ("DiTPipeline",)


def check_folder(flag: str, value: str) -> str:
    """The pipeline class named by DIR/model_index.json (diffusers' save_pretrained layout)."""
    index = Path(value) / "model_index.json"
    if not index.is_file():
        raise UsageError(f"{flag} {value}: not a diffusers pipeline folder (no model_index.json in it)")
    try:
        name = json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError) as e:
        raise UsageError(f"{flag} {value}: model_index.json cannot be read ({e})") from None
    if name not in TEXT + CLASSES:
        raise UsageError(f"{flag} {value}: a {name}; fastdiff sample takes {', '.join(TEXT + CLASSES)}")
    return name


def load(folder: str, device, backend: str, cuda_graphs: bool, quiet: bool):
    import diffusers
    import torch

    from .. import accelerate

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = diffusers.DiffusionPipeline.from_pretrained(folder).to(device, dtype)
    pipe.set_progress_bar_config(disable=quiet)
    return accelerate(pipe, backend=backend, cuda_graphs=cuda_graphs)


def generate(pipe, rows: list, *, steps, guidance_scale, seed: int, device):
    """(N, 3, H, W) images in [-1, 1], one per row (a prompt or a class label)."""
    import torch

    kwargs = {"num_inference_steps": steps} if steps is not None else {}
    if guidance_scale is not None:
        kwargs["guidance_scale"] = guidance_scale
    generator = torch.Generator(device).manual_seed(seed)
    key = "class_labels" if type(pipe).__name__ in CLASSES else "prompt"
    images = pipe(**{key: rows}, generator=generator, output_type="pt", **kwargs).images
    return images * 2 - 1
