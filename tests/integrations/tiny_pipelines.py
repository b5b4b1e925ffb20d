"""Tiny random diffusers pipelines built from configs (no download): Stable Diffusion with a CLIP
text encoder and a tokenizer whose vocabulary is written here, and a class-conditional DiT."""
import contextlib
import json
import string
from unittest import mock

import torch

diffusers = __import__("diffusers")
transformers = __import__("transformers")


_randn = torch.randn


def _float32_draws(*shape, dtype=None, **kw):
    if dtype == torch.float64:
        return _randn(*shape, dtype=torch.float32, **kw).double()
    return _randn(*shape, dtype=dtype, **kw)


@contextlib.contextmanager
def float32_draws():
    """diffusers draws noise in the latents' dtype: inside this block a float64 pipeline (the
    numerics rule's oracle) draws the values a float32 one does, widened, so it samples the same
    image."""
    with mock.patch.object(torch, "randn", _float32_draws):
        yield


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb the 1-D parameters, which default initialisation leaves at 0 or 1."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def tokenizer(folder):
    chars = list(string.ascii_lowercase)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars + [c + "</w>" for c in chars]:
        vocab[c] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)


def vae():
    torch.manual_seed(0)
    return randomize(diffusers.AutoencoderKL(block_out_channels=(16, 32), layers_per_block=1, latent_channels=4,
                                             norm_num_groups=8, sample_size=32,
                                             down_block_types=("DownEncoderBlock2D",) * 2,
                                             up_block_types=("UpDecoderBlock2D",) * 2))


def sd(folder, scheduler, **config):
    """A StableDiffusionPipeline: SD1.x layout U-Net (conv projections, attention on the first level)."""
    torch.manual_seed(0)
    unet = randomize(diffusers.UNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=24,
        attention_head_dim=4, norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")))
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=54, hidden_size=24, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)).eval()
    sched = scheduler.from_config(dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       clip_sample=False, steps_offset=1, **config))
    pipe = diffusers.StableDiffusionPipeline(vae=vae(), text_encoder=text, tokenizer=tokenizer(folder), unet=unet,
                                             scheduler=sched, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sdxl(folder, scheduler, **config):
    """A StableDiffusionXLPipeline: two text encoders (the second projects its pooled output), attention
    on the lower level only, text_time conditioning."""
    torch.manual_seed(0)
    unet = randomize(diffusers.UNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=48,
        attention_head_dim=(2, 4), transformer_layers_per_block=(1, 2), use_linear_projection=True,
        norm_num_groups=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=16 + 6 * 8))
    config_text = dict(vocab_size=54, hidden_size=24, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                       max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**config_text)).eval()
    text_2 = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**config_text, projection_dim=16))
    sched = scheduler.from_config(dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       clip_sample=False, steps_offset=1, **config))
    words = tokenizer(folder)
    pipe = diffusers.StableDiffusionXLPipeline(vae=vae(), text_encoder=text, text_encoder_2=text_2.eval(),
                                               tokenizer=words, tokenizer_2=words, unet=unet, scheduler=sched,
                                               add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def dit(scheduler):
    """A DiTPipeline: learned sigma, 1000 classes (diffusers' DiT loop takes label 1000 as the null class)."""
    torch.manual_seed(0)
    model = randomize(diffusers.DiTTransformer2DModel(in_channels=4, out_channels=8, sample_size=8, patch_size=2,
                                                      num_attention_heads=2, attention_head_dim=8, num_layers=2,
                                                      num_embeds_ada_norm=1000))
    shared = model.transformer_blocks[0].norm1.emb.state_dict()  # the checkpoints hold copies of one
    for block in model.transformer_blocks:
        block.norm1.emb.load_state_dict(shared)
    pipe = diffusers.DiTPipeline(transformer=model, vae=vae(), scheduler=scheduler.from_config(
        dict(beta_schedule="linear", clip_sample=False)))
    pipe.set_progress_bar_config(disable=True)
    return pipe
