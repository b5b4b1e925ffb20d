"""Prompt accuracy of the built-in models (`fastdiff eval`), measured by the shipped attribute
classifier, over CFG scales and over samplers at their usual step counts; the tables and PNG plots."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .. import builtin
from ..builtin import data
from . import classifier, plots

CFG_SCALES = (1.0, 3.0, 7.5, 12.0, 20.0)
# (name, sampler, steps): each sampler at its usual step count. The built-in models are not
# consistency-distilled, so "lcm" is the LCM few-step schedule run on the plain noise predictor.
SAMPLER_RUNS = (("DDPM", "ddpm", 1000), ("DDIM", "ddim", 50), ("DDIM", "ddim", 20),
                ("DPM-Solver++ 2M", "dpmpp_2m", 20), ("Euler", "euler", 30), ("LCM-style", "lcm", 4))
# The CFG sweep runs the models' default sampler and steps, the sampler sweep their default scale.
REFERENCE = (builtin.SAMPLING.sampler, builtin.SAMPLING.steps)
GUIDANCE = builtin.SAMPLING.guidance_scale


def prompts(per_class: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Every (colour, shape) pair as "a <colour> <shape>", per_class times."""
    colour = torch.arange(len(data.COLOURS)).repeat_interleave(len(data.SHAPES)).repeat(per_class)
    shape = torch.arange(len(data.SHAPES)).repeat(len(data.COLOURS)).repeat(per_class)
    texts = [f"a {data.COLOUR_NAMES[c]} {data.SHAPES[s]}" for c, s in zip(colour.tolist(), shape.tolist())]
    return texts, colour, shape


def measure(model, judge, per_class: int, sampler: str, steps: int, scale: float, seed: int) -> dict:
    texts, colour, shape = prompts(per_class)
    start = time.time()
    images = model.generate(texts, sampler=sampler, steps=steps, guidance_scale=scale, seed=seed)
    seconds = time.time() - start
    acc_colour, acc_shape, acc = classifier.accuracy(judge, images.cpu(), colour, shape)
    return {"sampler": sampler, "steps": steps, "cfg": scale, "accuracy": acc, "colour": acc_colour,
            "shape": acc_shape, "samples": len(texts), "seconds": round(seconds, 2)}


def run_all(kind: str, per_class: int, seed: int, device: str, weights_dir=None, log=print) -> list[dict]:
    """Every cell of both tables for the built-in model `kind`, one model (and one Pipeline) for all."""
    model = builtin.sampling_model(kind, device=device, weights_dir=weights_dir)
    judge = classifier.load(weights_dir)
    rows = []
    runs = [(REFERENCE[0], REFERENCE[1], s) for s in CFG_SCALES]
    runs += [(sampler, steps, GUIDANCE) for _, sampler, steps in SAMPLER_RUNS if (sampler, steps) != REFERENCE]
    for sampler, steps, scale in runs:
        row = {"model": kind, **measure(model, judge, per_class, sampler, steps, scale, seed)}
        log(f"{kind:5s} {sampler:9s} steps {steps:4d} cfg {scale:5.1f}: accuracy {row['accuracy']:.3f} "
            f"({row['seconds']:.1f} s)")
        rows.append(row)
    return rows


def _kinds(rows: list[dict]) -> list[str]:
    return sorted({r["model"] for r in rows}, key=list(builtin.NAMES).index)


def _reference_name() -> str:
    """The CFG sweep's sampler and steps as the tables name them: "DPM-Solver++ 2M, 20 steps"."""
    return next(f"{n}, {steps} steps" for n, sampler, steps in SAMPLER_RUNS if (sampler, steps) == REFERENCE)


def table(rows: list[dict]) -> str:
    """Markdown tables: accuracy against CFG scale (at REFERENCE), and against sampler (at GUIDANCE)."""
    kinds = _kinds(rows)
    get = {(r["model"], r["sampler"], r["steps"], r["cfg"]): r["accuracy"] for r in rows}
    head = "| " + " | ".join(kinds) + " |"
    lines = [f"| CFG scale ({_reference_name()}) {head}", "|---" * (len(kinds) + 1) + "|"]
    for s in CFG_SCALES:
        lines.append(f"| {s:g} | " + " | ".join(f"{get[(k, *REFERENCE, s)]:.1%}" for k in kinds) + " |")
    lines += ["", f"| sampler, steps (CFG {GUIDANCE:g}) {head}", "|---" * (len(kinds) + 1) + "|"]
    for n, sampler, steps in SAMPLER_RUNS:
        lines.append(f"| {n} {steps} | " + " | ".join(f"{get[(k, sampler, steps, GUIDANCE)]:.1%}" for k in kinds)
                     + " |")
    return "\n".join(lines)


def report(rows: list[dict], out) -> None:
    """Prints the tables of `rows` (from run_all, one model or both) and writes results.json,
    table.md and the two plots into the folder `out`."""
    kinds = _kinds(rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = table(rows)
    print(text)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    (out / "table.md").write_text(text + "\n")
    series = {k: [(s, next(r["accuracy"] for r in rows if r["model"] == k and r["cfg"] == s
                   and (r["sampler"], r["steps"]) == REFERENCE)) for s in CFG_SCALES] for k in kinds}
    plots.line_plot(series, "CFG scale", "prompt accuracy", f"Accuracy vs CFG ({_reference_name()})",
                    out / "accuracy_vs_cfg.png")
    by_steps = {f"{k} {n}": [(r["steps"], r["accuracy"]) for r in rows
                             if r["model"] == k and r["sampler"] == s and r["cfg"] == GUIDANCE]
                for k in kinds for n, s in {(n, s) for n, s, _ in SAMPLER_RUNS}}
    plots.line_plot({k: sorted(v) for k, v in sorted(by_steps.items())}, "steps (log)", "prompt accuracy",
                    f"Accuracy vs steps (CFG {GUIDANCE:g})", out / "accuracy_vs_steps.png", log_x=True)
    print(f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'accuracy_vs_cfg.png'}, "
          f"{out / 'accuracy_vs_steps.png'}")
