"""A tiny CNN that names the colour and the shape in a 32x32 scene; it scores generated samples."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..builtin import checkpoint, data


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

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, 32, 32) in [-1, 1] -> colour logits (N, 6), shape logits (N, 4)."""
        # Max pooling over space: the shape occupies a small part of the image.
        h = self.features(images).amax(dim=(2, 3))
        return self.colour(h), self.shape(h)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        colour, shape = self(images.float().clamp(-1, 1))
        return colour.argmax(1), shape.argmax(1)


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
    colour, shape = model(images)
    return F.cross_entropy(colour, scenes.colour) + F.cross_entropy(shape, scenes.shape)


@torch.no_grad()
def accuracy(model: AttributeClassifier, images: torch.Tensor, colour: torch.Tensor, shape: torch.Tensor):
    """Fractions of images whose colour, shape, and both match the targets."""
    pc, ps = model.predict(images)
    ok_c, ok_s = pc == colour, ps == shape
    return ok_c.float().mean().item(), ok_s.float().mean().item(), (ok_c & ok_s).float().mean().item()
