import os
import zlib

import pytest
import torch

# Without a GPU the Triton kernels run under the interpreter; it is read when kernels are
# decorated, so it must be set before fastdiff._triton is first imported. The CUDA kernels run
# on the CPU too, built for it (fastdiff._C_host), wherever that build exists.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("FASTDIFF_CUDA_EMULATE", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Fresh random inputs every run; the seed is printed so a failure can be replayed with
# FASTDIFF_TEST_SEED=<seed>.
SEED = int(os.environ.get("FASTDIFF_TEST_SEED", int.from_bytes(os.urandom(4), "little")))


def pytest_report_header(config):
    return f"fastdiff test seed: {SEED} (FASTDIFF_TEST_SEED)"


@pytest.fixture(autouse=True)
def _seed(request):
    torch.manual_seed(SEED + zlib.crc32(request.node.nodeid.encode()))
