"""The fastdiff VAE against diffusers' AutoencoderKL with the same random weights, loaded from a
diffusers folder and from the LDM first-stage layout, in float32 and float64 on the CPU."""
import pytest
import torch

from fastdiff.models import VAE, VAEConfig, from_pretrained
from fastdiff.testing import randn

from model_helpers import assert_matches, randomize

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint  # noqa: E402

CONFIGS = {
    "two_levels": dict(block_out_channels=(16, 32), layers_per_block=1),
    "three_levels": dict(block_out_channels=(8, 16, 16), layers_per_block=2, use_quant_conv=False,
                         use_post_quant_conv=False),
    "no_mid_attention": dict(block_out_channels=(16, 16), layers_per_block=1, mid_block_add_attention=False),
}


def diffusers_vae(name):
    c = CONFIGS[name]
    n = len(c["block_out_channels"])
    return randomize(diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n,
                                             up_block_types=("UpDecoderBlock2D",) * n, latent_channels=4,
                                             norm_num_groups=8, sample_size=16, **c))


def inputs(model):
    f = 2 ** (len(model.config.block_out_channels) - 1)
    return randn((2, 3, 16, 16)), randn((2, 4, 16 // f, 16 // f))


def ours(model, x, z):
    return (*model.encode(x), model.decode(z))


def theirs(model, x, z):
    posterior = model.encode(x).latent_dist
    return posterior.mean, posterior.logvar, model.decode(z).sample


def ldm_checkpoint(sd, config):
    """A diffusers VAE state dict renamed to the LDM first-stage layout by a table written here,
    independently of fastdiff.models.convert (attention projections as 1x1 convs, as LDM has them)."""
    n, lpb = len(config["block_out_channels"]), config["layers_per_block"]
    table = {}
    for part in ("encoder", "decoder"):
        table.update({f"{part}.mid_block.resnets.0": f"{part}.mid.block_1", f"{part}.mid_block.resnets.1":
                      f"{part}.mid.block_2", f"{part}.mid_block.attentions.0": f"{part}.mid.attn_1",
                      f"{part}.conv_norm_out": f"{part}.norm_out"})
    for i in range(n):
        for j in range(lpb + 1):
            table[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
            table[f"decoder.up_blocks.{i}.resnets.{j}"] = f"decoder.up.{n - 1 - i}.block.{j}"
        table[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = f"encoder.down.{i}.downsample.conv"
        table[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = f"decoder.up.{n - 1 - i}.upsample.conv"
    inner = {"conv_shortcut": "nin_shortcut", "group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v",
             "to_out.0": "proj_out"}
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        cuts = [c for c in range(1, len(parts)) if ".".join(parts[:c]) in table]
        head, rest = (table[".".join(parts[:cuts[-1]])], ".".join(parts[cuts[-1]:])) if cuts else (None, key)
        for a, b in inner.items():
            if rest.startswith(a + "."):
                rest = b + rest[len(a):]
                if ".attn_1" in head and value.dim() == 2:
                    value = value[:, :, None, None]
        out["first_stage_model." + (f"{head}.{rest}" if head else rest)] = value
    return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_vae_matches_diffusers(name, tmp_path):
    ref = diffusers_vae(name)
    ref.save_pretrained(tmp_path)
    model, model64 = from_pretrained(tmp_path), VAE.from_pretrained(tmp_path, dtype=torch.float64)
    assert isinstance(model, VAE) and model.config.scaling_factor == ref.config.scaling_factor
    assert_matches(model, ref, model64, inputs(ref), ours, theirs)


@pytest.mark.parametrize("name", ["two_levels", "three_levels"])
def test_vae_loads_the_ldm_layout(name, tmp_path):
    ref = diffusers_vae(name)
    sd = ref.state_dict()
    ldm = ldm_checkpoint(sd, dict(ref.config))
    ldm["model.diffusion_model.conv_in.weight"] = torch.zeros(1)  # the U-Net part of a single file is ignored
    # The table above agrees with diffusers' own LDM converter ...
    back = convert_ldm_vae_checkpoint(ldm, dict(ref.config))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    # ... and fastdiff loads the LDM file into the same function.
    config = VAEConfig.from_diffusers(dict(ref.config))
    torch.save(ldm, tmp_path / "model.ckpt")
    model = VAE.from_pretrained(tmp_path / "model.ckpt", config=config)
    model64 = from_pretrained(ldm, config=config, dtype=torch.float64)
    assert_matches(model, ref, model64, inputs(ref), ours, theirs)


def test_vae_presets():
    sd, xl = VAEConfig.sd(), VAEConfig.sdxl()
    assert (sd.scaling_factor, xl.scaling_factor, sd.block_out_channels) == (0.18215, 0.13025, (128, 256, 512, 512))
    with torch.device("meta"):  # the SD AutoencoderKL: 83.65M parameters
        assert sum(p.numel() for p in VAE(sd).parameters()) == 83_653_863
