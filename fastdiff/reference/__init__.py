"""Plain PyTorch references of every fastdiff op: the `torch` backend and the test oracle."""
from .attention import attention
from .group_norm import group_norm
from .guidance import cfg_combine, sampler_step

__all__ = ["attention", "group_norm", "cfg_combine", "sampler_step"]
