"""A tiny CNN that names the colour, shape, size and position of the shape in a 32x32 scene; it
scores generated samples."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..builtin import checkpoint, data

# The attributes it judges, each an index into data's tables, in the order forward() returns them.
ATTRIBUTES = ("colour", "shape", "size", "position")


class AttributeClassifier(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
        )
        self.colour = nn.Linear(2 * w, len(data.COLOURS))
        self.shape = nn.Linear(2 * w, len(data.SHAPES))
        # Size and position need to know where the features are: a 3x3 grid of them, one cell
        # per position, besides their maximum over the image.
        self.size = nn.Linear(2 * w * 10, len(data.SIZES))
        self.position = nn.Linear(2 * w * 10, len(data.POSITIONS))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, 3, 32, 32) in [-1, 1] -> the logits of each of ATTRIBUTES, (N, classes) each."""
        f = self.features(images)
        # Max pooling over space: the shape occupies a small part of the image.
        h = f.amax(dim=(2, 3))
        where = torch.cat((h, F.adaptive_max_pool2d(f, 3).flatten(1)), 1)
        return self.colour(h), self.shape(h), self.size(where), self.position(where)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each of ATTRIBUTES -> its predicted index per image."""
        logits = self(images.float().clamp(-1, 1))
        return {name: x.argmax(1) for name, x in zip(ATTRIBUTES, logits)}


def load(weights_dir=None) -> AttributeClassifier:
    """The trained classifier (shipped with the built-in models' weights), in eval mode."""
    return checkpoint.load(AttributeClassifier(**checkpoint.config("classifier", weights_dir)), "classifier",
                           weights_dir)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shifts of up to 2 pixels, a slight blur and noise: generated samples come through a VAE
    and are never pixel-perfect."""
    n = images.shape[0]
    dy, dx = torch.randint(-2, 3, (2,), generator=generator).tolist()
    images = images.roll((dy, dx), dims=(2, 3))
    kernel = torch.tensor([0.25, 0.5, 0.25])
    kernel = (kernel[:, None] * kernel[None, :]).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    images = torch.where(torch.rand(n, 1, 1, 1, generator=generator) < 0.5, blurred, images)
    sigma = 0.1 * torch.rand(n, 1, 1, 1, generator=generator)
    return images + sigma * torch.randn(images.shape, generator=generator)


def loss(model: AttributeClassifier, images, scenes: data.Scenes) -> torch.Tensor:
    return sum(F.cross_entropy(x, getattr(scenes, name)) for name, x in zip(ATTRIBUTES, model(images)))


def accuracy(model: AttributeClassifier, images: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, float]:
    """The fraction of images that match each target attribute (a subset of ATTRIBUTES, the
    attributes a prompt named), and under "all" those that match every one of them."""
    predicted = model.predict(images)
    ok = {name: predicted[name] == target for name, target in targets.items()}
    result = {name: hit.float().mean().item() for name, hit in ok.items()}
    result["all"] = torch.stack(list(ok.values())).all(0).float().mean().item()
    return result
