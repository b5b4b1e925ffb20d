"""fastdiff: fast diffusion sampling on fused Triton and CUDA kernels."""
__version__ = "0.1.0"

from . import backends, ops, reference  # noqa: E402  (no GPU probing, no side effects)
from .integrations.diffusers import accelerate, explain  # noqa: E402  (imports diffusers only when called)
from .ops import use_backend  # noqa: E402

__all__ = ["backends", "ops", "reference", "use_backend", "accelerate", "explain", "__version__"]
