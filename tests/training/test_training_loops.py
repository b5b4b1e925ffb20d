"""The training loops and the sampling glue, on the built-in models' configs (fastdiff.models), trained for a
few steps."""
import csv

import pytest
import torch
from PIL import Image

from fastdiff import builtin, cli
from fastdiff.builtin import checkpoint, data, tokenizer
from fastdiff.sampling import model as sampling_model
from fastdiff.sampling.images import save_image
from fastdiff.training import classifier, evaluate, lcm, train

pytestmark = pytest.mark.slow  # every test here trains models: most of the suite's CPU time


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The built-in models trained for a few steps into a fresh weights folder, with the shipped classifier."""
    out = tmp_path_factory.mktemp("weights")
    train.train_vae(builtin.new("vae"), steps=30, batch=16, out_dir=out)
    vae = builtin.load("vae", weights_dir=out)
    train.train_unet(builtin.new("unet"), builtin.new_text_encoder(), vae, steps=20, batch=16, out_dir=out)
    train.train_dit(builtin.new("dit"), vae, steps=20, batch=16, out_dir=out)
    lcm.train_lcm(builtin.load("unet", weights_dir=out), builtin.load("text_encoder", weights_dir=out), vae, steps=5,
                  batch=8, out_dir=out)
    checkpoint.save(classifier.load(), "classifier", checkpoint.config("classifier"), out)
    return out


def _fixed_loss(denoise, vae, cond_fn):
    """The diffusion loss on one fixed batch (scenes, timesteps and noise from a fixed seed)."""
    g = torch.Generator().manual_seed(1234)
    scenes = data.random_scenes(64, g)
    with torch.no_grad():
        z0 = train.encode(vae, data.render(scenes))
        return train.diffusion_loss(denoise, z0, cond_fn(scenes), builtin.schedule(), g).item()


def test_vae_training_reduces_reconstruction_loss(tmp_path):
    vae = builtin.new("vae")
    x = data.render(data.random_scenes(64, torch.Generator().manual_seed(5)))
    before = torch.nn.functional.mse_loss(vae.decode(vae.encode(x)[0]), x).item()
    path, losses = train.train_vae(vae, steps=60, batch=32, out_dir=tmp_path, lr=3e-3)
    with torch.no_grad():
        after = torch.nn.functional.mse_loss(vae.decode(vae.encode(x)[0]), x).item()
    assert after < 0.7 * before, (before, after)
    assert path.exists() and vae.config.scaling_factor != 1.0
    with open(tmp_path / "vae_loss.csv") as f:
        assert len(list(csv.reader(f))) == 1 + 60 // 50 + 1


def test_unet_and_dit_training_reduce_the_diffusion_loss(trained, tmp_path):
    vae = builtin.load("vae", weights_dir=trained)
    unet, text = builtin.new("unet"), builtin.new_text_encoder()

    def unet_cond(scenes):
        return (text(tokenizer.encode(data.caption(scenes))),)

    before = _fixed_loss(unet, vae, unet_cond)
    train.train_unet(unet, text, vae, steps=60, batch=32, out_dir=tmp_path)
    assert _fixed_loss(unet, vae, unet_cond) < 0.8 * before

    dit = builtin.new("dit")
    before = _fixed_loss(dit, vae, lambda s: (s.label,))
    train.train_dit(dit, vae, steps=60, batch=32, out_dir=tmp_path)
    assert _fixed_loss(dit, vae, lambda s: (s.label,)) < 0.8 * before


def test_the_distilled_unet_has_a_smaller_consistency_loss_than_its_teacher():
    teacher, text, vae = builtin.load("unet"), builtin.load("text_encoder"), builtin.load("vae")
    seed = int(torch.randint(0, 2**31, ()))
    scenes = data.random_scenes(128, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        z0 = train.encode(vae, data.render(scenes))
        context, uncond = text(tokenizer.encode(data.caption(scenes))), text(tokenizer.encode([""]))

    def loss(student):  # the same timesteps and noise for both
        with torch.no_grad():
            return lcm.distillation_loss(student, student, teacher, z0, context, uncond,
                                         torch.Generator().manual_seed(seed)).item()

    before, after = loss(teacher), loss(builtin.load("unet-lcm"))  # the student started as the teacher
    assert after < 0.85 * before, (before, after, seed)


def test_caption_dropout_rate():
    captions = train.caption_dropout(["a red circle"] * 4000, 0.1, torch.Generator().manual_seed(0))
    assert 0.08 < captions.count("") / 4000 < 0.12 and set(captions) == {"", "a red circle"}


def test_mislabel_rate_and_images_untouched():
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    scenes = data.random_scenes(4000, g)
    named = train.mislabel(scenes, 0.25, g)
    wrong = (named.label != scenes.label).float().mean().item()
    # a redrawn (colour, shape) is the drawn one again 1 time in num_classes
    assert abs(wrong - 0.25 * (1 - 1 / data.num_classes())) < 0.025, wrong
    assert torch.equal(named.size, scenes.size) and torch.equal(named.position, scenes.position)
    assert torch.equal(train.mislabel(scenes, 0.0, g).label, scenes.label)


def test_builtin_models_write_a_png(trained, tmp_path):
    for name in builtin.NAMES:
        model = builtin.sampling_model(name, weights_dir=trained)
        images = model.generate(["a red circle", "a blue square"], sampler="dpmpp_2m", steps=4, guidance_scale=7.5)
        assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
        path = save_image(images, tmp_path / f"{name}.png")
        with Image.open(path) as im:
            assert im.size == (64, 32)
    purple, diamond = data.COLOUR_NAMES.index("purple"), data.SHAPES.index("diamond")
    assert builtin.label("a small purple diamond at the top") == purple * len(data.SHAPES) + diamond
    with pytest.raises(ValueError, match="colour"):
        builtin.label("a circle")


def test_eval_writes_table_and_plots(trained, tmp_path, monkeypatch, capsys):
    """`fastdiff eval`: both tables, results and plots, from one Pipeline per model for all cells."""
    monkeypatch.setattr(evaluate, "SAMPLER_RUNS", (("DDIM", "ddim", 10), *evaluate.SAMPLER_RUNS[3:4],
                                                   ("LCM", "lcm", 4)))
    monkeypatch.setattr(evaluate, "LCM_STEPS", (4,))
    built = []

    class CountedPipeline(sampling_model.Pipeline):
        def __init__(self, *args, **kw):
            built.append(args[0])
            super().__init__(*args, **kw)
    monkeypatch.setattr(sampling_model, "Pipeline", CountedPipeline)
    assert cli.main(["eval", "--per-class", "1", "--weights", str(trained), "--out", str(tmp_path),
                     "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| CFG scale (DPM-Solver++ 2M, 20 steps) | unet | dit |" in out and "| 7.5 |" in out
    assert "| sampler, steps (CFG 7.5) | unet | dit | unet-lcm (unguided) |" in out
    assert "| DPM-Solver++ 2M 20 |" in out and "| LCM 4 |" in out
    assert "| colour | shape | size | position | all |" in out and "| unet, every attribute |" in out
    assert "| dit, colour and shape |" in out and "| dit, every attribute |" not in out  # the DiT reads no size
    assert len(built) == 3 and len(set(map(id, built))) == 3  # one per model, for all its cells
    for name in ("results.json", "table.md", "accuracy_vs_cfg.png", "accuracy_vs_steps.png"):
        assert (tmp_path / name).stat().st_size > 0
