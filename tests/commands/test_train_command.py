"""`fastdiff train` writes only to its --out folder (never the installed package), refuses to
overwrite weights without --force, writes files with the user's usual permissions, and
`fastdiff sample --model FOLDER` samples what it wrote."""
import hashlib
import os

import pytest

from cli_run import fastdiff
from fastdiff import cli
from fastdiff.builtin import checkpoint


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("args, says", [
    (["--out", str(checkpoint.WEIGHTS_DIR)], "inside the installed fastdiff package"),
    (["--out", str(checkpoint.WEIGHTS_DIR.parent)], "inside the installed fastdiff package"),
    (["--steps", "0"], "--steps 0: expected an integer of at least 1"),
    (["--batch", "-1"], "--batch -1"),
    (["--seed", str(2**64)], "--seed"),
    (["--threads", "0"], "--threads 0"),
    (["vae", "--out", "weights.txt"], "--out weights.txt: is a file"),
    (["vea"], "part 'vea': expected classifier, vae, unet, dit"),
])
def test_mistakes_end_in_one_line(tmp_path, monkeypatch, capsys, args, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.txt").write_text("")
    before = _hashes(checkpoint.WEIGHTS_DIR)
    assert cli.main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("fastdiff train: ") and says in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.txt"]
    assert _hashes(checkpoint.WEIGHTS_DIR) == before


def test_existing_weights_need_force(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "fastdiff-weights"
    out.mkdir()
    (out / "text_encoder.safetensors").write_bytes(b"mine")
    assert cli.main(["train", "unet"]) == 2
    err = capsys.readouterr().err
    assert "already holds text_encoder.safetensors; pass --force" in err and len(err.splitlines()) == 1
    assert (out / "text_encoder.safetensors").read_bytes() == b"mine"


@pytest.mark.slow
def test_training_leaves_the_installed_package_alone(tmp_path):
    """Train the VAE and U-Net for one step from a fresh folder with the default --out, as a user
    would; the installed weights keep their hashes, and the folder samples."""
    before = _hashes(checkpoint.WEIGHTS_DIR)
    os.umask(umask := os.umask(0o022))
    code, out, err = fastdiff("train", "vae", "unet", "--steps", "1", "--batch", "2", cwd=tmp_path)
    assert code == 0, err
    assert _hashes(checkpoint.WEIGHTS_DIR) == before
    written = tmp_path / "fastdiff-weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fastdiff-weights"]
    assert sorted(p.name for p in written.iterdir()) == ["text_encoder.safetensors", "unet.safetensors",
                                                       "unet_loss.csv", "vae.safetensors", "vae_loss.csv"]
    for p in written.iterdir():
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, (p, oct(p.stat().st_mode))
    weights = _hashes(written)

    code, _, err = fastdiff("train", "vae", "--steps", "1", "--batch", "2", cwd=tmp_path)
    assert code == 2 and "--force" in err and len(err.splitlines()) == 1
    assert _hashes(written) == weights

    code, out, err = fastdiff("sample", "a red circle", "--model", "fastdiff-weights", "--n", "1", "--steps", "2",
                              "--out", "grid.png", "--quiet", cwd=tmp_path)
    assert code == 0 and out.strip() == "grid.png" and (tmp_path / "grid.png").stat().st_size > 0, err
    assert _hashes(checkpoint.WEIGHTS_DIR) == before


@pytest.mark.slow
def test_lcm_distills_the_unet_into_a_folder_that_samples(tmp_path):
    """`fastdiff train lcm` into a fresh folder: the teacher it distilled (the shipped U-Net, with
    its text encoder and VAE) is copied beside the student, and the student samples from there."""
    before = _hashes(checkpoint.WEIGHTS_DIR)
    code, _, err = fastdiff("train", "lcm", "--steps", "1", "--batch", "2", cwd=tmp_path)
    assert code == 0, err
    written = tmp_path / "fastdiff-weights"
    assert sorted(p.name for p in written.iterdir()) == ["text_encoder.safetensors", "unet-lcm.safetensors",
                                                       "unet-lcm_loss.csv", "unet.safetensors", "vae.safetensors"]
    code, out, err = fastdiff("sample", "a red circle", "--model", "fastdiff-weights/unet-lcm.safetensors", "--n", "1",
                              "--out", "grid.png", "--quiet", cwd=tmp_path)
    assert code == 0 and out.strip() == "grid.png" and (tmp_path / "grid.png").stat().st_size > 0, err
    assert _hashes(checkpoint.WEIGHTS_DIR) == before
