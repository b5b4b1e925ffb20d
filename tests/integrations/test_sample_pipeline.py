"""`fastdiff sample --pipeline DIR`: a saved diffusers pipeline sampled through fastdiff.accelerate,
and its mistakes in one line before anything loads."""
import pytest
import torch
from PIL import Image

from fastdiff import cli

diffusers = pytest.importorskip("diffusers")
import tiny_pipelines  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    tiny_pipelines.sd(root, diffusers.DDIMScheduler).save_pretrained(root / "sd")  # its vocabulary in root
    tiny_pipelines.dit(diffusers.DDIMScheduler).save_pretrained(root / "dit")
    return root


def _sample(args, capsys):
    code = cli.main(["sample", *map(str, args), "--steps", "2", "--threads", "1", "--quiet"])
    return code, capsys.readouterr()


@pytest.mark.parametrize("kind, what", [("sd", ["a red ring", "a blue square"]), ("dit", ["--class-label", "3", "7"])])
def test_samples_a_pipeline_folder(folders, tmp_path, capsys, kind, what):
    out = tmp_path / "grid.png"
    threads = torch.get_num_threads()
    try:
        code, io = _sample(["--pipeline", folders / kind, *what, "--n", "2", "--out", out], capsys)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, io.err
    grid = Image.open(out)
    side = grid.height // 2  # two rows (prompts or labels) of two images
    assert grid.size == (2 * side, 2 * side) and side > 0
    assert any(lo < hi for lo, hi in grid.getextrema())  # not a blank image


@pytest.mark.parametrize("args, line", [
    (["--pipeline", "{tmp}/missing", "a"], "--pipeline {tmp}/missing: not a diffusers pipeline folder"),
    (["--pipeline", "{sd}", "--model", "unet", "a"], "--pipeline: pass --model or --pipeline, not both"),
    (["--pipeline", "{sd}", "--sampler", "ddim", "a"], "--sampler: a pipeline samples with its own scheduler"),
    (["--pipeline", "{sd}", "--class-label", "3"], "--class-label: a StableDiffusionPipeline takes prompts"),
    (["--pipeline", "{dit}", "a red ring"], "--class-label: a DiTPipeline is class-conditional"),
])
def test_mistakes_are_one_line(folders, tmp_path, capsys, args, line):
    fill = {"tmp": tmp_path, "sd": folders / "sd", "dit": folders / "dit"}
    code, io = _sample([a.format(**fill) for a in args] + ["--out", tmp_path / "grid.png"], capsys)
    assert code == 2 and io.err.strip().count("\n") == 0
    assert line.format(**fill) in io.err
    assert not (tmp_path / "grid.png").exists()
