"""Training loops for the default models. Every batch is drawn fresh from the procedural scenes,
so there is no dataset to download and no epoch: a run is a number of steps."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import torch
from tqdm import tqdm

from . import checkpoint, classifier, data


def loop(name: str, params, loss_fn, steps: int, lr: float, out_dir=None, log_every: int = 50) -> list[float]:
    """AdamW with a short warm-up and a cosine decay; `loss_fn(step)` returns the loss of a fresh
    batch. Writes <out_dir>/<name>_loss.csv (step, loss, seconds) and returns the logged losses."""
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = max(1, min(200, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / steps)).item()))
    log_path = Path(out_dir or checkpoint.WEIGHTS_DIR) / f"{name}_loss.csv"
    log_path.parent.mkdir(parents=True, exist_ok=True)
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
            running += loss.item()
            if (step + 1) % log_every == 0 or step + 1 == steps:
                n = (step % log_every) + 1
                logged.append(running / n)
                writer.writerow([step + 1, f"{running / n:.6f}", f"{time.time() - start:.1f}"])
                f.flush()
                bar.set_postfix(loss=f"{running / n:.4f}")
                running = 0.0
    return logged


def train_classifier(steps: int = 1500, batch: int = 128, seed: int = 1, out_dir=None, width: int = 32):
    model = classifier.AttributeClassifier(width)
    g = torch.Generator().manual_seed(seed)

    def loss_fn(step):
        scenes = data.random_scenes(batch, g)
        return classifier.loss(model, classifier.augment(data.render(scenes), g), scenes)

    losses = loop("classifier", model.parameters(), loss_fn, steps, 3e-3, out_dir)
    checkpoint.save(model.eval(), "classifier", {"width": width}, out_dir)
    return model, losses
