"""The SD3 and Flux transformers as the Pipeline's denoisers (rectified flow, prediction type
"flow", sampled with FlowEuler), and Flux's packing of latents into tokens.

SD3 takes classifier-free guidance: cond = (text embeddings, pooled embeddings), each [uncond; cond]
when the Pipeline runs with a guidance_scale. Flux-dev takes the guidance scale as an input instead
(one forward per step): cond = (text embeddings, pooled embeddings, guidance (N,)), the Pipeline
running without a guidance_scale; Flux-schnell takes no guidance (None)."""
from __future__ import annotations

import torch


def sd3_denoiser(model):
    """denoise(x, t, text, pooled) for the Pipeline: t is sigma * 1000, as SD3 takes it."""
    def denoise(x, t, text, pooled):
        return model(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled, timestep=t)
    return denoise


def flux_denoiser(model, img_ids: torch.Tensor, txt_ids: torch.Tensor):
    """denoise(x, t, text, pooled, guidance) for the Pipeline over packed latents (N, S, C * 4) with
    position ids img_ids (S, 3) and txt_ids (L, 3) (flux_ids makes them); t is sigma * 1000, which
    Flux takes as sigma (in [0, 1])."""
    def denoise(x, t, text, pooled, guidance=None):
        return model(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled, timestep=t / 1000,
                     img_ids=img_ids, txt_ids=txt_ids, guidance=guidance)
    return denoise


def flux_ids(latent_height: int, latent_width: int, text_len: int, device=None) -> tuple:
    """(img_ids (S, 3), txt_ids (L, 3)) of an image of (H/8, W/8) = (latent_height, latent_width)
    latents: each 2x2 patch is (0, row, column), each text token (0, 0, 0), as in FluxPipeline."""
    h, w = latent_height // 2, latent_width // 2
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    img = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(h * w, 3).float()
    return img, torch.zeros(text_len, 3, device=device)


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) latents -> (N, H/2 * W/2, C * 4) tokens of 2x2 patches, row-major."""
    n, c, h, w = latents.shape
    x = latents.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)  # (N, H/2, W/2, C, 2, 2)
    return x.reshape(n, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, latent_height: int, latent_width: int) -> torch.Tensor:
    """The inverse of pack_latents."""
    n, _, d = tokens.shape
    h, w = latent_height // 2, latent_width // 2
    x = tokens.reshape(n, h, w, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)        # (N, C, H/2, 2, W/2, 2)
    return x.reshape(n, d // 4, latent_height, latent_width)
