"""Device facts the Triton launchers plan with: asked of Triton's driver once per device and cached.

The planners take these facts as arguments, so they run (and are tested) anywhere; only the
launchers ask the device. Off a GPU (the interpreter, meta tensors) the launchers use the stand-ins
below instead.

CUDA's grid limits are architectural (the same on every GPU since sm_30), so they are constants.
"""
import functools

import triton

MAX_GRID_X = 2**31 - 1  # CUDA's limits on grid axis 0, and on axes 1 and 2
MAX_GRID_YZ = 65535

# Off a GPU: the SM count of an H100 SXM (the GPU the design's anchors were measured on), so that the
# interpreter runs the same plans; and no limit on a block's shared memory, which the interpreter
# does not have.
INTERPRETED_SM_COUNT = 132
INTERPRETED_SHARED_MEMORY = 1 << 30


@functools.lru_cache(maxsize=None)
def _properties(device_index: int) -> dict:
    return triton.runtime.driver.active.utils.get_device_properties(device_index)


def sm_count(device_index: int) -> int:
    """The device's streaming multiprocessors."""
    return _properties(device_index)["multiprocessor_count"]


def shared_memory(device_index: int) -> int:
    """The shared memory a block of the device may opt into, in bytes."""
    return _properties(device_index)["max_shared_mem"]


def sm_count_of(t) -> int:
    """The SM count of a tensor's device, the stand-in off a GPU."""
    return sm_count(t.device.index) if t.is_cuda else INTERPRETED_SM_COUNT


def shared_memory_of(t) -> int:
    """The opt-in shared memory of a tensor's device, the stand-in off a GPU."""
    return shared_memory(t.device.index) if t.is_cuda else INTERPRETED_SHARED_MEMORY


def compiled_shared_memory(t, kernel, args, kwargs):
    """The shared memory (bytes) the kernel takes compiled for these arguments on t's GPU; None off
    a GPU, where nothing compiles, or when Triton compiles in the background (then the launch finds
    out). Triton caches the compile, so the launch that follows reuses it."""
    if not t.is_cuda:
        return None
    compiled = kernel.warmup(*args, grid=(1,), **kwargs)
    return None if compiled is None else compiled.metadata.shared
