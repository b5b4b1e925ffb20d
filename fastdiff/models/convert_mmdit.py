"""Checkpoint key layouts of the SD3 and Flux MM-DiTs -> fastdiff names, written as data as in
fastdiff.models.convert: regex rules per layout, then the pieces that concatenate into one fused
tensor and the tensors whose halves swap.

fastdiff keeps the original checkpoints' fused tensors (one QKV projection per stream, Flux's
single-block linear1 holding QKV and the MLP input) and their (shift, scale) order of the final
modulations; diffusers splits the first and stores the second as (scale, shift)."""
from __future__ import annotations

import re
from typing import Callable, Optional

import torch

from .convert import Target, renamer

_PREFIXES = ("model.diffusion_model.", "")  # a whole single-file checkpoint, or the transformer alone

SD3_ORIGINAL = [
    (r"\.adaLN_modulation\.1\.", ".modulation."),
    (r"\.(attn2?)\.ln_([qk])\.", r".\1.norm_\2."),
    (r"^([ty])_embedder\.mlp\.0\.", r"\1_embedder.linear_1."),
    (r"^([ty])_embedder\.mlp\.2\.", r"\1_embedder.linear_2."),
]

SD3_DIFFUSERS = [
    (r"^pos_embed\.pos_embed$", "pos_embed"),
    (r"^pos_embed\.proj\.", "x_embedder.proj."),
    (r"^time_text_embed\.timestep_embedder\.", "t_embedder."),
    (r"^time_text_embed\.text_embedder\.", "y_embedder."),
    (r"^transformer_blocks\.(\d+)\.norm1\.linear\.", r"joint_blocks.\1.x_block.modulation."),
    (r"^transformer_blocks\.(\d+)\.norm1_context\.linear\.", r"joint_blocks.\1.context_block.modulation."),
    (r"^transformer_blocks\.(\d+)\.attn\.add_([qkv])_proj\.", r"joint_blocks.\1.context_block.attn.to_\2."),
    (r"^transformer_blocks\.(\d+)\.attn\.norm_added_([qk])\.", r"joint_blocks.\1.context_block.attn.norm_\2."),
    (r"^transformer_blocks\.(\d+)\.attn\.to_add_out\.", r"joint_blocks.\1.context_block.attn.proj."),
    (r"^transformer_blocks\.(\d+)\.(attn2?)\.to_out\.0\.", r"joint_blocks.\1.x_block.\2.proj."),
    (r"^transformer_blocks\.(\d+)\.(attn2?)\.", r"joint_blocks.\1.x_block.\2."),
    (r"^transformer_blocks\.(\d+)\.ff_context\.net\.0\.proj\.", r"joint_blocks.\1.context_block.mlp.fc1."),
    (r"^transformer_blocks\.(\d+)\.ff_context\.net\.2\.", r"joint_blocks.\1.context_block.mlp.fc2."),
    (r"^transformer_blocks\.(\d+)\.ff\.net\.0\.proj\.", r"joint_blocks.\1.x_block.mlp.fc1."),
    (r"^transformer_blocks\.(\d+)\.ff\.net\.2\.", r"joint_blocks.\1.x_block.mlp.fc2."),
    (r"^norm_out\.linear\.", "final_layer.modulation."),
    (r"^proj_out\.", "final_layer.linear."),
]

FLUX_ORIGINAL = [
    (r"^(time_in|vector_in|guidance_in)\.in_layer\.", r"\1.linear_1."),
    (r"^(time_in|vector_in|guidance_in)\.out_layer\.", r"\1.linear_2."),
    (r"^double_blocks\.(\d+)\.(img|txt)_mod\.lin\.", r"double_blocks.\1.\2.modulation."),
    (r"^double_blocks\.(\d+)\.(img|txt)_attn\.norm\.query_norm\.scale$", r"double_blocks.\1.\2.attn.norm_q.weight"),
    (r"^double_blocks\.(\d+)\.(img|txt)_attn\.norm\.key_norm\.scale$", r"double_blocks.\1.\2.attn.norm_k.weight"),
    (r"^double_blocks\.(\d+)\.(img|txt)_attn\.", r"double_blocks.\1.\2.attn."),
    (r"^double_blocks\.(\d+)\.(img|txt)_mlp\.0\.", r"double_blocks.\1.\2.mlp.fc1."),
    (r"^double_blocks\.(\d+)\.(img|txt)_mlp\.2\.", r"double_blocks.\1.\2.mlp.fc2."),
    (r"^single_blocks\.(\d+)\.modulation\.lin\.", r"single_blocks.\1.modulation."),
    (r"^single_blocks\.(\d+)\.norm\.query_norm\.scale$", r"single_blocks.\1.norm_q.weight"),
    (r"^single_blocks\.(\d+)\.norm\.key_norm\.scale$", r"single_blocks.\1.norm_k.weight"),
    (r"^final_layer\.adaLN_modulation\.1\.", "final_layer.modulation."),
]

FLUX_DIFFUSERS = [
    (r"^x_embedder\.", "img_in."),
    (r"^context_embedder\.", "txt_in."),
    (r"^time_text_embed\.timestep_embedder\.", "time_in."),
    (r"^time_text_embed\.text_embedder\.", "vector_in."),
    (r"^time_text_embed\.guidance_embedder\.", "guidance_in."),
    (r"^transformer_blocks\.(\d+)\.norm1\.linear\.", r"double_blocks.\1.img.modulation."),
    (r"^transformer_blocks\.(\d+)\.norm1_context\.linear\.", r"double_blocks.\1.txt.modulation."),
    (r"^transformer_blocks\.(\d+)\.attn\.add_([qkv])_proj\.", r"double_blocks.\1.txt.attn.to_\2."),
    (r"^transformer_blocks\.(\d+)\.attn\.norm_added_([qk])\.", r"double_blocks.\1.txt.attn.norm_\2."),
    (r"^transformer_blocks\.(\d+)\.attn\.to_add_out\.", r"double_blocks.\1.txt.attn.proj."),
    (r"^transformer_blocks\.(\d+)\.attn\.to_out\.0\.", r"double_blocks.\1.img.attn.proj."),
    (r"^transformer_blocks\.(\d+)\.attn\.", r"double_blocks.\1.img.attn."),
    (r"^transformer_blocks\.(\d+)\.ff_context\.net\.0\.proj\.", r"double_blocks.\1.txt.mlp.fc1."),
    (r"^transformer_blocks\.(\d+)\.ff_context\.net\.2\.", r"double_blocks.\1.txt.mlp.fc2."),
    (r"^transformer_blocks\.(\d+)\.ff\.net\.0\.proj\.", r"double_blocks.\1.img.mlp.fc1."),
    (r"^transformer_blocks\.(\d+)\.ff\.net\.2\.", r"double_blocks.\1.img.mlp.fc2."),
    (r"^single_transformer_blocks\.(\d+)\.norm\.linear\.", r"single_blocks.\1.modulation."),
    (r"^single_transformer_blocks\.(\d+)\.attn\.norm_([qk])\.", r"single_blocks.\1.norm_\2."),
    (r"^single_transformer_blocks\.(\d+)\.attn\.to_([qkv])\.", r"single_blocks.\1.linear1_\2."),
    (r"^single_transformer_blocks\.(\d+)\.proj_mlp\.", r"single_blocks.\1.linear1_mlp."),
    (r"^single_transformer_blocks\.(\d+)\.proj_out\.", r"single_blocks.\1.linear2."),
    (r"^norm_out\.linear\.", "final_layer.modulation."),
    (r"^proj_out\.", "final_layer.linear."),
]

# diffusers' separate projections -> (fused name, its pieces in order)
_QKV_PIECES = (re.compile(r"^(.*\.attn2?)\.to_([qkv])\.(weight|bias)$"), r"\1.qkv.\3", ("q", "k", "v"))
_LINEAR1_PIECES = (re.compile(r"^(single_blocks\.\d+)\.linear1_(q|k|v|mlp)\.(weight|bias)$"), r"\1.linear1.\3",
                   ("q", "k", "v", "mlp"))


def swap_halves(t: torch.Tensor) -> torch.Tensor:
    """(scale, shift) rows <-> (shift, scale) rows."""
    return torch.cat(t.chunk(2)[::-1])


def _diffusers_renamer(rules: list, pieces: tuple, swapped: re.Pattern) -> Callable[[str], object]:
    base = renamer(rules)

    def rename(key: str):
        name = base(key)
        for pattern, fused, order in pieces:
            m = pattern.match(name)
            if m:
                return Target(m.expand(fused), order.index(m.group(2)), len(order))
        return Target(name, transform=swap_halves) if swapped.match(name) else name
    return rename


def _original_prefix(keys, block: str) -> Optional[str]:
    for prefix in _PREFIXES:
        if any(k.startswith(prefix + block) for k in keys):
            return prefix
    return None


def sd3_original_prefix(keys) -> Optional[str]:
    """The prefix of an original SD3 checkpoint's transformer keys, or None for another layout."""
    return _original_prefix(keys, "joint_blocks.")


def flux_original_prefix(keys) -> Optional[str]:
    """The prefix of an original Flux checkpoint's transformer keys, or None for another layout."""
    return _original_prefix(keys, "double_blocks.")


def sd3_layout(keys, config) -> tuple[Callable, dict]:
    """The original SD3 transformer, alone or in a single file (model.diffusion_model.*), else diffusers'."""
    prefix = sd3_original_prefix(keys)
    if prefix is not None:
        return renamer(SD3_ORIGINAL, strip=prefix), {}
    last = config.num_layers - 1  # its text stream's modulation is a final one: (shift, scale)
    swapped = re.compile(rf"^(final_layer|joint_blocks\.{last}\.context_block)\.modulation\.")
    return _diffusers_renamer(SD3_DIFFUSERS, (_QKV_PIECES,), swapped), {}


def flux_layout(keys, config) -> tuple[Callable, dict]:
    """The original Flux transformer, alone or in a single file (model.diffusion_model.*), else diffusers'."""
    prefix = flux_original_prefix(keys)
    if prefix is not None:
        return renamer(FLUX_ORIGINAL, strip=prefix), {}
    swapped = re.compile(r"^final_layer\.modulation\.")
    return _diffusers_renamer(FLUX_DIFFUSERS, (_QKV_PIECES, _LINEAR1_PIECES), swapped), {}
