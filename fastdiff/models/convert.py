"""Checkpoint key layouts -> fastdiff parameter names, written as data: regex rules and prefix
tables per layout, applied tensor by tensor (convert() pops each source entry as it goes, so a
conversion never holds a second copy of the weights).

Layouts: diffusers (UNet2DConditionModel, AutoencoderKL, DiTTransformer2DModel), the original
LDM single file (model.diffusion_model.*, first_stage_model.*), the facebookresearch DiT .pt.
fastdiff's own names pass through every rule unchanged. Separate diffusers q, k, v projections
are concatenated into the fused to_qkv (self-attention) or to_kv (cross-attention) weights."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, MutableMapping, Optional, Union

import torch

from .blocks import sincos_pos_embed

# Shared by the diffusers U-Net, VAE and DiT attention blocks.
_DIFFUSERS_COMMON = [
    (r"\.(down|up)samplers\.0\.", r".\1sample."),
    (r"\.to_out\.0\.", ".to_out."),
    (r"\.ff\.net\.0\.proj\.", ".ff.proj."),
    (r"\.ff\.net\.2\.", ".ff.out."),
]

UNET_DIFFUSERS = _DIFFUSERS_COMMON

VAE_DIFFUSERS = _DIFFUSERS_COMMON + [
    # diffusers' older VAE attention names
    (r"\.query\.", ".to_q."), (r"\.key\.", ".to_k."), (r"\.value\.", ".to_v."), (r"\.proj_attn\.", ".to_out."),
    (r"(mid_block\.attentions\.\d+)\.(to_q|to_k|to_v|to_out)\.", r"\1.attn.\2."),
]

DIT_ORIGINAL = [
    (r"^t_embedder\.mlp\.0\.", "t_embedder.linear_1."),
    (r"^t_embedder\.mlp\.2\.", "t_embedder.linear_2."),
    (r"\.attn\.qkv\.", ".attn.to_qkv."),
    (r"\.attn\.proj\.", ".attn.to_out."),
]

# Every diffusers block holds a copy of the shared timestep and class embedders; all map to one.
DIT_DIFFUSERS = [
    (r"^pos_embed\.proj\.", "x_embedder.proj."),
    (r"^transformer_blocks\.\d+\.norm1\.emb\.timestep_embedder\.", "t_embedder."),
    (r"^transformer_blocks\.\d+\.norm1\.emb\.class_embedder\.", "y_embedder."),
    (r"^transformer_blocks\.(\d+)\.norm1\.linear\.", r"blocks.\1.adaLN_modulation.1."),
    (r"^transformer_blocks\.(\d+)\.attn1\.", r"blocks.\1.attn."),
    (r"^transformer_blocks\.(\d+)\.ff\.net\.0\.proj\.", r"blocks.\1.mlp.fc1."),
    (r"^transformer_blocks\.(\d+)\.ff\.net\.2\.", r"blocks.\1.mlp.fc2."),
    (r"\.to_out\.0\.", ".to_out."),
    (r"^proj_out_1\.", "final_layer.adaLN_modulation.1."),
    (r"^proj_out_2\.", "final_layer.linear."),
]

_LDM_RESBLOCK = [
    (r"\.in_layers\.0\.", ".norm1."), (r"\.in_layers\.2\.", ".conv1."), (r"\.emb_layers\.1\.", ".time_emb_proj."),
    (r"\.out_layers\.0\.", ".norm2."), (r"\.out_layers\.3\.", ".conv2."), (r"\.skip_connection\.", ".conv_shortcut."),
]

_LDM_VAE_INNER = [
    (r"\.nin_shortcut\.", ".conv_shortcut."), (r"\.norm\.", ".group_norm."),
    (r"\.q\.", ".to_q."), (r"\.k\.", ".to_k."), (r"\.v\.", ".to_v."), (r"\.proj_out\.", ".to_out."),
]


def ldm_unet_prefixes(c) -> dict:
    """Module prefixes of the LDM U-Net (input_blocks / middle_block / output_blocks) -> fastdiff."""
    n, lpb, depths = len(c.block_out_channels), c.layers_per_block, c.depths
    table = {"input_blocks.0.0": "conv_in", "time_embed.0": "time_embedding.linear_1",
             "time_embed.2": "time_embedding.linear_2", "label_emb.0.0": "add_embedding.linear_1",
             "label_emb.0.2": "add_embedding.linear_2", "out.0": "conv_norm_out", "out.2": "conv_out",
             "middle_block.0": "mid_block.resnets.0", "middle_block.1": "mid_block.attentions.0",
             "middle_block.2": "mid_block.resnets.1"}
    k = 1
    for i in range(n):
        for j in range(lpb):
            table[f"input_blocks.{k}.0"] = f"down_blocks.{i}.resnets.{j}"
            if depths[i]:
                table[f"input_blocks.{k}.1"] = f"down_blocks.{i}.attentions.{j}"
            k += 1
        if i < n - 1:
            table[f"input_blocks.{k}.0.op"] = f"down_blocks.{i}.downsample.conv"
            k += 1
    k = 0
    for u, i in enumerate(reversed(range(n))):
        for j in range(lpb + 1):
            table[f"output_blocks.{k}.0"] = f"up_blocks.{u}.resnets.{j}"
            if depths[i]:
                table[f"output_blocks.{k}.1"] = f"up_blocks.{u}.attentions.{j}"
            if j == lpb and i > 0:
                table[f"output_blocks.{k}.{2 if depths[i] else 1}.conv"] = f"up_blocks.{u}.upsample.conv"
            k += 1
    return table


def ldm_vae_prefixes(c) -> dict:
    """Module prefixes of the LDM first stage -> fastdiff. LDM numbers the decoder's levels by
    resolution (up.0 is the last applied), fastdiff by order of use."""
    n, table = len(c.block_out_channels), {}
    for part in ("encoder", "decoder"):
        table.update({f"{part}.mid.block_1": f"{part}.mid_block.resnets.0", f"{part}.mid.attn_1":
                      f"{part}.mid_block.attentions.0", f"{part}.mid.block_2": f"{part}.mid_block.resnets.1",
                      f"{part}.norm_out": f"{part}.conv_norm_out"})
    for i in range(n):
        u = n - 1 - i
        for j in range(c.layers_per_block + 1):
            table[f"encoder.down.{i}.block.{j}"] = f"encoder.down_blocks.{i}.resnets.{j}"
            table[f"decoder.up.{u}.block.{j}"] = f"decoder.up_blocks.{i}.resnets.{j}"
        table[f"encoder.down.{i}.downsample.conv"] = f"encoder.down_blocks.{i}.downsample.conv"
        table[f"decoder.up.{u}.upsample.conv"] = f"decoder.up_blocks.{i}.upsample.conv"
    return table


def renamer(rules: list, prefixes: Optional[dict] = None, strip: str = "") -> Callable[[str], Optional[str]]:
    """key -> fastdiff name (None: not part of this model): strip the checkpoint prefix, map the
    longest matching module prefix through `prefixes`, then apply every rule in order."""
    compiled = [(re.compile(p), r) for p, r in rules]

    def rename(key: str) -> Optional[str]:
        if not key.startswith(strip):
            return None
        key = key[len(strip):]
        if prefixes:
            parts = key.split(".")
            for cut in range(len(parts) - 1, 0, -1):
                head = ".".join(parts[:cut])
                if head in prefixes:
                    key = prefixes[head] + "." + ".".join(parts[cut:])
                    break
        for pattern, repl in compiled:
            key = pattern.sub(repl, key)
        return key
    return rename


def ldm_unet_renamer(config, strip: str) -> Callable:
    return renamer(_LDM_RESBLOCK + UNET_DIFFUSERS, ldm_unet_prefixes(config), strip)


def ldm_vae_renamer(config, strip: str) -> Callable:
    return renamer(_LDM_VAE_INNER + VAE_DIFFUSERS, ldm_vae_prefixes(config), strip)


# The layout of each model's checkpoints, from their keys: (renamer, tensors that layout lacks).

def _has_prefix(keys, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def unet_layout(keys, config) -> tuple[Callable, dict]:
    """The LDM U-Net, alone or in a single file (model.diffusion_model.*), else diffusers'."""
    for strip in ("model.diffusion_model.", ""):
        if _has_prefix(keys, strip + "input_blocks."):
            return ldm_unet_renamer(config, strip), {}
    return renamer(UNET_DIFFUSERS), {}


def vae_layout(keys, config) -> tuple[Callable, dict]:
    """The LDM first stage, alone or in a single file (first_stage_model.*), else diffusers'."""
    for strip in ("first_stage_model.", ""):
        if _has_prefix(keys, strip + "encoder.down."):
            return ldm_vae_renamer(config, strip), {}
    return renamer(VAE_DIFFUSERS), {}


def dit_layout(keys, config) -> tuple[Callable, dict]:
    """diffusers' DiT, which does not store the fixed position embedding, else the original."""
    if "pos_embed.proj.weight" in keys:
        return renamer(DIT_DIFFUSERS), {
            "pos_embed": sincos_pos_embed(config.hidden_size, config.input_size // config.patch_size)}
    return renamer(DIT_ORIGINAL), {}


@dataclass(frozen=True)
class Target:
    """Where a renamer sends a source tensor that is not simply renamed: piece `piece` of `pieces`
    concatenated along dim 0 into `name` (separate q, k, v into a fused projection), and/or
    `transform`ed on the way (a reordering of a fused tensor's rows)."""
    name: str
    piece: int = 0
    pieces: int = 1
    transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None


Renamed = Union[str, Target, None]

_QKV = re.compile(r"^(.*)\.to_([qkv])\.(weight|bias)$")


def convert(source: MutableMapping, rename: Callable[[str], Renamed], target: dict,
            where: str, prepare: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> dict:
    """Pop every entry of `source` that `rename` maps, into a dict keyed by fastdiff names.
    target: the model's own {name: tensor} (shapes only). Separate q/k/v entries whose fused
    to_qkv / to_kv exists in target are concatenated, and so are the pieces of a Target; 1x1 conv
    weights meant for a Linear are reshaped; entries that map to one name twice must be equal
    (diffusers' copies of the DiT embedders). prepare() casts or moves each tensor as it is read."""
    out, pending = {}, {}
    for key in list(source.keys()):
        name = rename(key)
        if name is None:
            continue
        tensor = prepare(source.pop(key))
        if isinstance(name, Target):
            tensor = name.transform(tensor) if name.transform is not None else tensor
            if name.pieces > 1:
                _gather(name, tensor, pending, out)
                continue
            name = name.name
        if _fuse(name, tensor, target, pending, out):
            continue
        if name in out:
            if out[name].shape != tensor.shape or not torch.equal(out[name], tensor):
                raise ValueError(f"{where}: {key} maps to {name}, which another entry already set to a different "
                                 "value; fastdiff shares one copy of it")
            continue
        out[name] = tensor
    if pending:
        raise ValueError(f"{where}: incomplete fused projections: " + ", ".join(
            f"{fused} has only {''.join(sorted(slot))}" for fused, slot in pending.items()))
    for name, tensor in out.items():
        want = target.get(name)
        if want is not None and tensor.shape != want.shape and tensor.dim() == 4 and tensor.shape[2:] == (1, 1) \
                and tensor.shape[:2] == want.shape:
            out[name] = tensor.reshape(want.shape)  # a 1x1 conv is a Linear
    return out


def _fuse(name: str, tensor: torch.Tensor, target: dict, pending: dict, out: dict) -> bool:
    """Whether `name` is a separate q, k or v projection of a fused to_qkv / to_kv in target: it
    waits in pending[fused] until the other parts come, then the parts go into out concatenated."""
    m = _QKV.match(name)
    if not m or name in target:
        return False
    base, part, kind = m.groups()
    for fused, parts in ((f"{base}.to_qkv.{kind}", "qkv"), (f"{base}.to_kv.{kind}", "kv")):
        if fused in target and part in parts:
            slot = pending.setdefault(fused, {})
            slot[part] = tensor
            if len(slot) == len(parts):
                out[fused] = torch.cat([slot.pop(p) for p in parts])
                del pending[fused]
            return True
    return False


def _gather(piece: Target, tensor: torch.Tensor, pending: dict, out: dict) -> None:
    """Keep a piece in pending[name] until all have come, then concatenate them in order into out."""
    slot = pending.setdefault(piece.name, {})
    slot[f"(piece {piece.piece} of {piece.pieces})"] = tensor
    if len(slot) == piece.pieces:
        out[piece.name] = torch.cat([slot.pop(f"(piece {i} of {piece.pieces})") for i in range(piece.pieces)])
        del pending[piece.name]


def check(out: dict, target: dict, where: str) -> None:
    """Raise listing every missing key, unexpected key and wrong shape."""
    missing = sorted(set(target) - set(out))
    unexpected = sorted(set(out) - set(target))
    shapes = sorted(f"{k}: checkpoint {tuple(out[k].shape)}, model {tuple(target[k].shape)}"
                    for k in set(out) & set(target) if out[k].shape != target[k].shape)
    found = (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
    problems = [f"{label} ({len(items)}): " + ", ".join(items) for label, items in found if items]
    if problems:
        raise ValueError(f"{where}: the checkpoint does not fit the model.\n" + "\n".join(problems))
