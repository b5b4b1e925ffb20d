"""fastdiff's from-scratch latent U-Net, DiT, SD3 and Flux MM-DiTs and VAE, on fastdiff.ops.

The interface the sampling pipeline relies on (keep it stable):
  UNet(config).forward(x, t, context, added_cond=None) -> Tensor
      x (B, C, H, W) latents, t (B,) or scalar timesteps (float or int), context (B, L, cross_attention_dim);
      SDXL-style models take added_cond = {"text_embeds": (B, E), "time_ids": (B, 6)} as diffusers does.
  DiT(config).forward(x, t, y) -> Tensor (B, out_channels, H, W)
      y (B,) long class labels; label config.num_classes is the null class for classifier-free guidance;
      with learn_sigma the first in_channels output channels are the noise prediction.
  MMDiT(config).forward(hidden_states, encoder_hidden_states, pooled_projections, timestep) -> Tensor
      SD3's transformer, diffusers' keywords: latents (B, C, H, W), text (B, L, 4096), pooled (B, 2048),
      timestep sigma * 1000; returns the flow prediction (B, C, H, W).
  Flux(config).forward(hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids,
      guidance=None) -> Tensor: packed latents (B, S, 64), text (B, L, 4096), pooled (B, 768), timestep
      sigma in [0, 1], position ids (S, 3) and (L, 3), guidance scale (dev); returns (B, S, 64).
  VAE(config).encode(x) -> (mean, logvar);  VAE(config).decode(z) -> image in [-1, 1]
      diffusion latents are (mean - (shift_factor or 0)) * scaling_factor; decode takes unscaled latents.
  model.config: a frozen dataclass; UNetConfig/VAEConfig have in_channels and sample_size, DiTConfig
      in_channels, input_size (= sample_size); UNetConfig.prediction_type ("epsilon" or "v_prediction");
      VAEConfig.scaling_factor and shift_factor.
  from_pretrained(path_or_state_dict, config=None, dtype=None, device=None) -> UNet | DiT | VAE | MMDiT | Flux
      (also UNet.from_pretrained etc.): diffusers folders and files, LDM, SD3 and Flux single files, DiT .pt.

Presets: UNetConfig.sd15() / sd2() / sdxl() / tiny(); DiTConfig.xl2(256 or 512) / b2() / s2() / tiny();
VAEConfig.sd() / sdxl() / tiny(); MMDiTConfig.sd3_medium() / sd35_medium() / sd35_large();
FluxConfig.dev() / schnell().
"""
from .configs import DiTConfig, FluxConfig, MMDiTConfig, UNetConfig, VAEConfig
from .dit import DiT
from .flux import Flux
from .kinds import from_pretrained
from .mmdit import MMDiT
from .unet import UNet
from .vae import VAE

__all__ = ["UNet", "DiT", "VAE", "MMDiT", "Flux", "UNetConfig", "DiTConfig", "VAEConfig", "MMDiTConfig", "FluxConfig",
           "from_pretrained"]
