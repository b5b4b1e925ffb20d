"""LoRA after fastdiff.accelerate changes the images as it does in diffusers: unfused LoRA layers
run diffusers' loop (one warning); fuse_lora merges into the shared tensors and the fused loop
serves the call; unfuse_lora and a LoRA swap follow, with no rebuild of the model. Needs peft, as
diffusers' LoRA loading does."""
import copy
import warnings

import pytest
import torch

import fastdiff
from fastdiff.testing import assert_numerics, max_error

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")
import tiny_pipelines  # noqa: E402

FUSED = "fastdiff's fused loop"


def _lora(unet, seed: int) -> dict:
    """A rank-2 LoRA on some self- and cross-attention projections, in diffusers' PEFT layout."""
    g, out = torch.Generator().manual_seed(seed), {}
    for name, m in unet.named_modules():
        if name.endswith(("attn1.to_q", "attn1.to_v", "attn2.to_k", "attn2.to_out.0")):
            out[f"unet.{name}.lora_A.weight"] = torch.randn(2, m.in_features, generator=g) * 0.3
            out[f"unet.{name}.lora_B.weight"] = torch.randn(m.out_features, 2, generator=g) * 0.3
    return out


def _images(pipe):
    with tiny_pipelines.float32_draws():
        return pipe("ab", num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0)).images


def test_lora_load_fuse_unfuse_swap(tmp_path):
    sd = tiny_pipelines.sd(tmp_path, diffusers.DDIMScheduler)
    plain, ref = copy.deepcopy(sd), copy.deepcopy(sd).to(torch.float64)
    fast = fastdiff.accelerate(copy.deepcopy(sd), backend="torch")
    base = _images(plain)
    pipes = (plain, ref, fast)

    def each(fn):
        for pipe in pipes:
            fn(pipe)

    def check(served: bool):
        want, want64 = _images(plain), _images(ref)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = _images(fast)
        ours = [str(w.message) for w in caught if "fastdiff" in str(w.message)]
        if served:
            assert fast._fastdiff.last == FUSED and not ours
            assert max_error(want, want64) < 1e-4  # the oracle samples the same image
            assert_numerics(got, want, want64)
        else:
            assert len(ours) == 1 and "LoRA layers not fused" in ours[0]
            assert torch.equal(got, want)
        assert (want - base).abs().max() > 1e-2  # the LoRA changes the images
        return got

    each(lambda p: p.load_lora_weights(_lora(sd.unet, 1), adapter_name="one"))
    check(served=False)
    each(lambda p: p.fuse_lora())
    check(served=True)
    model, pipelines = fast._fastdiff.shared["unet"].model, dict(fast._fastdiff.pipelines)
    mine = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert all(p.untyped_storage().data_ptr() in mine for n, p in fast.unet.named_parameters() if "lora_" not in n)
    each(lambda p: p.unfuse_lora())
    check(served=False)
    each(lambda p: (p.unload_lora_weights(), p.load_lora_weights(_lora(sd.unet, 2), adapter_name="two"),
                    p.fuse_lora()))
    check(served=True)
    # the swap merged into the shared weights in place: the same model and sampling pipeline (on
    # CUDA, the same captured graphs) serve it
    assert fast._fastdiff.shared["unet"].model is model
    assert all(fast._fastdiff.pipelines[k] is v for k, v in pipelines.items())
