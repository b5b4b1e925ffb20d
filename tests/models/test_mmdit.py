"""The fastdiff SD3 MM-DiT against diffusers' SD3Transformer2DModel with the same random weights,
loaded from a diffusers folder and from the original single-file layout, in float32 (the numerics
rule) and float64 (to 1e-10) on the CPU."""
import pytest
import torch

from fastdiff.models import MMDiT, MMDiTConfig, from_pretrained
from fastdiff.testing import randn

from mmdit_helpers import float64_faithful, to_original
from model_helpers import assert_matches, randomize

diffusers = pytest.importorskip("diffusers")

TINY = dict(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, joint_attention_dim=12,
            pooled_projection_dim=10, pos_embed_max_size=6)
CONFIGS = {
    "sd3": dict(attention_head_dim=8, num_attention_heads=2, caption_projection_dim=16),
    # SD3.5: q/k RMSNorm and, in its medium model, a second attention in the first blocks; head dim 64
    # as in the released models, so the original layout's config can be inferred
    "sd35": dict(attention_head_dim=64, num_attention_heads=2, caption_projection_dim=128, qk_norm="rms_norm",
                 dual_attention_layers=(0,)),
}


def diffusers_sd3(name):
    return randomize(diffusers.SD3Transformer2DModel(**TINY, **CONFIGS[name]))


def inputs(ref):
    c = ref.config
    # a 6x4 latent: a non-square patch grid cropped off-centre from the 6x6 position table
    return (randn((2, c.in_channels, 6, 4)), randn((2, 7, c.joint_attention_dim)),
            randn((2, c.pooled_projection_dim)), torch.tensor([3.0, 901.0]))


def ours(model, x, context, pooled, t):
    return model(hidden_states=x, encoder_hidden_states=context, pooled_projections=pooled, timestep=t)


def theirs(model, x, context, pooled, t):
    return model(hidden_states=x, encoder_hidden_states=context, pooled_projections=pooled, timestep=t).sample


def original_checkpoint(ref, prefix="model.diffusion_model."):
    """diffusers' state dict in the layout of the original SD3 single files."""
    sd, n = ref.state_dict(), ref.config.num_layers
    renames = {"pos_embed.pos_embed": "pos_embed", "pos_embed.proj.": "x_embedder.proj.",
               "time_text_embed.timestep_embedder.linear_1.": "t_embedder.mlp.0.",
               "time_text_embed.timestep_embedder.linear_2.": "t_embedder.mlp.2.",
               "time_text_embed.text_embedder.linear_1.": "y_embedder.mlp.0.",
               "time_text_embed.text_embedder.linear_2.": "y_embedder.mlp.2.",
               "context_embedder.": "context_embedder.", "proj_out.": "final_layer.linear.",
               "norm_out.linear.": "final_layer.adaLN_modulation.1."}
    fused = {}
    for i in range(n):
        d, x, c = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
        renames.update({d + "norm1.linear.": x + "adaLN_modulation.1.", d + "norm1_context.linear.":
                        c + "adaLN_modulation.1.", d + "attn.to_out.0.": x + "attn.proj.",
                        d + "attn.to_add_out.": c + "attn.proj.", d + "attn.norm_q.": x + "attn.ln_q.",
                        d + "attn.norm_k.": x + "attn.ln_k.", d + "attn.norm_added_q.": c + "attn.ln_q.",
                        d + "attn.norm_added_k.": c + "attn.ln_k.", d + "attn2.to_out.0.": x + "attn2.proj.",
                        d + "attn2.norm_q.": x + "attn2.ln_q.", d + "attn2.norm_k.": x + "attn2.ln_k.",
                        d + "ff.net.0.proj.": x + "mlp.fc1.", d + "ff.net.2.": x + "mlp.fc2.",
                        d + "ff_context.net.0.proj.": c + "mlp.fc1.", d + "ff_context.net.2.": c + "mlp.fc2."})
        for kind in ("weight", "bias"):
            fused[f"{x}attn.qkv.{kind}"] = [f"{d}attn.to_{p}.{kind}" for p in "qkv"]
            fused[f"{c}attn.qkv.{kind}"] = [f"{d}attn.add_{p}_proj.{kind}" for p in "qkv"]
            if f"{d}attn2.to_q.{kind}" in sd:
                fused[f"{x}attn2.qkv.{kind}"] = [f"{d}attn2.to_{p}.{kind}" for p in "qkv"]
    # the final modulations are (shift, scale) there, (scale, shift) in diffusers
    swapped = [f"{m}.{kind}" for m in ("final_layer.adaLN_modulation.1", f"joint_blocks.{n - 1}.context_block."
                                       "adaLN_modulation.1") for kind in ("weight", "bias")]
    return to_original(sd, renames, fused, swapped, prefix)


@pytest.mark.parametrize("name", CONFIGS)
def test_sd3_matches_diffusers(tmp_path, monkeypatch, name):
    float64_faithful(monkeypatch)
    ref = diffusers_sd3(name)
    ref.save_pretrained(tmp_path)
    model, model64 = from_pretrained(tmp_path), MMDiT.from_pretrained(tmp_path, dtype=torch.float64)
    assert isinstance(model, MMDiT) and model.config == MMDiTConfig(**TINY, **CONFIGS[name])
    assert_matches(model, ref, model64, inputs(ref), ours, theirs)


def test_sd3_loads_the_original_single_file(tmp_path, monkeypatch):
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers
    from safetensors.torch import save_file

    float64_faithful(monkeypatch)
    ref = diffusers_sd3("sd35")
    original = original_checkpoint(ref)
    # the tables above are diffusers' own conversion run backwards
    back = convert_sd3_transformer_checkpoint_to_diffusers(dict(original))
    assert back.keys() == ref.state_dict().keys() and all(torch.equal(v, ref.state_dict()[k]) for k, v in back.items())
    original["first_stage_model.decoder.conv_in.weight"] = torch.zeros(1)  # a single file holds the VAE too
    save_file(original, tmp_path / "sd3.safetensors")
    model = from_pretrained(tmp_path / "sd3.safetensors")  # the config read off the shapes
    assert isinstance(model, MMDiT) and model.config == MMDiTConfig(**{**TINY, "sample_size": 128}, **CONFIGS["sd35"])
    model64 = MMDiT.from_pretrained(original_checkpoint(ref, prefix=""), config=model.config, dtype=torch.float64)
    assert_matches(model, ref, model64, inputs(ref), ours, theirs)


def test_sd3_mismatches_in_one_error():
    sd = diffusers_sd3("sd3").state_dict()
    del sd["transformer_blocks.0.attn.to_k.weight"], sd["proj_out.bias"]
    sd["transformer_blocks.0.attn.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        from_pretrained(sd, config=MMDiTConfig(**TINY, **CONFIGS["sd3"]))
    assert "joint_blocks.0.x_block.attn.qkv.weight has only (piece 0 of 3)(piece 2 of 3)" in str(err.value)


@pytest.mark.parametrize("preset, diffusers_config", [
    ("sd3_medium", dict(num_layers=24, num_attention_heads=24, caption_projection_dim=1536, pos_embed_max_size=192)),
    ("sd35_medium", dict(num_layers=24, num_attention_heads=24, caption_projection_dim=1536, pos_embed_max_size=384,
                         qk_norm="rms_norm", dual_attention_layers=tuple(range(13)))),
    ("sd35_large", dict(num_layers=38, num_attention_heads=38, caption_projection_dim=2432, pos_embed_max_size=192,
                        qk_norm="rms_norm")),
])
def test_sd3_presets_have_diffusers_parameters(preset, diffusers_config):
    """Each preset holds as many parameters as the diffusers model of the released config."""
    config = getattr(MMDiTConfig, preset)()
    with torch.device("meta"):
        ref = diffusers.SD3Transformer2DModel(**diffusers_config)
        model = MMDiT(config)
    assert MMDiTConfig.from_diffusers(dict(ref.config)) == config
    count = sum(t.numel() for t in model.state_dict().values())
    assert count == sum(t.numel() for t in ref.state_dict().values())


def test_sd3_trains():
    """With autograd the ops run their references, qk_norm_rope in place on views of the projections;
    every parameter but the last text stream's attention output (unused, as in diffusers) gets a gradient."""
    model = MMDiT(MMDiTConfig(**TINY, **CONFIGS["sd35"])).train()
    torch.nn.init.normal_(model.pos_embed)
    ours(model, *inputs(diffusers_sd3("sd35"))).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
@torch.no_grad()
def test_sd3_compiles_without_graph_breaks():
    torch._dynamo.reset()
    model = MMDiT(MMDiTConfig(**TINY, **CONFIGS["sd35"])).eval()
    args = inputs(diffusers_sd3("sd35"))
    torch.testing.assert_close(torch.compile(model, fullgraph=True, backend="aot_eager")(*args), model(*args))
