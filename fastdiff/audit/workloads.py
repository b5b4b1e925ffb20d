"""The workloads of the audit: every attention, GroupNorm, adaln, qk_norm_rope, sampler_step and
cfg_combine call that fastdiff's models make, read off one forward of each preset on the meta
device (shapes only: no memory, no compute), deduplicated.

A workload is an op with its shapes, strides, dtype and layout: exactly what a launcher sees. The
U-Nets, the DiT and SD3 run at the 2x classifier-free-guidance batch (one image), Flux-dev at
batch 1 (its guidance is an input), the VAE decoder at batch 1.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
ITEMSIZE = {"fp16": 2, "bf16": 2, "fp32": 4}


@dataclasses.dataclass(frozen=True)
class Workload:
    """One op call. `params` holds the op's shapes (a sorted tuple of (name, value) pairs):
    attention: B, Sq, Sk, H, D, q/k/v strides (batch, seq, head) and storage offsets (elements);
    group_norm: N, C, spatial, groups, silu, affine, layout ('nchw' or 'channels_last');
    adaln: B, T, D, gated (x contiguous; shift, scale, gate chunks of one modulation projection);
    qk_norm_rope: B, S, H, D, rope, q/k strides (batch, seq, head);
    sampler_step: n (latent elements), guided, prev, noise; cfg_combine: n."""
    op: str
    dtype: str
    params: tuple
    models: tuple = ()

    @property
    def p(self) -> dict:
        return dict(self.params)

    @property
    def key(self) -> tuple:
        return (self.op, self.dtype, self.params)

    @property
    def name(self) -> str:
        p = self.p
        if self.op == "attention":
            kind = "self" if p["q_strides"] == p["k_strides"] else "cross"
            s = f"{kind} B{p['B']} Sq{p['Sq']} Sk{p['Sk']} H{p['H']} D{p['D']}"
        elif self.op == "group_norm":
            spatial = "x".join(map(str, p["spatial"]))
            s = (f"{p['N']}x{p['C']}x{spatial} G{p['groups']}{' silu' if p['silu'] else ''} "
                 f"{'cl' if p['layout'] == 'channels_last' else 'nchw'}")
        elif self.op == "adaln":
            s = f"B{p['B']} T{p['T']} D{p['D']}{' gated' if p['gated'] else ''}"
        elif self.op == "qk_norm_rope":
            s = f"B{p['B']} S{p['S']} H{p['H']} D{p['D']}{' rope' if p['rope'] else ''}"
        elif self.op == "sampler_step":
            flags = [f for f in ("guided", "prev", "noise") if p[f]]
            s = " ".join([f"n{p['n']}"] + [{"guided": "cfg"}.get(f, f) for f in flags])
        else:
            s = f"n{p['n']}"
        return f"{self.op} {s} {self.dtype}"

    @property
    def itemsize(self) -> int:
        return ITEMSIZE[self.dtype]

    def with_dtype(self, dtype: str) -> "Workload":
        return dataclasses.replace(self, dtype=dtype)

    def vector_bytes(self) -> int:
        """The widest global access (bytes, at most 16) the tensors' layout allows along their
        contiguous dimension: every stride and offset of the contiguous runs is a multiple of it."""
        p, size = self.p, self.itemsize
        if self.op == "attention":
            strides = [p["D"]] + [s for t in "qkv" for s in p[f"{t}_strides"]] + [p[f"{t}_offset"] for t in "qkv"]
        elif self.op == "group_norm":
            hw = math.prod(p["spatial"])
            strides = [p["C"]] if p["layout"] == "channels_last" else [hw]
        elif self.op == "adaln":
            strides = [p["D"]]
        elif self.op == "qk_norm_rope":
            strides = [p["D"]] + [s for t in "qk" for s in p[f"{t}_strides"]]
        else:
            strides = [p["n"]]
        g = 16
        for s in strides:
            g = math.gcd(g, s * size)
        return g

    def bytes_and_flops(self) -> tuple[int, int]:
        """The least DRAM traffic (every input read once, every output written once) and the
        arithmetic (attention: the two matmuls, 4 B H Sq Sk D; elementwise ops: a few per element)."""
        p, size = self.p, self.itemsize
        if self.op == "attention":
            q = p["B"] * p["Sq"] * p["H"] * p["D"]
            kv = p["B"] * p["Sk"] * p["H"] * p["D"]
            return size * (2 * q + 2 * kv), 4 * p["B"] * p["H"] * p["Sq"] * p["Sk"] * p["D"]
        if self.op == "group_norm":
            n = p["N"] * p["C"] * math.prod(p["spatial"])
            return size * 2 * n, (12 if p["silu"] else 8) * n
        if self.op == "adaln":  # x, y; gated also the residual and h
            n = p["B"] * p["T"] * p["D"]
            return size * n * (4 if p["gated"] else 2), (12 if p["gated"] else 10) * n
        if self.op == "qk_norm_rope":  # q and k read and written in place
            n = 2 * p["B"] * p["S"] * p["H"] * p["D"]
            return size * 2 * n, (9 if p["rope"] else 4) * n
        if self.op == "sampler_step":
            n = p["n"]
            tensors = 1 + (2 if p["guided"] else 1) + p["prev"] + p["noise"] + 2  # x, model_out, prev, noise; x_next, d
            return size * n * tensors, 10 * n
        return size * 3 * p["n"], 3 * p["n"]


def _attention(q, k, v, models) -> Workload:
    b, sq, h, d = q.shape
    params = dict(B=b, Sq=sq, Sk=k.shape[1], H=h, D=d)
    for name, t in zip("qkv", (q, k, v)):
        params[f"{name}_strides"] = tuple(t.stride()[:3])
        params[f"{name}_offset"] = t.storage_offset()
    return Workload("attention", "fp16", tuple(sorted(params.items())), models)


def attention_workload(b, sq, sk, h, d, dtype="fp16", models=("custom",)) -> Workload:
    """Attention on contiguous (B, S, H, D) tensors."""
    q = torch.empty((b, sq, h, d), device="meta")
    k = torch.empty((b, sk, h, d), device="meta")
    return _attention(q, k, k, tuple(models)).with_dtype(dtype)


def group_norm_workload(shape, groups, silu=True, layout="nchw", dtype="fp16", models=("custom",)) -> Workload:
    params = dict(N=shape[0], C=shape[1], spatial=tuple(shape[2:]), groups=groups, silu=bool(silu), affine=True,
                  layout=layout)
    return Workload("group_norm", dtype, tuple(sorted(params.items())), tuple(models))


def _adaln(x, gate, models) -> Workload:
    b, t, d = x.shape
    return Workload("adaln", "fp16", tuple(sorted(dict(B=b, T=t, D=d, gated=gate is not None).items())), models)


def _qk_norm_rope(q, k, cos, models) -> Workload:
    b, s, h, d = q.shape
    params = dict(B=b, S=s, H=h, D=d, rope=cos is not None, q_strides=tuple(q.stride()[:3]),
                  k_strides=tuple(k.stride()[:3]))
    return Workload("qk_norm_rope", "fp16", tuple(sorted(params.items())), models)


def _latent_ops(shape, guided, models, prev=True, noise=False) -> list[Workload]:
    n = math.prod(shape)
    step = dict(n=n, guided=guided, prev=prev, noise=noise)
    out = [Workload("sampler_step", "fp16", tuple(sorted(step.items())), models)]
    if guided:
        out.append(Workload("cfg_combine", "fp16", (("n", n),), models))
    return out


class _Recorder(TorchFunctionMode):
    """Records every fastdiff op the model calls (on meta tensors)."""

    def __init__(self, model_name):
        super().__init__()
        self.model_name, self.calls = model_name, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "namespace", None) == "fastdiff":
            name = func.name().split("::")[-1].split(".")[0]
            if name == "attention":
                self.calls.append(_attention(*args[:3], (self.model_name,)))
            elif name == "group_norm":
                x, groups, weight, _bias, _eps, silu = args[:6]
                self.calls.append(group_norm_workload(tuple(x.shape), groups, silu, models=(self.model_name,)))
            elif name == "adaln":
                self.calls.append(_adaln(args[0], args[3], (self.model_name,)))
            elif name == "qk_norm_rope":
                self.calls.append(_qk_norm_rope(args[0], args[1], args[4], (self.model_name,)))
        return func(*args, **(kwargs or {}))


def _model_runs() -> dict:
    """name: (build the model, run its forward on meta inputs, the latent shape sampled (None: a VAE),
    and whether it samples with classifier-free guidance)."""
    from fastdiff.models import DiT, DiTConfig, Flux, FluxConfig, MMDiT, MMDiTConfig, UNet, UNetConfig, VAE, VAEConfig

    def r(*shape):
        return torch.randn(*shape)

    def unet(cfg, ctx_len=77):
        side = cfg.sample_size

        def added():  # SDXL's pooled text embeds and time ids
            if cfg.addition_embed_type != "text_time":
                return None
            pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
            return {"text_embeds": r(2, pooled), "time_ids": r(2, 6)}

        return (lambda: UNet(cfg),
                lambda m: m(r(2, cfg.in_channels, side, side), r(2), r(2, ctx_len, cfg.cross_attention_dim), added()),
                (1, cfg.in_channels, side, side))

    def dit(cfg):
        side = cfg.input_size
        labels = torch.zeros(2, dtype=torch.long, device="meta")
        return (lambda: DiT(cfg), lambda m: m(r(2, cfg.in_channels, side, side), r(2), labels),
                (1, cfg.in_channels, side, side))

    def sd3(cfg, text=333):  # 1024px: 128x128 latents; CLIP's 77 and T5's 256 text tokens
        return (lambda: MMDiT(cfg), lambda m: m(r(2, cfg.in_channels, 128, 128), r(2, text, cfg.joint_attention_dim),
                                                r(2, cfg.pooled_projection_dim), r(2)),
                (1, cfg.in_channels, 128, 128))

    def flux(cfg, text=512):  # 1024px: 4096 packed tokens of 2x2 patches; T5's 512 text tokens
        def forward(m):
            return m(r(1, 4096, cfg.in_channels), r(1, text, cfg.joint_attention_dim), r(1, cfg.pooled_projection_dim),
                     r(1), r(4096, 3), r(text, 3), r(1) if cfg.guidance_embeds else None)
        return lambda: Flux(cfg), forward, (1, 4096, cfg.in_channels), False

    def vae(cfg, image):
        side = image // 2 ** (len(cfg.block_out_channels) - 1)
        return (lambda: VAE(cfg), lambda m: m.decode(r(1, cfg.latent_channels, side, side)), None)

    runs = {
        "sd15": unet(UNetConfig.sd15()),
        "sd2": unet(UNetConfig.sd2()),
        "sdxl": unet(UNetConfig.sdxl()),
        "dit-xl2-256": dit(DiTConfig.xl2(256)),
        "dit-xl2-512": dit(DiTConfig.xl2(512)),
        "vae-512": vae(VAEConfig.sd(), 512),
        "vae-1024": vae(VAEConfig.sd(), 1024),
        "sd3-medium": sd3(MMDiTConfig.sd3_medium()),
        "sd35-large": sd3(MMDiTConfig.sd35_large()),
        "flux-dev": flux(FluxConfig.dev()),
    }
    try:
        from fastdiff import builtin
        from fastdiff.builtin import tokenizer
        from fastdiff.models import UNetConfig as U, DiTConfig as D, VAEConfig as V

        def cfg(cls, part):
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in builtin.CONFIGS[part].items()})

        vc = cfg(V, "vae")
        runs["builtin-unet"] = unet(cfg(U, "unet"), tokenizer.MAX_LEN)
        runs["builtin-dit"] = dit(cfg(D, "dit"))
        runs["builtin-vae"] = vae(vc, vc.sample_size)
    except ImportError:  # a build without the built-in models
        pass
    return runs


def model_names() -> list[str]:
    return list(_model_runs())


def _trace(name, build, forward, latent, guided=True) -> list[Workload]:
    with torch.device("meta"), torch.no_grad():
        model = build()  # float32: the shapes are those of every dtype
        with _Recorder(name) as rec:
            forward(model)
    found = rec.calls
    # every GroupNorm in both layouts: the U-Net may run channels_last
    found += [dataclasses.replace(w, params=tuple(sorted({**w.p, "layout": "channels_last"}.items())))
              for w in found if w.op == "group_norm"]
    if latent is not None:
        found += _latent_ops(latent, guided, (name,))
    return found


def _cache_key(names) -> str:
    from fastdiff import models

    h = hashlib.sha256(repr(sorted(names)).encode())
    for path in sorted(Path(models.__file__).parent.glob("*.py")) + [Path(__file__)]:
        h.update(path.read_bytes())
    h.update(inspect.getsource(_model_runs).encode())
    return h.hexdigest()[:20]


def _encode(w: Workload) -> dict:
    return {"op": w.op, "dtype": w.dtype, "params": [[k, list(v) if isinstance(v, tuple) else v] for k, v in w.params],
            "models": list(w.models)}


def _decode(d: dict) -> Workload:
    params = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in d["params"])
    return Workload(d["op"], d["dtype"], params, tuple(d["models"]))


def model_workloads(names=None, dtypes=("fp16", "bf16"), cache_dir: Path | None = None) -> list[Workload]:
    """The workloads of the named presets (default: all), in each dtype, deduplicated; the models
    that make a call are merged into its `models`. Traces are cached in cache_dir."""
    runs = _model_runs()
    names = list(names) if names is not None else model_names()
    traced = [n for n in names if n in runs]
    found: list[Workload] = []
    path = cache_dir / f"workloads-{_cache_key(traced)}.json" if cache_dir else None
    if path is not None and path.is_file():
        found = [_decode(d) for d in json.loads(path.read_text())]
    else:
        for n in traced:
            found += _trace(n, *runs[n])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps([_encode(w) for w in found]))
    merged: dict = {}
    for w in found:
        for dtype in dtypes:
            v = w.with_dtype(dtype)
            old = merged.get(v.key)
            models = tuple(dict.fromkeys((old.models if old else ()) + v.models))
            merged[v.key] = dataclasses.replace(v, models=models)
    return list(merged.values())
