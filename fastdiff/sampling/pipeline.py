"""The sampling loop for any fastdiff model.

The model is reached through `denoise(x_in, t, *cond) -> model_out` (a fastdiff UNet or DiT is
such a callable: UNet(x, t, context, added_cond), DiT(x, t, y)). With guidance, cond holds
[uncond; cond] on the batch axis and one forward pass evaluates both halves.

A model whose output has twice the latent channels predicts a learned variance as well (every
DiT-XL/2 checkpoint): as in diffusers, the first half is the prediction and the second half, which
these samplers do not use, is dropped.

Each model evaluation runs over static buffers: the step's row of the plan is copied from a
device-resident table into them, noise is drawn into one by the run's generator, and one call
does the model forward and the fused sampler_step. Nothing in a run waits for the device: the
plan reaches it in one copy from pinned memory that does not block the host, and the loop reads
no device value back. On CUDA that call is captured once per shape in a CUDA graph and replayed;
parameters are read at replay, so weights changed in place (a merged LoRA) take effect without a
new capture.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from .. import ops
from .samplers import Plan, Sampler
from .schedules import FlowSchedule, NoiseSchedule

Denoise = Callable[..., torch.Tensor]

# A device row of the plan: (p, q, a, b, c, e) for sampler_step, then scale_in and t.
_ROW = 8


def _device_table(plan: Plan, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The plan as one (n, 8) table of rows (p, q, a, b, c, e, scale_in, t) on `device`.

    A copy from pageable memory blocks the host, so on CUDA the table is staged in pinned memory
    and copied with non_blocking. The pinned block comes from PyTorch's caching host allocator,
    which records the copy on the stream and hands the block out again only once the copy has
    run, so the staging tensor may be dropped as soon as the copy is queued."""
    table = torch.cat([plan.coeffs, plan.scale_in[:, None], plan.t[:, None]], dim=1).to(dtype)
    if device.type != "cuda":
        return table.to(device)
    return table.pin_memory().to(device, non_blocking=True)


def _prediction(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The prediction in a model output. An output with twice the latent channels holds a learned
    variance too (diffusers' convention): its first half is kept, as a view. sampler_step reads
    any layout (its fused kernels make a strided half dense: one copy of that half)."""
    if out.dim() == x.dim() >= 2 and out.shape[1] == 2 * x.shape[1] and out.shape[2:] == x.shape[2:]:
        return out[:, :x.shape[1]]
    return out


class _Step:
    """Static buffers of one run shape and one evaluation over them, eager or as a CUDA graph."""

    def __init__(self, denoise: Denoise, x: torch.Tensor, cond: Sequence[Optional[torch.Tensor]],
                 guidance_scale: Optional[float], uses_prev: bool, uses_noise: bool):
        self.denoise, self.guidance_scale = denoise, guidance_scale
        # fp64 latents keep fp64 coefficients (exact comparisons); otherwise the kernels read fp32
        table_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        batch = x.shape[0] * (1 if guidance_scale is None else 2)
        self.x = torch.empty_like(x)
        self.prev = torch.zeros_like(x) if uses_prev else None
        self.noise = torch.zeros_like(x) if uses_noise else None
        # this evaluation's row of the plan, filled by one copy per step; coeffs and scale are views
        self.row = torch.zeros(_ROW, dtype=table_dtype, device=x.device)
        self.coeffs, self.scale = self.row[:6], self.row[6]
        self.t = torch.zeros(batch, dtype=table_dtype, device=x.device)
        self.cond = tuple(None if c is None else torch.empty_like(c) for c in cond)
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.graph_failed = False

    def load(self, x: torch.Tensor, cond) -> None:
        self.x.copy_(x)
        if self.prev is not None:
            self.prev.zero_()  # the first step's c is 0, but 0 * garbage may be NaN
        for dst, src in zip(self.cond, cond):
            if dst is not None:
                dst.copy_(src)

    def __call__(self) -> None:
        self.t.copy_(self.row[7])  # one timestep for every row of the batch
        x_in = (self.x * self.scale).to(self.x.dtype)
        if self.guidance_scale is not None:
            x_in = torch.cat([x_in, x_in])
        out = _prediction(self.denoise(x_in, self.t, *self.cond), self.x)
        x_next, d = ops.sampler_step(self.x, out, self.coeffs, guidance_scale=self.guidance_scale,
                                     prev=self.prev, noise=self.noise)
        self.x.copy_(x_next)
        if self.prev is not None:
            self.prev.copy_(d)

    def capture(self) -> None:
        """Warm up on a side stream (kernel compilation, workspaces), then capture one evaluation.
        Warm-up writes x and prev, so they are restored; on failure the run stays eager."""
        saved = [(t, t.clone()) for t in (self.x, self.prev) if t is not None]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side):
                for _ in range(2):
                    self()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self()
            self.graph = graph
        except Exception as e:  # any op that cannot be captured: fall back to eager
            self.graph_failed = True
            warnings.warn(f"fastdiff.sampling: CUDA graph capture failed ({type(e).__name__}: {e}); "
                          f"sampling eagerly", RuntimeWarning, stacklevel=2)
        finally:
            torch.cuda.current_stream().wait_stream(side)
            for dst, src in saved:
                dst.copy_(src)

    def run(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self()


class Pipeline:
    """Samples from any fastdiff model: `denoise(x_in, t, *cond)` with a schedule and the model's
    prediction type ('epsilon', 'v_prediction', 'sample' or 'flow'); `vae` decodes latents. A
    learned-sigma output (twice the latent channels, e.g. a DiT) is sampled from its first half.

    cuda_graph: capture each evaluation in a CUDA graph on CUDA devices (eager elsewhere). A graph
    reads the parameters it was captured with: change weights in place (load_state_dict, a merged
    LoRA); a model moved or rebuilt needs a new Pipeline.
    """

    def __init__(self, denoise: Denoise, schedule, *, prediction_type: str = "epsilon", vae=None,
                 cuda_graph: bool = True):
        if not isinstance(schedule, (NoiseSchedule, FlowSchedule)):
            raise TypeError("fastdiff.sampling.Pipeline: schedule must be a NoiseSchedule or FlowSchedule, "
                            f"got {type(schedule).__name__}")
        self.denoise, self.schedule, self.prediction_type = denoise, schedule, prediction_type
        self.vae, self.cuda_graph = vae, cuda_graph
        self._steps: dict = {}

    @property
    def captured_graphs(self) -> int:
        """How many run shapes replay a CUDA graph (0: every run so far was eager)."""
        return sum(step.graph is not None for step in self._steps.values())

    def _step_for(self, x, cond, guidance_scale, plan: Plan) -> _Step:
        key = (tuple(x.shape), x.dtype, x.device, guidance_scale, plan.uses_prev, any(plan.noisy),
               tuple(None if c is None else (tuple(c.shape), c.dtype) for c in cond))
        if key not in self._steps:
            self._steps[key] = _Step(self.denoise, x, cond, guidance_scale, plan.uses_prev, any(plan.noisy))
        return self._steps[key]

    @torch.no_grad()
    def run(self, noise: torch.Tensor, plan: Plan, *, cond: Sequence[Optional[torch.Tensor]] = (),
            guidance_scale: Optional[float] = None, generator: Optional[torch.Generator] = None,
            callback: Optional[Callable[[int, torch.Tensor], None]] = None, progress: bool = True) -> torch.Tensor:
        """Run `plan` from x_T = plan.init_sigma * noise; returns the final latents.

        cond: the model's extra inputs, with 2N rows ([uncond; cond]) when guidance_scale is given.
        generator: draws the step noise of stochastic samplers, in evaluation order.
        callback(i, x): after evaluation i, with the current latents (a buffer reused by the run).
        """
        cond = tuple(cond)
        rows = noise.shape[0] * (1 if guidance_scale is None else 2)
        for i, c in enumerate(cond):
            if c is not None and c.shape[0] != rows:
                raise ValueError(f"fastdiff.sampling.Pipeline: cond[{i}] must have {rows} rows "
                                 f"({'[uncond; cond] ' if guidance_scale is not None else ''}for "
                                 f"{noise.shape[0]} samples), got shape {tuple(c.shape)}")
        step = self._step_for(noise, cond, guidance_scale, plan)
        step.load(noise * plan.init_sigma, cond)
        table = _device_table(plan, step.row.dtype, noise.device)
        noisy = plan.noisy  # host values: the loop branches on no device value
        want_graph = self.cuda_graph and noise.device.type == "cuda"
        for i in tqdm(range(len(plan)), disable=not progress, desc="sampling", leave=False):
            step.row.copy_(table[i])
            if noisy[i]:
                step.noise.normal_(generator=generator)
            if want_graph and step.graph is None and not step.graph_failed:
                step.capture()
            step.run()
            if callback is not None:
                callback(i, step.x)
        return step.x.clone()

    def sample(self, shape: Sequence[int], sampler: Sampler, steps: int, *, cond=(),
               guidance_scale: Optional[float] = None, seed: int = 0, device="cpu", dtype=torch.float32,
               callback=None, progress: bool = True) -> torch.Tensor:
        """Latents of shape `shape`, reproducible from `seed` (which seeds x_T and the step noise)."""
        generator = torch.Generator(device).manual_seed(seed)
        noise = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
        plan = sampler.plan(self.schedule, steps, self.prediction_type)
        return self.run(noise, plan, cond=cond, guidance_scale=guidance_scale, generator=generator,
                        callback=callback, progress=progress)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from latents, through the VAE and its config's scaling (and shift)."""
        if self.vae is None:
            raise ValueError("fastdiff.sampling.Pipeline: no VAE was given to decode latents")
        config = self.vae.config
        z = latents / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)
        return self.vae.decode(z.to(next(self.vae.parameters()).dtype))
