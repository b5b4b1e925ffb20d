"""Latent consistency distillation (Luo et al., 2023) of the built-in U-Net into a few-step model.

The student starts as the teacher and learns its consistency function f(x_t, t) = c_skip(t) x_t +
c_out(t) x0_pred(x_t, t) (LCM's boundary scalings, fastdiff.sampling.samplers.LCM), so that f
gives the same clean latent from every point of one trajectory of the teacher's guided
probability-flow ODE. Each step: noise a latent to t on LCM's skip grid, take one DDIM step of the
teacher under classifier-free guidance to s = t - k, and pull f(x_t, t) towards the target
network's f(x_s, s), the target an exponential moving average of the student. The guidance scale
is fixed at distillation (as LCM-LoRA does), so the student samples without guidance: one forward
pass a step instead of two.
"""
from __future__ import annotations

import copy

import torch

from ..builtin import checkpoint, data, schedule, tokenizer
from ..sampling.samplers import LCM
from .train import config_dict, encode, loop


# The sampler the distilled model runs as "lcm": its skip grid and boundary scalings.
SOLVER = LCM()


def _x0(ab: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    ab = ab[t].view(-1, 1, 1, 1).to(x.dtype)
    return (x - (1 - ab).sqrt() * eps) / ab.sqrt()


def _consistency(model, ab, x, t, context):
    c_skip, c_out = SOLVER.boundary(t.to(x.dtype).view(-1, 1, 1, 1))
    return c_skip * x + c_out * _x0(ab, x, model(x, t, context), t)


def distillation_loss(student, target, teacher, z0: torch.Tensor, context: torch.Tensor, uncond: torch.Tensor,
                      g: torch.Generator, guidance: float = 7.5, huber_c: float = 1e-3) -> torch.Tensor:
    """LCM's loss on clean latents z0 with text context (and the empty prompt's, uncond): the
    pseudo-Huber distance between the student's f at t and the target's at s = t - k, where x_s is
    the teacher's guided DDIM step from x_t; t is drawn from the skip grid, the noise from g."""
    sched = schedule()
    ab = sched.alphas_cumprod.float()
    k = sched.num_train_timesteps // SOLVER.original_steps
    grid = torch.arange(1, SOLVER.original_steps + 1) * k - 1  # LCM's skip grid: 19, 39, ..., 999
    with torch.no_grad():
        t = grid[torch.randint(0, len(grid), (z0.shape[0],), generator=g)]
        s = (t - k).clamp(min=0)
        x_t = sched.add_noise(z0, torch.randn(z0.shape, generator=g), t)
        eps_c, eps_u = teacher(torch.cat([x_t, x_t]), torch.cat([t, t]),
                               torch.cat([context, uncond.expand_as(context)])).chunk(2)
        eps = eps_u + guidance * (eps_c - eps_u)
        ab_s = ab[s].view(-1, 1, 1, 1)
        x_s = ab_s.sqrt() * _x0(ab, x_t, eps, t) + (1 - ab_s).sqrt() * eps  # the teacher's DDIM step, t to s
        want = _consistency(target, ab, x_s, s, context)
    got = _consistency(student, ab, x_t, t, context)
    return ((got - want).square() + huber_c ** 2).sqrt().mean() - huber_c


def train_lcm(teacher, text_encoder, vae, *, out_dir, steps: int = 2000, batch: int = 32, seed: int = 0,
              guidance: float = 7.5, lr: float = 2e-4, target_decay: float = 0.95):
    """Distills the U-Net `teacher` (with its text encoder and VAE, all frozen) into
    <out_dir>/unet-lcm.safetensors, the target network; captions name the size and the place half
    the time each, as in training, and are never wrong (the guided teacher follows them)."""
    g = torch.Generator().manual_seed(seed)
    for frozen in (teacher, text_encoder, vae):
        frozen.eval().requires_grad_(False)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    target = copy.deepcopy(teacher)
    with torch.no_grad():
        uncond = text_encoder(tokenizer.encode([""], text_encoder.config.max_len))

    def loss_fn(step):
        scenes = data.random_scenes(batch, g)
        with torch.no_grad():
            z0 = encode(vae, data.render(scenes))
            context = text_encoder(tokenizer.encode(data.caption(scenes, g), text_encoder.config.max_len))
        return distillation_loss(student, target, teacher, z0, context, uncond, g, guidance)

    def update_target(step):
        with torch.no_grad():
            torch._foreach_lerp_(list(target.parameters()), list(student.parameters()), 1 - target_decay)

    losses = loop("unet-lcm", student.parameters(), loss_fn, steps, lr, out_dir, after_step=update_target)
    return checkpoint.save(target.eval(), "unet-lcm", config_dict(target), out_dir), losses
