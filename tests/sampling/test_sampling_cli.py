"""`fastdiff sample` end to end with a stand-in default model."""
import argparse
import json
import os
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

import fastdiff
from fastdiff import backends, builtin, cli, models
from fastdiff.sampling import NoiseSchedule
from fastdiff.sampling.model import SamplingModel

from test_sampling_pipeline import TinyUNet, TinyVAE  # noqa: E402


def _stand_in(monkeypatch, calls, **fields):
    """The built-in model replaced by a TinyUNet with a TinyVAE (SamplingModel fields as given)."""
    unet, vae = TinyUNet(), TinyVAE()

    def sampling_model(name, device, weights_dir=None):
        calls.append((name, str(device), weights_dir))
        encode = lambda prompts: unet.ctx.weight.new_ones(len(prompts), 3, 8) * len(prompts[0])  # noqa: E731
        return SamplingModel(unet, NoiseSchedule.from_betas(), (4, 8, 8),
                             lambda p, g: (torch.cat([encode([""] * len(p)), encode(p)]) if g else encode(p),),
                             vae=vae, **fields)
    monkeypatch.setattr(builtin, "sampling_model", sampling_model)
    return unet


def test_sample_writes_a_png(tmp_path, monkeypatch):
    calls = []
    unet = _stand_in(monkeypatch, calls)
    out = tmp_path / "grid.png"
    args = ["sample", "a red circle", "--n", "3", "--steps", "4", "--sampler", "euler_a",
            "--seed", "5", "--cfg", "6", "--device", "cpu", "--out", str(out), "--quiet"]
    assert cli.main(args) == 0
    assert calls == [("unet", "cpu", None)] and unet.calls == [6] * 4  # CFG batch of 2 x 3, one forward per step
    with Image.open(out) as im:
        first = im.copy()
    assert first.size == (48, 16)  # a row of 3 images
    assert cli.main(args) == 0
    with Image.open(out) as im:
        assert im.tobytes() == first.tobytes()  # same seed, same image


def test_sample_several_prompts_in_rows(tmp_path, monkeypatch):
    unet = _stand_in(monkeypatch, [])
    out = tmp_path / "grid.png"
    args = ["sample", "a red circle", "a blue square", "--n", "2", "--steps", "2", "--scale", "3", "--device", "cpu",
            "--out", str(out), "--quiet"]
    assert cli.main(args) == 0 and unet.calls == [8] * 2  # 2 prompts x 2 images, doubled for CFG
    with Image.open(out) as im:
        assert im.size == (2 * 16 * 3, 2 * 16 * 3)
    assert cli.main(args[:-1] + ["--quiet", "--scale", "0"]) == 2


def test_sample_uses_the_model_defaults(tmp_path, monkeypatch):
    """Without --sampler, --steps and --cfg: the model's defaults, else the generic ones (CFG 5)."""
    out = str(tmp_path / "grid.png")
    args = ["sample", "a red circle", "--n", "2", "--device", "cpu", "--out", out, "--quiet"]
    unet = _stand_in(monkeypatch, [], defaults={"steps": 3, "guidance_scale": 1.0})
    assert cli.main(args) == 0 and unet.calls == [2] * 3  # unguided: one row per image
    unet = _stand_in(monkeypatch, [], defaults={"steps": 3})
    assert cli.main(args) == 0 and unet.calls == [4] * 3  # the generic CFG 5: the CFG batch
    unet = _stand_in(monkeypatch, [], defaults={"sampler": "heun", "steps": 3})
    assert cli.main(args) == 0 and len(unet.calls) == 5  # Heun: two evaluations per step but the last
    unet = _stand_in(monkeypatch, [])
    assert cli.main(args + ["--sampler", "ddim"]) == 0 and unet.calls == [4] * 20  # generic: 20 steps


def test_backend_choices_are_the_backends(monkeypatch):
    monkeypatch.setattr(backends, "NAMES", ("torch", "other"))
    parser = argparse.ArgumentParser()
    cli.sample_arguments(parser)
    for name in ("auto", "torch", "other"):
        assert parser.parse_args(["--backend", name]).backend == name
    with pytest.raises(SystemExit):
        parser.parse_args(["--backend", "cuda"])


def test_sample_without_a_default_model(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fastdiff.builtin", None)
    monkeypatch.delattr(fastdiff, "builtin")
    assert cli.main(["sample", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no built-in models in this build" in err and len(err.splitlines()) == 1


class TinyDiT(torch.nn.Module):
    """A stand-in class-conditional pixel DiT with a learned-sigma output (2x the input channels)."""

    def __init__(self):
        super().__init__()
        self.config = types.SimpleNamespace(in_channels=3, input_size=8, num_classes=10)
        self.embed = torch.nn.Embedding(11, 3)
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.labels = []

    def forward(self, x, t, y):
        self.labels.append(y.tolist())
        return self.conv(x) + self.embed(y).repeat(1, 2)[:, :, None, None] * torch.cos(t / 500)[:, None, None, None]


def test_sample_from_a_checkpoint_directory(tmp_path, monkeypatch):
    dit = TinyDiT()
    loaded = []
    monkeypatch.setattr(models, "from_pretrained", lambda path: loaded.append(str(path)) or dit)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "DiTTransformer2DModel", "in_channels": 3,
                                                      "num_embeds_ada_norm": 10}))
    out = tmp_path / "dit.png"
    assert cli.main(["sample", "--model", str(tmp_path), "--class-label", "7", "--n", "2", "--steps", "3",
                     "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    assert loaded == [str(tmp_path)] and dit.labels == [[10, 10, 7, 7]] * 3  # null class, then the label
    with Image.open(out) as im:
        assert im.size == (16, 8)


def _save(module, folder, config):
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file(module.state_dict(), folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("layout", ["model folder", "diffusers pipeline folder"])
def test_sample_a_learned_sigma_dit_checkpoint(tmp_path, layout):
    """A DiT-XL/2-like checkpoint, tiny: a learned-sigma DiT (8 output channels for 4 latent ones)
    in a diffusers folder with its VAE in vae/, loaded by from_pretrained and sampled to a PNG
    that matches the Python API over a denoiser that keeps the first 4 channels."""
    from fastdiff.models import DiT, DiTConfig, VAE, VAEConfig
    from fastdiff.sampling import DDIM, Pipeline
    from fastdiff.sampling.images import grid, to_pil

    dit = DiT(DiTConfig(input_size=8, in_channels=4, hidden_size=32, depth=1, num_heads=2, num_classes=10,
                        learn_sigma=True, freq_shift=1, mlp_norm_eps=1e-5)).eval()
    vae = VAE(VAEConfig(block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4, sample_size=16,
                        scaling_factor=0.5)).eval()
    root = tmp_path / "dit-checkpoint"
    model_dir = root / "transformer" if layout == "diffusers pipeline folder" else root
    _save(dit, model_dir, {"_class_name": "DiTTransformer2DModel", "in_channels": 4, "out_channels": 8,
                           "sample_size": 8, "patch_size": 2, "num_attention_heads": 2, "attention_head_dim": 16,
                           "num_layers": 1, "num_embeds_ada_norm": 10})
    _save(vae, root / "vae", {"_class_name": "AutoencoderKL", "block_out_channels": [8, 8], "layers_per_block": 1,
                              "norm_num_groups": 4, "sample_size": 16, "scaling_factor": 0.5})
    if layout == "diffusers pipeline folder":
        (root / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))

    out = tmp_path / "dit.png"
    assert cli.main(["sample", "--model", str(root), "--class-label", "3", "--n", "2", "--steps", "3",
                     "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (32, 16)  # 2 images of 16 x 16 (8 x 8 latents, VAE 2x)
        got = torch.from_numpy(np.array(im.convert("RGB"))).int()
    # the model's defaults: DDIM, CFG 4, seed 0, DiT's linear schedule, null class 10
    pipe = Pipeline(lambda x, t, y: dit(x, t, y)[:, :4].contiguous(),
                    NoiseSchedule.from_betas("linear", 1000, 1e-4, 0.02), vae=vae)
    with torch.no_grad():
        latents = pipe.sample((2, 4, 8, 8), DDIM(), 3, cond=(torch.tensor([10, 10, 3, 3]),), guidance_scale=4.0,
                              seed=0, progress=False)
        want = torch.from_numpy(np.array(grid(to_pil(pipe.decode(latents).clamp(-1, 1)), 2))).int()
    assert (got - want).abs().max() <= 1 and got.float().std() > 1  # within rounding, and not blank


@pytest.mark.parametrize("args, size, fmt", [
    (["--n", "64", "--out", "grid.png"], (8 * 16, 8 * 16), "PNG"),  # 64 images wrap at 8 a row
    (["--n", "4", "--cols", "3", "--out", "grid.jpg"], (3 * 16, 2 * 16), "JPEG"),
    (["--n", "2", "--scale", "2", "--out", "grid.WEBP"], (2 * 32, 32), "WEBP"),
])
def test_grid_columns_and_formats(tmp_path, monkeypatch, args, size, fmt):
    _stand_in(monkeypatch, [])
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sample", "a red circle", "--steps", "1", "--device", "cpu", "--quiet", *args]) == 0
    written = list(tmp_path.iterdir())
    assert len(written) == 1  # no temporary file left beside it
    with Image.open(written[0]) as im:
        assert (im.format, im.size) == (fmt, size)
    mask = os.umask(0)
    os.umask(mask)
    assert written[0].stat().st_mode & 0o777 == 0o666 & ~mask


def test_save_image_refuses_unknown_formats(tmp_path):
    from fastdiff.sampling.images import save_image

    with pytest.raises(ValueError, match=r"grid.gif: expected a file name ending in .png, .jpg, .jpeg, .webp"):
        save_image(torch.zeros(1, 3, 8, 8), tmp_path / "grid.gif")
    assert list(tmp_path.iterdir()) == []
