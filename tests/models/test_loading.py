"""from_pretrained tells a checkpoint's kind from the model class, the config, config.json or the
keys, and refuses mismatches; the model classes' own from_pretrained load their kind only."""
import json

import pytest
import torch

from fastdiff.models import (DiT, DiTConfig, Flux, FluxConfig, MMDiT, MMDiTConfig, UNet, UNetConfig, VAE, VAEConfig,
                             from_pretrained)
from fastdiff.models.kinds import KINDS


def _tiny_vae():
    return VAE(VAEConfig(block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4, sample_size=16)).eval()


def _save_folder(model, folder, config_json):
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file(model.state_dict(), folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(config_json))
    return folder


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_one_kind_per_model_class():
    assert [k.model for k in KINDS] == [UNet, DiT, VAE, MMDiT, Flux]
    assert [k.config for k in KINDS] == [UNetConfig, DiTConfig, VAEConfig, MMDiTConfig, FluxConfig]
    assert [k.name for k in KINDS] == ["UNet", "DiT", "VAE", "MMDiT", "Flux"]
    assert {name for k in KINDS for name in k.diffusers_classes} == {
        "UNet2DConditionModel", "DiTTransformer2DModel", "Transformer2DModel", "AutoencoderKL", "SD3Transformer2DModel",
        "FluxTransformer2DModel"}


def test_kind_from_config_json_and_mismatches(tmp_path):
    vae = _tiny_vae()
    folder = _save_folder(vae, tmp_path / "vae", {"_class_name": "AutoencoderKL", "block_out_channels": [8, 8],
                                                   "layers_per_block": 1, "norm_num_groups": 4, "sample_size": 16})
    for loaded in (from_pretrained(folder), VAE.from_pretrained(folder), from_pretrained(folder, model=VAE)):
        assert type(loaded) is VAE and loaded.config == vae.config and _same_weights(loaded, vae)
    with pytest.raises(ValueError, match="config.json describes AutoencoderKL, expected a UNet"):
        UNet.from_pretrained(folder)
    with pytest.raises(ValueError, match="config.json describes AutoencoderKL, expected a DiT"):
        from_pretrained(folder, model=DiT)
    with pytest.raises(ValueError, match="a VAE needs a VAEConfig, got UNetConfig"):
        VAE.from_pretrained(folder, config=UNetConfig.tiny())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_pretrained(tmp_path / "nothing")


def test_kind_from_config_or_keys():
    vae = _tiny_vae()
    loaded = from_pretrained(vae.state_dict(), config=vae.config)
    assert type(loaded) is VAE and _same_weights(loaded, vae)
    with pytest.raises(ValueError, match="cannot tell which model this is"):
        from_pretrained(vae.state_dict())
    with pytest.raises(ValueError, match="no config.json; pass config="):
        from_pretrained(vae.state_dict(), model=VAE)
    with pytest.raises(ValueError, match="a UNet needs a UNetConfig, got VAEConfig"):
        from_pretrained(vae.state_dict(), config=vae.config, model=UNet)
    # an original DiT checkpoint: recognised by its keys, its config read off the shapes
    dit = DiT(DiTConfig(input_size=4, hidden_size=384, depth=2, num_heads=6, num_classes=3)).eval()
    loaded = from_pretrained(dit.state_dict())
    assert type(loaded) is DiT and loaded.config == dit.config and _same_weights(loaded, dit)
    assert DiT.from_pretrained(dit.state_dict()).config == dit.config
    with pytest.raises(ValueError, match="cannot infer this DiT's config"):
        from_pretrained(DiT(DiTConfig.tiny()).state_dict())  # width 128: no DiT preset has it
