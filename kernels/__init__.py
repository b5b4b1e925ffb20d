"""Triton kernels of fastdiff, installed as fastdiff._triton: one launcher per op, same signature
as the op's reference (fastdiff.reference). Validation and dispatch live in fastdiff.ops."""
from .attention import attention
from .group_norm import group_norm
from .guidance import cfg_combine, sampler_step

__all__ = ["attention", "group_norm", "cfg_combine", "sampler_step"]
