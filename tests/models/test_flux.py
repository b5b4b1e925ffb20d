"""The fastdiff Flux transformer against diffusers' FluxTransformer2DModel with the same random
weights, with and without the guidance embedding, loaded from a diffusers folder and from the
original layout, in float32 (the numerics rule) and float64 (to 1e-10) on the CPU."""
import pytest
import torch

from fastdiff.models import Flux, FluxConfig, from_pretrained
from fastdiff.testing import randn

from mmdit_helpers import float64_faithful, to_original
from model_helpers import assert_matches, randomize

diffusers = pytest.importorskip("diffusers")

TINY = dict(in_channels=8, num_layers=1, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
            joint_attention_dim=12, pooled_projection_dim=10, axes_dims_rope=(4, 6, 6))


def diffusers_flux(guidance):
    return randomize(diffusers.FluxTransformer2DModel(**TINY, guidance_embeds=guidance))


def inputs(ref, seq=12, text=5):
    c = ref.config
    grid = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij"), -1).reshape(-1, 2)
    img_ids = torch.cat([torch.zeros(seq, 1), grid.float()], dim=1)            # (0, row, col) per patch
    txt_ids = torch.randint(0, 7, (text, 3)).float()  # zeros in the pipelines; any ids rotate the text too
    guidance = torch.tensor([3.5, 2.0]) if c.guidance_embeds else None
    return (randn((2, seq, c.in_channels)), randn((2, text, c.joint_attention_dim)),
            randn((2, c.pooled_projection_dim)), torch.tensor([0.25, 0.875]), img_ids, txt_ids, guidance)


def ours(model, x, context, pooled, t, img_ids, txt_ids, guidance):
    return model(hidden_states=x, encoder_hidden_states=context, pooled_projections=pooled, timestep=t,
                 img_ids=img_ids, txt_ids=txt_ids, guidance=guidance)


def theirs(model, x, context, pooled, t, img_ids, txt_ids, guidance):
    return model(hidden_states=x, encoder_hidden_states=context, pooled_projections=pooled, timestep=t,
                 img_ids=img_ids, txt_ids=txt_ids, guidance=guidance).sample


def original_checkpoint(ref, prefix=""):
    """diffusers' state dict in the layout of the original Flux checkpoints."""
    sd, c = ref.state_dict(), ref.config
    renames = {"x_embedder.": "img_in.", "context_embedder.": "txt_in.", "proj_out.": "final_layer.linear.",
               "norm_out.linear.": "final_layer.adaLN_modulation.1."}
    for new, old in (("time_in", "timestep_embedder"), ("vector_in", "text_embedder"),
                     ("guidance_in", "guidance_embedder")):
        renames.update({f"time_text_embed.{old}.linear_1.": f"{new}.in_layer.",
                        f"time_text_embed.{old}.linear_2.": f"{new}.out_layer."})
    fused = {}
    for i in range(c.num_layers):
        d, o = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        renames.update({d + "norm1.linear.": o + "img_mod.lin.", d + "norm1_context.linear.": o + "txt_mod.lin.",
                        d + "attn.to_out.0.": o + "img_attn.proj.", d + "attn.to_add_out.": o + "txt_attn.proj.",
                        d + "attn.norm_q.weight": o + "img_attn.norm.query_norm.scale",
                        d + "attn.norm_k.weight": o + "img_attn.norm.key_norm.scale",
                        d + "attn.norm_added_q.weight": o + "txt_attn.norm.query_norm.scale",
                        d + "attn.norm_added_k.weight": o + "txt_attn.norm.key_norm.scale",
                        d + "ff.net.0.proj.": o + "img_mlp.0.", d + "ff.net.2.": o + "img_mlp.2.",
                        d + "ff_context.net.0.proj.": o + "txt_mlp.0.", d + "ff_context.net.2.": o + "txt_mlp.2."})
        for kind in ("weight", "bias"):
            fused[f"{o}img_attn.qkv.{kind}"] = [f"{d}attn.to_{p}.{kind}" for p in "qkv"]
            fused[f"{o}txt_attn.qkv.{kind}"] = [f"{d}attn.add_{p}_proj.{kind}" for p in "qkv"]
    for i in range(c.num_single_layers):
        d, o = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        renames.update({d + "norm.linear.": o + "modulation.lin.", d + "proj_out.": o + "linear2.",
                        d + "attn.norm_q.weight": o + "norm.query_norm.scale",
                        d + "attn.norm_k.weight": o + "norm.key_norm.scale"})
        for kind in ("weight", "bias"):
            fused[f"{o}linear1.{kind}"] = [f"{d}attn.to_{p}.{kind}" for p in "qkv"] + [f"{d}proj_mlp.{kind}"]
    swapped = [f"final_layer.adaLN_modulation.1.{kind}" for kind in ("weight", "bias")]
    return to_original(sd, renames, fused, swapped, prefix)


@pytest.mark.parametrize("guidance", [True, False], ids=["dev", "schnell"])
def test_flux_matches_diffusers(tmp_path, monkeypatch, guidance):
    float64_faithful(monkeypatch)
    ref = diffusers_flux(guidance)
    ref.save_pretrained(tmp_path)
    model, model64 = from_pretrained(tmp_path), Flux.from_pretrained(tmp_path, dtype=torch.float64)
    assert isinstance(model, Flux) and model.config == FluxConfig(**TINY, guidance_embeds=guidance)
    assert_matches(model, ref, model64, inputs(ref), ours, theirs)


@pytest.mark.parametrize("guidance", [True, False], ids=["dev", "schnell"])
def test_flux_loads_the_original_layout(tmp_path, monkeypatch, guidance):
    from safetensors.torch import save_file

    float64_faithful(monkeypatch)
    ref = diffusers_flux(guidance)
    config = FluxConfig(**TINY, guidance_embeds=guidance)
    save_file(original_checkpoint(ref, prefix="model.diffusion_model."), tmp_path / "flux.safetensors")
    model = Flux.from_pretrained(tmp_path / "flux.safetensors", config=config)
    model64 = from_pretrained(original_checkpoint(ref), config=config, dtype=torch.float64)
    assert_matches(model, ref, model64, inputs(ref), ours, theirs)


def test_flux_config_from_the_original_shapes():
    """Head dim 128 and the rotary axes of the released models: the rest is read off the shapes."""
    with torch.device("meta"):
        ref = diffusers.FluxTransformer2DModel(**{**TINY, "attention_head_dim": 128, "axes_dims_rope": (16, 56, 56)},
                                               guidance_embeds=True)
    from fastdiff.models import flux

    class Shapes(dict):  # the weights interface config_from_shapes reads
        def shape(self, key):
            return tuple(self[key].shape)
    inferred = flux.config_from_shapes(Shapes(original_checkpoint(ref, prefix="model.diffusion_model.")))
    assert inferred == FluxConfig.from_diffusers(dict(ref.config))


def test_flux_takes_ids_with_a_batch_axis():
    model = from_pretrained(diffusers_flux(False).state_dict(), config=FluxConfig(**TINY, guidance_embeds=False))
    x, context, pooled, t, img_ids, txt_ids, _ = inputs(model)
    with torch.no_grad():
        want = ours(model, x, context, pooled, t, img_ids, txt_ids, None)
        got = ours(model, x, context, pooled, t, img_ids.expand(2, -1, -1), txt_ids.expand(2, -1, -1), None)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_flux_dev_needs_guidance():
    model = from_pretrained(diffusers_flux(True).state_dict(), config=FluxConfig(**TINY))
    args = list(inputs(model))
    with pytest.raises(ValueError, match="guidance-distilled model needs guidance="):
        ours(model, *args[:-1], None)


@pytest.mark.parametrize("preset", ["dev", "schnell"])
def test_flux_presets_have_diffusers_parameters(preset):
    config = getattr(FluxConfig, preset)()
    with torch.device("meta"):
        ref = diffusers.FluxTransformer2DModel(guidance_embeds=preset == "dev")
        model = Flux(config)
    assert FluxConfig.from_diffusers(dict(ref.config)) == config
    assert sum(t.numel() for t in model.state_dict().values()) == sum(t.numel() for t in ref.state_dict().values())


def test_flux_trains():
    """With autograd the ops run their references, qk_norm_rope in place on views of the projections."""
    model = Flux(FluxConfig(**TINY)).train()
    args = inputs(diffusers_flux(True))
    ours(model, *args).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
@torch.no_grad()
def test_flux_compiles_without_graph_breaks():
    """torch.compile(fullgraph=True) traces the model, qk_norm_rope writing into the fused projection."""
    torch._dynamo.reset()
    model, args = Flux(FluxConfig(**TINY)).eval(), inputs(diffusers_flux(True))
    torch.testing.assert_close(torch.compile(model, fullgraph=True, backend="aot_eager")(*args), model(*args))
