"""The fastdiff U-Net against diffusers' UNet2DConditionModel with the same random weights, loaded
from a diffusers folder and from an LDM single-file layout, in float32 and float64 on the CPU."""
import dataclasses

import pytest
import torch

from fastdiff.models import UNet, UNetConfig, from_pretrained
from fastdiff.testing import randn

from model_helpers import assert_matches, randomize

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint  # noqa: E402

CONFIGS = {
    # SD1.x: conv 1x1 projections, heads given per model, no attention at the deepest level
    "sd1": dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=24, attention_head_dim=4,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
    # SD2.x: linear projections, three levels, two resnets per level, head dims 8/16/8
    "sd2": dict(block_out_channels=(16, 32, 32), layers_per_block=2, cross_attention_dim=32,
                attention_head_dim=(2, 2, 4), use_linear_projection=True,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
    # SDXL: attention only at the lower level, two transformer blocks there, text_time conditioning
    "sdxl": dict(block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=24, attention_head_dim=(2, 4),
                 transformer_layers_per_block=(1, 2), use_linear_projection=True,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                 addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=12 + 6 * 8),
}


def diffusers_unet(name):
    return randomize(diffusers.UNet2DConditionModel(sample_size=16, norm_num_groups=8, **CONFIGS[name]))


def inputs(model):
    c = model.config
    x = randn((2, c.in_channels, 16, 16))
    t = torch.tensor([10.5, 700.0])
    ctx = randn((2, 7, c.cross_attention_dim))
    time_ids = torch.tensor([[16.0, 16, 0, 0, 16, 16], [32, 24, 2, 1, 16, 16]])
    added = {"text_embeds": randn((2, 12)), "time_ids": time_ids}
    return x, t, ctx, added if c.addition_embed_type else None


def ours(model, x, t, ctx, added):
    return model(x, t, ctx, added)


def theirs(model, x, t, ctx, added):
    return model(x, t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample


def ldm_checkpoint(sd, config):
    """A diffusers U-Net state dict renamed to the LDM single-file layout by an explicit table
    written here, independently of fastdiff.models.convert."""
    n, lpb = len(config["block_out_channels"]), config["layers_per_block"]
    attn = [t.startswith("CrossAttn") for t in config["down_block_types"]]
    table = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
             "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
             "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2",
             "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
             "mid_block.resnets.1": "middle_block.2"}
    block = 1
    for i in range(n):
        for j in range(lpb):
            table[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{block}.0"
            table[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{block}.1"
            block += 1
        table[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{block}.0.op"
        block += 1
    for i in range(n):
        level_attn = attn[n - 1 - i]
        for j in range(lpb + 1):
            table[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{i * (lpb + 1) + j}.0"
            table[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{i * (lpb + 1) + j}.1"
        table[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{i * (lpb + 1) + lpb}.{2 if level_attn else 1}.conv"
    resnet = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
              "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        cut = max(c for c in range(1, len(parts)) if ".".join(parts[:c]) in table)
        module, rest = ".".join(parts[:cut]), parts[cut:]
        if ".resnets." in module:
            rest = [resnet[rest[0]]] + rest[1:]
        out["model.diffusion_model." + ".".join([table[module]] + rest)] = value
    return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_unet_matches_diffusers(name, tmp_path):
    ref = diffusers_unet(name)
    ref.save_pretrained(tmp_path)
    model, model64 = from_pretrained(tmp_path), UNet.from_pretrained(tmp_path, dtype=torch.float64)
    assert isinstance(model, UNet) and model.config.sample_size == 16
    assert_matches(model, ref, model64, inputs(ref), ours, theirs)


@pytest.mark.parametrize("name", ["sd1", "sdxl"])
def test_unet_loads_the_ldm_layout(name, tmp_path):
    ref = diffusers_unet(name)
    sd = ref.state_dict()
    ldm = ldm_checkpoint(sd, dict(ref.config))
    ldm["first_stage_model.encoder.conv_in.weight"] = torch.zeros(1)  # other parts of a single file are ignored
    # The table above agrees with diffusers' own LDM converter ...
    back = convert_ldm_unet_checkpoint(ldm, dict(ref.config))
    assert back.keys() == sd.keys() and all(back[k] is sd[k] for k in sd)
    # ... and fastdiff loads the LDM file into the same function.
    config = UNetConfig.from_diffusers(dict(ref.config))
    torch.save(ldm, tmp_path / "model.ckpt")
    model = UNet.from_pretrained(tmp_path / "model.ckpt", config=config)
    model64 = from_pretrained(ldm, config=config, dtype=torch.float64)
    assert_matches(model, ref, model64, inputs(ref), ours, theirs)


def test_presets():
    sd15, sd2, sdxl = UNetConfig.sd15(), UNetConfig.sd2(), UNetConfig.sdxl()
    assert sd15.heads == (8, 8, 8, 8) and sd15.depths == (1, 1, 1, 0) and sd15.cross_attention_dim == 768
    assert sd2.heads == (5, 10, 20, 20) and sd2.prediction_type == "v_prediction" and sd2.cross_attention_dim == 1024
    assert sdxl.heads == (5, 10, 20) and sdxl.depths == (0, 2, 10) and sdxl.mid_transformer_depth == 10
    # The SD1.5 U-Net has 859.5M parameters, SDXL's 2567.5M (counted without allocating them).
    with torch.device("meta"):
        assert sum(p.numel() for p in UNet(sd15).parameters()) == 859_520_964
        assert sum(p.numel() for p in UNet(sdxl).parameters()) == 2_567_463_684
    assert dataclasses.replace(sd15, sample_size=96).sample_size == 96


def test_loading_keeps_the_tensors_it_is_given():
    model = UNet(UNetConfig.tiny()).eval()
    sd = model.state_dict()
    loaded = from_pretrained(sd, config=model.config)
    assert loaded.conv_in.weight.data_ptr() == sd["conv_in.weight"].data_ptr()
    assert len(sd) == len(model.state_dict())  # the caller's dict is left alone


def test_loading_errors_list_every_problem(tmp_path):
    ref = diffusers_unet("sd1")
    sd = ref.state_dict()
    sd.pop("conv_out.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["conv_in.weight"] = torch.zeros(32, 4, 1, 1)
    sd.pop("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v.weight")
    config = UNetConfig.from_diffusers(dict(ref.config))
    with pytest.raises(ValueError, match="attn1.to_qkv.weight has only kq"):
        from_pretrained(sd, config=config)
    sd["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v.weight"] = torch.zeros(32, 32)
    with pytest.raises(ValueError) as err:
        from_pretrained(sd, config=config)
    msg = str(err.value)
    assert "missing (1): conv_out.bias" in msg and "unexpected (1): extra.weight" in msg
    assert "conv_in.weight: checkpoint (32, 4, 1, 1), model (32, 4, 3, 3)" in msg
    with pytest.raises(ValueError, match="pass config="):
        from_pretrained(sd)
