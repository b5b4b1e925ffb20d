"""from_pretrained on files: one that is not a checkpoint fails in one line naming it and the
accepted formats; fastdiff's own weights files (the shipped ones) load with the config they carry."""
import pytest
import torch

from fastdiff import builtin
from fastdiff.builtin import checkpoint
from fastdiff.models import DiT, UNet, VAE, from_pretrained


@pytest.mark.parametrize("name, content, why", [
    ("notes.txt", b"hello", "the extension .txt is not a checkpoint's"),
    ("random.safetensors", b"\xff" * 64, "unreadable as safetensors"),
    ("random.bin", b"not a pickle at all" * 8, "unreadable by torch.load"),
    ("empty.pt", b"", "unreadable by torch.load"),
    ("random.ckpt", b"PK\x03\x04 truncated zip", "unreadable by torch.load"),
])
def test_not_a_checkpoint(tmp_path, name, content, why):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        from_pretrained(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and why in message, message
    assert "expected a diffusers model folder or a checkpoint file (.safetensors, .bin, .pt, .pth, .ckpt)" in message


def test_a_pickled_object_that_is_not_a_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="it holds a list, not a state dict"):
        from_pretrained(tmp_path / "list.pt")


@pytest.mark.parametrize("part, cls", [("unet", UNet), ("dit", DiT), ("vae", VAE)])
def test_shipped_weights_load_with_their_config(part, cls):
    model = from_pretrained(checkpoint.path(part), dtype=torch.float32)
    want = builtin.load(part)
    assert type(model) is cls and model.config == want.config
    got, ref = model.state_dict(), want.state_dict()
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)


def test_weights_without_a_model_config_are_refused():
    with pytest.raises(ValueError, match="cannot tell which model this is"):
        from_pretrained(checkpoint.path("text_encoder"))
