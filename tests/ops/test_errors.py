"""Bad input gets an error that names the op and says what was expected and what was given."""
import math

import pytest
import torch

from fastdiff import ops


def t(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda: ops.attention(t(2, 8, 4), t(2, 8, 2, 4), t(2, 8, 2, 4)), ValueError,
     r"attention: q must have 4 dimensions, got shape \(2, 8, 4\)"),
    (lambda: ops.attention(t(2, 8, 2, 4), t(2, 8, 2, 4), t(2, 9, 2, 4)), ValueError,
     r"attention: v has shape \(2, 9, 2, 4\) but k has \(2, 8, 2, 4\)"),
    (lambda: ops.attention(t(2, 8, 2, 4), t(2, 8, 3, 4), t(2, 8, 3, 4)), ValueError,
     r"expected \(B, Sk, H, D\) with B=2, H=2, D=4"),
    (lambda: ops.attention(t(2, 8, 2, 4), t(2, 8, 2, 4, dtype=torch.float16), t(2, 8, 2, 4, dtype=torch.float16)),
     TypeError, r"attention: k has dtype torch.float16 but q has torch.float32"),
    (lambda: ops.attention(t(2, 8, 2, 4).transpose(-1, -2), t(2, 8, 2, 4), t(2, 8, 2, 4)), ValueError,
     r"unit stride in its last"),
    (lambda: ops.attention([1.0], t(2, 8, 2, 4), t(2, 8, 2, 4)), TypeError,
     r"attention: q must be a torch.Tensor, got list"),
    (lambda: ops.attention(t(2, 8, 2, 0), t(2, 8, 2, 0), t(2, 8, 2, 0)), ValueError,
     r"attention: the head dim \(last dimension\) must be at least 1, got shape \(2, 8, 2, 0\)"),
    (lambda: ops.attention(t(2, 8, 2, 4), t(2, 8, 2, 4), t(2, 8, 2, 4), scale=math.nan), ValueError,
     r"attention: scale must be finite, got nan"),
    (lambda: ops.group_norm(t(2, 6, 4, 4), 4), ValueError,
     r"group_norm: num_groups must divide the 6 channels of x, got 4"),
    (lambda: ops.group_norm(t(2, 8, 4, 4), 4, weight=t(4)), ValueError,
     r"group_norm: weight must have shape \(8,\), got \(4,\)"),
    (lambda: ops.group_norm(t(8), 4), ValueError, r"group_norm: x must have at least 2 dimensions"),
    (lambda: ops.group_norm(torch.ones(2, 8, 4, dtype=torch.int64), 4), TypeError,
     r"group_norm: x must be a floating-point tensor, got torch.int64"),
    (lambda: ops.group_norm(t(2, 8, 4), 4.0), TypeError, r"group_norm: num_groups must be an int, got float"),
    (lambda: ops.cfg_combine(t(2, 4), t(2, 5), 7.5), ValueError,
     r"cfg_combine: out_uncond has shape \(2, 4\) but out_cond has \(2, 5\)"),
    (lambda: ops.cfg_combine(t(2, 4), t(2, 4), "7.5"), TypeError,
     r"cfg_combine: scale must be a real number, got str"),
    (lambda: ops.sampler_step(t(1, 4, 8, 8), t(2, 4, 8, 8), (1, 0, 1, 0, 0, 0), guidance_scale=math.nan),
     ValueError, r"sampler_step: guidance_scale must be finite, got nan"),
    (lambda: ops.sampler_step(t(1, 4, 8, 8), t(1, 4, 8, 8), (1, 0, 1, 0, 0, 0), guidance_scale=7.5),
     ValueError, r"with guidance, model_out must hold \[uncond; cond\] with shape \(2, 4, 8, 8\), got \(1, 4, 8, 8\)"),
    (lambda: ops.sampler_step(t(1, 4, 8, 8), t(2, 4, 8, 8), (1, 0, 1, 0, 0, 0)), ValueError,
     r"pass guidance_scale"),
    (lambda: ops.sampler_step(torch.tensor(1.0), t(2), (1, 0, 1, 0, 0, 0), guidance_scale=3.0), ValueError,
     r"sampler_step: with guidance, x needs a batch axis .* got a 0-d x"),
    (lambda: ops.sampler_step(t(1, 4, 8, 8), t(1, 4, 8, 8), (1, 0, 1)), TypeError,
     r"coeffs must be six numbers"),
    (lambda: ops.sampler_step(t(1, 4, 8, 8), t(1, 4, 8, 8), torch.zeros(5)), ValueError,
     r"coeffs tensor must be a float tensor of shape \(6,\)"),
    (lambda: ops.sampler_step(t(1, 4, 8, 8), t(1, 4, 8, 8), (1, 0, 1, 0, 0, 0),
                              prev=t(1, 4, 8, 8, dtype=torch.float64)),
     TypeError, r"sampler_step: prev has dtype torch.float64 but x has torch.float32"),
    (lambda: ops.sampler_step(t(1, 4, 8, 8), t(1, 4, 8, 8), (1, 0, 1, 0, 0, 0), noise=t(1, 4, 8, 7)),
     ValueError, r"sampler_step: noise has shape \(1, 4, 8, 7\) but x has \(1, 4, 8, 8\)"),
    (lambda: ops.sampler_step(t(1, 4, 8, 8), "eps", (1, 0, 1, 0, 0, 0)), TypeError,
     r"sampler_step: model_out must be a torch.Tensor, got str"),
    (lambda: ops.adaln(t(2, 5, 8), t(2, 8), t(2, 7)), ValueError,
     r"adaln: scale must be \(B, D\) = \(2, 8\) for x of shape \(2, 5, 8\), got \(2, 7\)"),
    (lambda: ops.adaln(t(2, 8), t(2, 8), t(2, 8)), ValueError, r"adaln: x must have 3 dimensions"),
    (lambda: ops.adaln(t(2, 5, 8), t(2, 8), t(2, 8), gate=t(2, 8)), ValueError,
     r"adaln: gate and residual go together; got gate without residual"),
    (lambda: ops.adaln(t(2, 5, 8), t(2, 8), t(2, 8), gate=t(2, 8), residual=t(2, 5, 8, dtype=torch.float16)),
     TypeError, r"adaln: residual has dtype torch.float16 but x has torch.float32"),
    (lambda: ops.adaln(t(2, 5, 8), t(2, 8), t(2, 8), eps=-1.0), ValueError, r"adaln: eps must be >= 0, got -1.0"),
    (lambda: ops.qk_norm_rope(t(2, 5, 3, 8), t(2, 5, 3, 8), t(8), t(6)), ValueError,
     r"qk_norm_rope: k_weight must have shape \(8,\) for the head dim of q \(2, 5, 3, 8\), got \(6,\)"),
    (lambda: ops.qk_norm_rope(t(2, 5, 3, 8), t(2, 4, 3, 8), t(8), t(8)), ValueError,
     r"qk_norm_rope: k has shape \(2, 4, 3, 8\) but q has \(2, 5, 3, 8\)"),
    (lambda: ops.qk_norm_rope(t(2, 5, 3, 8), t(2, 5, 3, 8), t(8), t(8), t(5, 8)), ValueError,
     r"qk_norm_rope: cos and sin go together; got only cos"),
    (lambda: ops.qk_norm_rope(t(2, 5, 3, 8), t(2, 5, 3, 8), t(8), t(8), t(4, 8), t(4, 8)), ValueError,
     r"qk_norm_rope: cos must be \(S, D\) = \(5, 8\) for q of shape \(2, 5, 3, 8\), got \(4, 8\)"),
    (lambda: ops.qk_norm_rope(t(2, 5, 3, 7), t(2, 5, 3, 7), t(7), t(7), t(5, 7), t(5, 7)), ValueError,
     r"qk_norm_rope: the rotary embedding rotates pairs, so the head dim must be even, got 7"),
])
def test_bad_input(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.gpu
def test_device_mismatch():
    with pytest.raises(ValueError, match=r"cfg_combine: out_uncond is on cpu but out_cond is on cuda"):
        ops.cfg_combine(t(2, 4), t(2, 4).cuda(), 7.5)
