"""Procedural scenes: one coloured shape on a dark background, with a caption from a small grammar.

Everything is drawn on the fly from a seed (nothing is downloaded). A scene is four integer
attributes (shape, colour, size, position); `render` turns a batch of them into 32x32 RGB images
in [-1, 1] with anti-aliased edges, and `caption` turns them into text such as
"a small red circle at the top left". Captions leave out the size and the position at random so
that short prompts ("a red circle") are in the training distribution too.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

IMAGE_SIZE = 32
# Neighbours that a blurry sample can confuse (circle and ring, square and cross; red, orange, pink
# and brown; green and cyan; blue and purple) are there on purpose: prompt accuracy then measures
# fine distinctions too.
SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross")
COLOURS = {  # name -> RGB in [0, 1]
    "red": (0.90, 0.10, 0.10),
    "orange": (1.00, 0.55, 0.00),
    "yellow": (0.95, 0.90, 0.10),
    "green": (0.10, 0.75, 0.20),
    "cyan": (0.10, 0.80, 0.85),
    "blue": (0.15, 0.30, 0.95),
    "purple": (0.60, 0.15, 0.80),
    "pink": (1.00, 0.50, 0.75),
    "brown": (0.55, 0.30, 0.10),
}
COLOUR_NAMES = tuple(COLOURS)
SIZES = {"small": 6.0, "large": 8.5}  # half-extent in pixels: small ones must survive a 4x VAE
SIZE_NAMES = tuple(SIZES)
# A 3x3 grid of centres; a large shape at a corner stays (almost) inside the image.
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
_GRID = (8.0, 16.0, 24.0)


@dataclass(frozen=True)
class Scenes:
    """A batch of scene attributes, each a (N,) int64 tensor of indices into the tables above."""

    shape: torch.Tensor
    colour: torch.Tensor
    size: torch.Tensor
    position: torch.Tensor

    def __len__(self) -> int:
        return self.shape.numel()

    @property
    def label(self) -> torch.Tensor:
        """The (colour, shape) pair as one class index in [0, num_classes())."""
        return self.colour * len(SHAPES) + self.shape


def num_classes() -> int:
    return len(COLOURS) * len(SHAPES)


def random_scenes(n: int, generator: torch.Generator) -> Scenes:
    def pick(k):
        return torch.randint(0, k, (n,), generator=generator)

    return Scenes(pick(len(SHAPES)), pick(len(COLOURS)), pick(len(SIZES)), pick(len(POSITIONS)))


def render(scenes: Scenes) -> torch.Tensor:
    """(N,) scenes -> (N, 3, 32, 32) float32 images in [-1, 1]."""
    n = len(scenes)
    centres = torch.tensor(_GRID)
    cy = centres[scenes.position // 3].view(n, 1, 1)
    cx = centres[scenes.position % 3].view(n, 1, 1)
    r = torch.tensor(list(SIZES.values()))[scenes.size].view(n, 1, 1)
    coords = torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5
    dy = coords.view(1, -1, 1) - cy  # (N, H, 1)
    dx = coords.view(1, 1, -1) - cx  # (N, 1, W)
    # Signed distance (in pixels, negative inside) of each shape, all computed then selected.
    circle = (dx * dx + dy * dy).sqrt() - r
    square = torch.maximum(dx.abs(), dy.abs()) - 0.85 * r
    diamond = (dx.abs() + dy.abs() - 1.05 * r) * 0.7071
    # Upward triangle: base at cy + 0.8r, apex at cy - r, edges of slope 2 (|dx| grows with dy).
    base = dy - 0.8 * r
    edge = (2.0 * dx.abs() - (dy + r)) * 0.4472  # normalised by sqrt(1 + 2^2)
    triangle = torch.maximum(base, edge)
    ring = (circle + 0.36 * r).abs() - 0.28 * r  # outer radius r, hole radius 0.44 r
    arm = 0.35 * r  # plus sign: the union of two bars of half-width `arm`
    cross = torch.minimum(torch.maximum(dx.abs() - r, dy.abs() - arm), torch.maximum(dx.abs() - arm, dy.abs() - r))
    dist = torch.stack(torch.broadcast_tensors(circle, square, triangle, diamond, ring, cross), 1)  # (N, 6, H, W)
    dist = dist.gather(1, scenes.shape.view(n, 1, 1, 1).expand(n, 1, IMAGE_SIZE, IMAGE_SIZE))
    cover = (0.5 - dist).clamp(0.0, 1.0)  # (N, 1, H, W) anti-aliased coverage
    rgb = torch.tensor(list(COLOURS.values()))[scenes.colour].view(n, 3, 1, 1)
    background = 0.08
    return (background + cover * (rgb - background)) * 2.0 - 1.0


def caption(scenes: Scenes, generator: torch.Generator | None = None, p_keep: float = 0.5) -> list[str]:
    """Captions for a batch. Without a generator every attribute is named; with one, size and
    position are each kept with probability p_keep."""
    n = len(scenes)
    if generator is None:
        keep_size = keep_pos = torch.ones(n, dtype=torch.bool)
    else:
        keep_size = torch.rand(n, generator=generator) < p_keep
        keep_pos = torch.rand(n, generator=generator) < p_keep
    out = []
    for i in range(n):
        words = ["a"]
        if keep_size[i]:
            words.append(SIZE_NAMES[scenes.size[i]])
        words += [COLOUR_NAMES[scenes.colour[i]], SHAPES[scenes.shape[i]]]
        if keep_pos[i]:
            words += ["at", "the", POSITIONS[scenes.position[i]]]
        out.append(" ".join(words))
    return out


def parse(text: str) -> dict[str, int]:
    """The attributes a caption names, e.g. "a red circle" -> {"colour": 0, "shape": 0}."""
    t = " " + " ".join(text.lower().replace(",", " ").split()) + " "
    found = {}
    for key, names in (("shape", SHAPES), ("colour", COLOUR_NAMES), ("size", SIZE_NAMES)):
        for i, name in enumerate(names):
            if f" {name} " in t:
                found[key] = i
    # Longest match first so "top left" wins over "top" and "left".
    for i in sorted(range(len(POSITIONS)), key=lambda j: -len(POSITIONS[j])):
        if f" the {POSITIONS[i]} " in t:
            found["position"] = i
            break
    return found


def batch(n: int, seed: int, p_keep: float = 0.5) -> tuple[torch.Tensor, list[str], Scenes]:
    """A deterministic batch: (images, captions, scenes) drawn from `seed`."""
    g = torch.Generator().manual_seed(seed)
    scenes = random_scenes(n, g)
    return render(scenes), caption(scenes, g, p_keep), scenes
