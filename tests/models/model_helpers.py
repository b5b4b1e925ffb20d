"""Shared by the model tests: random diffusers models saved to disk, and the comparison of a
fastdiff model with the diffusers one in float32 (the numerics rule of docs/design.md, against float64) and
float64 (agreement to rounding)."""
import torch

from fastdiff.testing import assert_numerics, max_error


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every 1-D parameter: default initialisation sets norm scales to 1 and many biases
    to 0, which would hide one that is dropped, swapped or loaded into the wrong place."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def to(x, dtype):
    """Cast floating tensors (in nested dicts too), leave integer ones."""
    if isinstance(x, dict):
        return {k: to(v, dtype) for k, v in x.items()}
    return x.to(dtype) if torch.is_tensor(x) and x.is_floating_point() else x


@torch.no_grad()
def assert_matches(ours, theirs, ours64, inputs, call_ours, call_theirs):
    """ours / ours64: the fastdiff model in float32 / float64; theirs: the float32 diffusers model
    (cast to float64 here). call_*(model, *inputs) -> tensor or tuple of tensors."""
    got32 = call_ours(ours, *inputs)
    want32 = call_theirs(theirs, *inputs)
    theirs.double()
    try:
        inputs64 = [to(v, torch.float64) for v in inputs]
        want64, got64 = call_theirs(theirs, *inputs64), call_ours(ours64, *inputs64)
    finally:
        theirs.float()
    pairs = zip(*(v if isinstance(v, tuple) else (v,) for v in (got32, want32, want64, got64)))
    for i, (g32, w32, w64, g64) in enumerate(pairs):
        assert g32.dtype == torch.float32 and g64.dtype == torch.float64
        assert_numerics(g32, w32, w64, name=f"output {i} float32")
        scale = w64.abs().max().item()
        assert max_error(g64, w64) <= 1e-10 * max(1.0, scale), f"output {i} float64: {max_error(g64, w64):.3g}"
