"""Training loops for the built-in models. Every batch is drawn fresh from the procedural scenes,
so there is no dataset to download and no epoch: a run is a number of steps."""
from __future__ import annotations

import csv
import dataclasses
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..builtin import checkpoint, data, schedule, tokenizer
from ..files import atomic_path
from . import classifier


def loop(name: str, params, loss_fn, steps: int, lr: float, out_dir, log_every: int = 50,
         ema: float = 0.0, after_step=None) -> list[float]:
    """AdamW with a short warm-up and a cosine decay; `loss_fn(step)` returns the loss of a fresh
    batch, `after_step(step)`, if given, runs after each update. With ema > 0 the parameters end as
    the exponential moving average of their values over the run (decay ema, shorter while the run
    is young), which denoises better than the last iterate. Writes <out_dir>/<name>_loss.csv
    (step, loss, seconds) once the run completes and returns the logged losses."""
    params = [p for p in params if p.requires_grad]
    average = [p.detach().clone() for p in params] if ema > 0 else None
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = max(1, min(200, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / steps)).item()))
    with atomic_path(Path(out_dir) / f"{name}_loss.csv") as log_path:
        logged, running, start = [], 0.0, time.time()
        with open(log_path, "w", newline="") as f, tqdm(range(steps), desc=f"train {name}", unit="step") as bar:
            writer = csv.writer(f)
            writer.writerow(["step", "loss", "seconds"])
            for step in bar:
                loss = loss_fn(step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                if average is not None:
                    torch._foreach_lerp_(average, [p.detach() for p in params], 1 - min(ema, (1 + step) / (10 + step)))
                if after_step is not None:
                    after_step(step)
                running += loss.item()
                if (step + 1) % log_every == 0 or step + 1 == steps:
                    n = (step % log_every) + 1
                    logged.append(running / n)
                    writer.writerow([step + 1, f"{running / n:.6f}", f"{time.time() - start:.1f}"])
                    bar.set_postfix(loss=f"{running / n:.4f}")
                    running = 0.0
    if average is not None:
        with torch.no_grad():
            torch._foreach_copy_(params, average)
    return logged


def train_classifier(*, out_dir, steps: int = 1500, batch: int = 128, seed: int = 1, width: int = 32):
    model = classifier.AttributeClassifier(width)
    g = torch.Generator().manual_seed(seed)

    def loss_fn(step):
        scenes = data.random_scenes(batch, g)
        return classifier.loss(model, classifier.augment(data.render(scenes), g), scenes)

    losses = loop("classifier", model.parameters(), loss_fn, steps, 3e-3, out_dir)
    return checkpoint.save(model.eval(), "classifier", {"width": width}, out_dir), losses


def diffusion_loss(denoise, z0: torch.Tensor, cond: tuple, sched, g: torch.Generator) -> torch.Tensor:
    """The DDPM objective: noise-prediction MSE at a uniform random timestep, noised in closed form."""
    t = torch.randint(0, sched.num_train_timesteps, (z0.shape[0],), generator=g)
    noise = torch.randn(z0.shape, generator=g)
    return torch.nn.functional.mse_loss(denoise(sched.add_noise(z0, noise, t), t, *cond), noise)


def caption_dropout(captions: list[str], p: float, g: torch.Generator) -> list[str]:
    """The empty caption in place of each caption with probability p: the unconditional input
    that classifier-free guidance needs at sampling time."""
    drop = (torch.rand(len(captions), generator=g) < p).tolist()
    return ["" if d else c for d, c in zip(drop, captions)]


def mislabel(scenes: data.Scenes, p: float, g: torch.Generator) -> data.Scenes:
    """The scenes as their captions describe them: each names a random (colour, shape) instead of
    its own with probability p, as web captions often miss what their image shows. A faithful
    model samples these errors back unguided; classifier-free guidance is what removes them."""
    n = len(scenes)
    wrong = torch.rand(n, generator=g) < p
    colour = torch.where(wrong, torch.randint(0, len(data.COLOURS), (n,), generator=g), scenes.colour)
    shape = torch.where(wrong, torch.randint(0, len(data.SHAPES), (n,), generator=g), scenes.shape)
    return dataclasses.replace(scenes, colour=colour, shape=shape)


def config_dict(module) -> dict:
    """A model's frozen-dataclass config as the dict stored with its weights."""
    return dataclasses.asdict(module.config)


def encode(vae, images: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    """Scaled latents of images: the posterior mean, or a draw from it when g is given.
    vae.encode(x) returns the posterior's (mean, logvar)."""
    mean, logvar = vae.encode(images)
    z = mean if g is None else mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=g)
    return z * vae.config.scaling_factor


def train_vae(vae, *, out_dir, steps: int = 1500, batch: int = 32, seed: int = 0, kl_weight: float = 1e-3,
              lr: float = 2e-3):
    """Reconstruction MSE plus a small KL to N(0, I); then sets config.scaling_factor to 1 / the
    latents' standard deviation (as Stable Diffusion's 0.18215) so the diffusion models see unit
    variance."""
    g = torch.Generator().manual_seed(seed)
    vae.config = dataclasses.replace(vae.config, scaling_factor=1.0)

    def loss_fn(step):
        x = data.render(data.random_scenes(batch, g))
        mean, logvar = vae.encode(x)
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=g)
        kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum() / x.numel()
        return torch.nn.functional.mse_loss(vae.decode(z), x) + kl_weight * kl

    losses = loop("vae", vae.parameters(), loss_fn, steps, lr, out_dir)
    vae.eval()
    with torch.no_grad():
        std = encode(vae, data.render(data.random_scenes(1024, g))).std().item()
    vae.config = dataclasses.replace(vae.config, scaling_factor=1.0 / std)
    return checkpoint.save(vae, "vae", config_dict(vae), out_dir), losses


def train_unet(unet, text_encoder, vae, *, out_dir, steps: int = 7000, batch: int = 64, seed: int = 0,
               p_uncond: float = 0.1, p_mislabel: float = 0.25, lr: float = 1e-3, ema: float = 0.999):
    """The latent U-Net and its text encoder together, through the diffusion loss, on frozen VAE
    latents, with caption dropout p_uncond and mislabelled captions p_mislabel."""
    g, sched = torch.Generator().manual_seed(seed), schedule()
    vae.eval().requires_grad_(False)

    def loss_fn(step):
        scenes = data.random_scenes(batch, g)
        captions = caption_dropout(data.caption(mislabel(scenes, p_mislabel, g), g), p_uncond, g)
        with torch.no_grad():
            z0 = encode(vae, data.render(scenes))
        context = text_encoder(tokenizer.encode(captions, text_encoder.config.max_len))
        return diffusion_loss(unet, z0, (context,), sched, g)

    losses = loop("unet", [*unet.parameters(), *text_encoder.parameters()], loss_fn, steps, lr, out_dir, ema=ema)
    checkpoint.save(text_encoder.eval(), "text_encoder", text_encoder.config.to_dict(), out_dir)
    return checkpoint.save(unet.eval(), "unet", config_dict(unet), out_dir), losses


def train_dit(dit, vae, *, out_dir, steps: int = 12000, batch: int = 64, seed: int = 0, p_uncond: float = 0.2,
              p_mislabel: float = 0.25, lr: float = 1e-3, ema: float = 0.999):
    """The DiT conditioned on the (colour, shape) class, with mislabelled classes p_mislabel and
    label dropout p_uncond to the null class (label num_classes). The null class reaches every
    block only through adaLN and lags the labels at 10% dropout, and guidance amplifies its error,
    hence 20%. A learned-sigma output is trained
    on its noise half only."""
    g, sched = torch.Generator().manual_seed(seed), schedule()
    vae.eval().requires_grad_(False)
    channels, null = dit.config.in_channels, dit.config.num_classes

    def denoise(x, t, y):
        return dit(x, t, y)[:, :channels]

    def loss_fn(step):
        scenes = data.random_scenes(batch, g)
        y = torch.where(torch.rand(batch, generator=g) < p_uncond, null, mislabel(scenes, p_mislabel, g).label)
        with torch.no_grad():
            z0 = encode(vae, data.render(scenes))
        return diffusion_loss(denoise, z0, (y,), sched, g)

    losses = loop("dit", dit.parameters(), loss_fn, steps, lr, out_dir, ema=ema)
    return checkpoint.save(dit.eval(), "dit", config_dict(dit), out_dir), losses
