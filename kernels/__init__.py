"""Triton kernels of fastdiff, installed as fastdiff._triton: one launcher per op, same signature
as the op's reference (fastdiff.reference), and what each can run. Validation and dispatch live in
fastdiff.ops."""
from fastdiff.backends import GPU_FLOATS, OpSupport

from .adaln import adaln
from .attention import attention
from .group_norm import group_norm
from .guidance import cfg_combine, sampler_step
from .qk_norm_rope import qk_norm_rope

SUPPORT = {
    "attention": OpSupport(GPU_FLOATS, head_dims=(1, 256)),
    "group_norm": OpSupport(GPU_FLOATS),
    "cfg_combine": OpSupport(GPU_FLOATS),
    "sampler_step": OpSupport(GPU_FLOATS),
    "adaln": OpSupport(GPU_FLOATS),
    "qk_norm_rope": OpSupport(GPU_FLOATS),
}

__all__ = ["attention", "group_norm", "cfg_combine", "sampler_step", "adaln", "qk_norm_rope", "SUPPORT"]
