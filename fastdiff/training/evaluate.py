"""Prompt accuracy of the built-in models (`fastdiff eval`), measured by the shipped attribute
classifier per attribute, over CFG scales and over samplers and step counts; the tables and PNG
plots."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .. import builtin
from ..builtin import data
from . import classifier, plots

CFG_SCALES = (1.0, 3.0, 7.5, 12.0, 20.0)
LCM_STEPS = (1, 2, 4, 8)
# (name, sampler, steps): each sampler at its usual step count, and the LCM schedule at few steps.
SAMPLER_RUNS = (("DDPM", "ddpm", 1000), ("DDIM", "ddim", 50), ("DDIM", "ddim", 20),
                ("DPM-Solver++ 2M", "dpmpp_2m", 20), ("Euler", "euler", 30),
                *(("LCM", "lcm", steps) for steps in LCM_STEPS))
# The CFG sweep runs the guided models' default sampler and steps, the sampler sweep their default
# scale; the distilled model, its guidance learned, runs unguided and only the LCM schedule.
REFERENCE = (builtin.SAMPLING.sampler, builtin.SAMPLING.steps)
GUIDANCE = builtin.SAMPLING.guidance_scale
# The prompt sets: every (colour, shape) pair as "a <colour> <shape>", and random scenes with every
# attribute named, "a small red circle at the top left" (for the models that read size and place).
SHORT, FULL = "colour and shape", "every attribute"


def _guided(kind: str) -> bool:
    """Whether the built-in model `kind` samples with guidance (the distilled one learned its own)."""
    return builtin.defaults(kind).guidance_scale != 1.0


def prompts(per_class: int) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Every (colour, shape) pair as "a <colour> <shape>", per_class times, and their targets."""
    colour = torch.arange(len(data.COLOURS)).repeat_interleave(len(data.SHAPES)).repeat(per_class)
    shape = torch.arange(len(data.SHAPES)).repeat(len(data.COLOURS)).repeat(per_class)
    texts = [f"a {data.COLOUR_NAMES[c]} {data.SHAPES[s]}" for c, s in zip(colour.tolist(), shape.tolist())]
    return texts, {"colour": colour, "shape": shape}


def scene_prompts(n: int, seed: int) -> tuple[list[str], dict[str, torch.Tensor]]:
    """n random scenes (drawn from seed) captioned with all their attributes, and their targets."""
    scenes = data.random_scenes(n, torch.Generator().manual_seed(seed))
    return data.caption(scenes), {name: getattr(scenes, name) for name in classifier.ATTRIBUTES}


def measure(model, judge, prompt_set, sampler: str, steps: int, scale: float, seed: int) -> dict:
    """One cell: the prompts of prompt_set (texts, targets) sampled once each, judged per attribute
    ("accuracy": every named attribute right) and per asked shape ("per_shape")."""
    texts, targets = prompt_set
    start = time.time()
    images = model.generate(texts, sampler=sampler, steps=steps, guidance_scale=scale, seed=seed)
    seconds = time.time() - start
    images = images.cpu()
    scores = classifier.accuracy(judge, images, targets)
    per_shape = {name: classifier.accuracy(judge, images[targets["shape"] == i],
                                           {k: v[targets["shape"] == i] for k, v in targets.items()})["all"]
                 for i, name in enumerate(data.SHAPES)}
    return {"sampler": sampler, "steps": steps, "cfg": scale, "accuracy": scores.pop("all"), **scores,
            "per_shape": per_shape, "samples": len(texts), "seconds": round(seconds, 2)}


def run_all(kind: str, per_class: int, seed: int, device: str, weights_dir=None, log=print) -> list[dict]:
    """Every cell of the tables for the built-in model `kind`, one model (and one Pipeline) for all:
    the CFG and sampler sweeps on the (colour, shape) prompts (the distilled model: LCM at
    LCM_STEPS), and for a model that reads size and place, its default sampling on prompts that name
    every attribute."""
    model = builtin.sampling_model(kind, device=device, weights_dir=weights_dir)
    judge = classifier.load(weights_dir)
    short = prompts(per_class)
    own = builtin.defaults(kind)
    if _guided(kind):
        runs = [(SHORT, *REFERENCE, s) for s in CFG_SCALES]
        runs += [(SHORT, sampler, steps, GUIDANCE) for _, sampler, steps in SAMPLER_RUNS
                 if (sampler, steps) != REFERENCE]
    else:
        runs = [(SHORT, "lcm", steps, 1.0) for steps in LCM_STEPS]
    if builtin.READS_SCENE[kind]:
        runs.append((FULL, own.sampler, own.steps, own.guidance_scale))
    rows = []
    for prompt_set, sampler, steps, scale in runs:
        texts = short if prompt_set == SHORT else scene_prompts(len(short[0]), seed)
        row = {"model": kind, "prompts": prompt_set, **measure(model, judge, texts, sampler, steps, scale, seed)}
        log(f"{kind:8s} {prompt_set:16s} {sampler:9s} steps {steps:4d} cfg {scale:5.1f}: accuracy "
            f"{row['accuracy']:.3f} ({row['seconds']:.1f} s)")
        rows.append(row)
    return rows


def _kinds(rows: list[dict]) -> list[str]:
    return sorted({r["model"] for r in rows}, key=list(builtin.NAMES).index)


def _reference_name() -> str:
    """The CFG sweep's sampler and steps as the tables name them: "DPM-Solver++ 2M, 20 steps"."""
    return next(f"{n}, {steps} steps" for n, sampler, steps in SAMPLER_RUNS if (sampler, steps) == REFERENCE)


def _cell(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _at_defaults(row: dict) -> bool:
    own = builtin.defaults(row["model"])
    return (row["sampler"], row["steps"], row["cfg"]) == (own.sampler, own.steps, own.guidance_scale)


def table(rows: list[dict]) -> str:
    """Markdown tables on the (colour, shape) prompts: accuracy against CFG scale (at REFERENCE),
    and against sampler and steps (at GUIDANCE; the distilled model unguided); then, at each
    model's defaults, accuracy per attribute on each prompt set, and per asked shape."""
    kinds = _kinds(rows)
    get = {(r["model"], r["sampler"], r["steps"], r["cfg"]): r["accuracy"] for r in rows if r["prompts"] == SHORT}
    guided = [k for k in kinds if _guided(k)]
    lines = [f"| CFG scale ({_reference_name()}) | " + " | ".join(guided) + " |", "|---" * (len(guided) + 1) + "|"]
    for s in CFG_SCALES:
        lines.append(f"| {s:g} | " + " | ".join(_cell(get.get((k, *REFERENCE, s))) for k in guided) + " |")
    names = [k if k in guided else f"{k} (unguided)" for k in kinds]
    lines += ["", f"| sampler, steps (CFG {GUIDANCE:g}) | " + " | ".join(names) + " |", "|---" * (len(kinds) + 1) + "|"]
    for n, sampler, steps in SAMPLER_RUNS:
        cells = [_cell(get.get((k, sampler, steps, builtin.defaults(k).guidance_scale))) for k in kinds]
        lines.append(f"| {n} {steps} | " + " | ".join(cells) + " |")
    defaults = [r for r in rows if _at_defaults(r)]
    attributes = (*classifier.ATTRIBUTES, "all")
    lines += ["", "| model, prompts (its defaults) | " + " | ".join(attributes) + " |",
              "|---" * (len(attributes) + 1) + "|"]
    for r in defaults:
        cells = [_cell(r.get(a)) for a in (*classifier.ATTRIBUTES, "accuracy")]
        lines.append(f"| {r['model']}, {r['prompts']} | " + " | ".join(cells) + " |")
    lines += ["", "| model, prompts (its defaults) | " + " | ".join(data.SHAPES) + " |",
              "|---" * (len(data.SHAPES) + 1) + "|"]
    for r in defaults:
        lines.append(f"| {r['model']}, {r['prompts']} | " + " | ".join(_cell(r["per_shape"][s]) for s in data.SHAPES)
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
    rows = [r for r in rows if r["prompts"] == SHORT]
    series = {k: [(r["cfg"], r["accuracy"]) for r in rows
                  if r["model"] == k and (r["sampler"], r["steps"]) == REFERENCE]
              for k in kinds if _guided(k)}
    plots.line_plot(series, "CFG scale", "prompt accuracy", f"Accuracy vs CFG ({_reference_name()})",
                    out / "accuracy_vs_cfg.png")
    by_steps = {f"{k} {n}": [(r["steps"], r["accuracy"]) for r in rows if r["model"] == k
                             and r["sampler"] == s and r["cfg"] == builtin.defaults(k).guidance_scale]
                for k in kinds for n, s in {(n, s) for n, s, _ in SAMPLER_RUNS}}
    by_steps = {k: v for k, v in by_steps.items() if v}  # the distilled model runs LCM alone
    plots.line_plot({k: sorted(v) for k, v in sorted(by_steps.items())}, "steps (log)", "prompt accuracy",
                    f"Accuracy vs steps (CFG {GUIDANCE:g})", out / "accuracy_vs_steps.png", log_x=True)
    print(f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'accuracy_vs_cfg.png'}, "
          f"{out / 'accuracy_vs_steps.png'}")
