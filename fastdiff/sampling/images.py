"""Decoded images to PIL images and image files."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch


def to_pil(images: torch.Tensor) -> list:
    """(N, C, H, W) images in [-1, 1] (C = 1 or 3) to a list of PIL images."""
    from PIL import Image

    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"fastdiff.sampling.images: expected (N, 1 or 3, H, W) images, got {tuple(images.shape)}")
    u8 = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    mode = "L" if images.shape[1] == 1 else "RGB"
    return [Image.fromarray(im.permute(1, 2, 0).squeeze(-1).numpy(), mode) for im in u8]


def grid(pils: list, cols: Optional[int] = None):
    """The images side by side in rows of `cols` (a near-square grid by default)."""
    from PIL import Image

    cols = cols or math.ceil(math.sqrt(len(pils)))
    rows = math.ceil(len(pils) / cols)
    w, h = pils[0].size
    sheet = Image.new(pils[0].mode, (cols * w, rows * h))
    for i, im in enumerate(pils):
        sheet.paste(im, ((i % cols) * w, (i // cols) * h))
    return sheet


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def save_image(images: torch.Tensor, path, cols: Optional[int] = None, scale: int = 1) -> Path:
    """Save (N, C, H, W) images in [-1, 1] as one grid of `cols` columns (near-square by default),
    enlarged `scale` times with nearest pixels (for small images), in the format the extension
    names (.png, .jpg/.jpeg, .webp), whole or not at all; returns the path."""
    from PIL import Image

    from ..files import atomic_path

    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"fastdiff.sampling.images: {path}: expected a file name ending in {', '.join(FORMATS)}")
    sheet = grid(to_pil(images), cols)
    if scale != 1:
        sheet = sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format=fmt, **({"quality": 95} if fmt != "PNG" else {}))
    return path
