"""The fastdiff DiT against diffusers' DiTTransformer2DModel with the same random weights, loaded
from a diffusers folder and from the facebookresearch DiT layout, in float32 and float64 on the CPU."""
import dataclasses

import pytest
import torch

from fastdiff.models import DiT, DiTConfig, from_pretrained
from fastdiff.testing import randn

from model_helpers import assert_matches, randomize

diffusers = pytest.importorskip("diffusers")

CONFIGS = {
    "learned_sigma": dict(num_attention_heads=2, attention_head_dim=8, out_channels=8, num_layers=2),
    # the original checkpoints carry no config: a DiT-S width (384 = 6 heads of 64) lets it be inferred
    "dit_s_width": dict(num_attention_heads=6, attention_head_dim=64, out_channels=4, num_layers=1),
}


def diffusers_dit(name):
    """Every diffusers block holds its own timestep and class embedders; the DiT checkpoints
    converted to diffusers hold copies of one, which is what fastdiff implements."""
    model = randomize(diffusers.DiTTransformer2DModel(in_channels=4, sample_size=8, patch_size=2,
                                                      num_embeds_ada_norm=10, **CONFIGS[name]))
    shared = model.transformer_blocks[0].norm1.emb.state_dict()
    for block in model.transformer_blocks:
        block.norm1.emb.load_state_dict(shared)
    return model


def inputs(_):
    return randn((2, 4, 8, 8)), torch.tensor([3.0, 901.0]), torch.tensor([7, 10])  # label 10: the null class


def ours(model, x, t, y):
    return model(x, t, y)


def theirs(model, x, t, y):
    return model(x, timestep=t, class_labels=y).sample


def original_checkpoint(ref):
    """diffusers' DiT state dict renamed to the facebookresearch layout by a table written here,
    independently of fastdiff.models.convert; the first block's copy of the shared embedders."""
    sd, out = ref.state_dict(), {}
    emb = "transformer_blocks.0.norm1.emb."
    table = {"pos_embed.proj.": "x_embedder.proj.", emb + "timestep_embedder.linear_1.": "t_embedder.mlp.0.",
             emb + "timestep_embedder.linear_2.": "t_embedder.mlp.2.",
             emb + "class_embedder.embedding_table.": "y_embedder.embedding_table.",
             "proj_out_1.": "final_layer.adaLN_modulation.1.", "proj_out_2.": "final_layer.linear."}
    for i in range(ref.config.num_layers):
        b = f"transformer_blocks.{i}."
        table.update({b + "norm1.linear.": f"blocks.{i}.adaLN_modulation.1.",
                      b + "attn1.to_out.0.": f"blocks.{i}.attn.proj.",
                      b + "ff.net.0.proj.": f"blocks.{i}.mlp.fc1.", b + "ff.net.2.": f"blocks.{i}.mlp.fc2."})
        for kind in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([sd[f"{b}attn1.to_{p}.{kind}"] for p in "qkv"])
    for key, value in sd.items():
        for prefix, new in table.items():
            if key.startswith(prefix):
                out[new + key[len(prefix):]] = value
    out["pos_embed"] = ref.pos_embed.pos_embed.clone()  # a fixed buffer diffusers does not save
    return out


def test_dit_matches_diffusers(tmp_path):
    ref = diffusers_dit("learned_sigma")
    ref.save_pretrained(tmp_path)
    model, model64 = from_pretrained(tmp_path), DiT.from_pretrained(tmp_path, dtype=torch.float64)
    c = model.config
    assert isinstance(model, DiT) and c.learn_sigma and c.freq_shift == 1 and c.mlp_norm_eps == 1e-5
    assert_matches(model, ref, model64, inputs(ref), ours, theirs)


def test_dit_loads_the_original_layout(tmp_path):
    ref = diffusers_dit("dit_s_width")
    torch.save(original_checkpoint(ref), tmp_path / "DiT.pt")
    inferred = from_pretrained(tmp_path / "DiT.pt").config
    assert inferred == DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=384, depth=1, num_heads=6,
                                 num_classes=10, learn_sigma=False, freq_shift=0)
    # diffusers' two departures from the original DiT (see DiTConfig)
    config = dataclasses.replace(inferred, freq_shift=1, mlp_norm_eps=1e-5)
    model = DiT.from_pretrained(tmp_path / "DiT.pt", config=config)
    model64 = from_pretrained(original_checkpoint(ref), config=config, dtype=torch.float64)
    assert_matches(model, ref, model64, inputs(ref), ours, theirs)


def test_dit_presets():
    xl, xl512 = DiTConfig.xl2(), DiTConfig.xl2(512)
    assert (xl.input_size, xl512.input_size, xl.hidden_size, xl.depth, xl.num_heads) == (32, 64, 1152, 28, 16)
    assert (DiTConfig.b2().hidden_size, DiTConfig.s2().hidden_size) == (768, 384)
    with torch.device("meta"):  # DiT-XL/2: 675M parameters, counting the fixed position embedding
        model = DiT(xl)
        assert sum(p.numel() for p in model.parameters()) + model.pos_embed.numel() == 675_129_632


def test_dit_refuses_blocks_with_their_own_embedders():
    ref = diffusers_dit("learned_sigma")
    with torch.no_grad():
        ref.transformer_blocks[1].norm1.emb.class_embedder.embedding_table.weight.add_(1.0)
    with pytest.raises(ValueError, match="shares one copy"):
        from_pretrained(ref.state_dict(), config=DiTConfig.from_diffusers(dict(ref.config)))
