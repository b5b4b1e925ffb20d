"""Plain PyTorch references of every fastdiff op: the `torch` backend and the test oracle."""
from .attention import attention
from .group_norm import group_norm
from .guidance import cfg_combine, sampler_step
from .adaln import adaln
from .qk_norm_rope import qk_norm_rope

__all__ = ["attention", "group_norm", "cfg_combine", "sampler_step", "adaln", "qk_norm_rope"]
