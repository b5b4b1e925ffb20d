"""torch.compile(fullgraph=True) traces through every fastdiff op with no graph break, and
inductor's generated code agrees with each op's fake kernel on the layout of its outputs."""
import pytest
import torch
import torch.nn as nn

from fastdiff import ops
from fastdiff.models import UNet, UNetConfig


class Block(nn.Module):
    def __init__(self, c=8, heads=2):
        super().__init__()
        self.heads = heads
        self.norm_w, self.norm_b = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c))
        self.qkv = nn.Linear(c, 3 * c)

    def forward(self, x, eps_out, prev, coeffs):
        b, c, h, w = x.shape
        y = ops.group_norm(x, 4, self.norm_w, self.norm_b, silu=True)
        tokens = y.flatten(2).transpose(1, 2)                       # (B, HW, C)
        q, k, v = self.qkv(tokens).view(b, h * w, 3, self.heads, c // self.heads).unbind(2)
        a = ops.attention(q, k, v).reshape(b, h * w, c).transpose(1, 2).reshape(b, c, h, w)
        g = ops.cfg_combine(a, a * 0.5, 3.0)
        return ops.sampler_step(x + g, eps_out, coeffs, guidance_scale=7.5, prev=prev)


def _args(channels_last):
    x = torch.randn(2, 8, 4, 4)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x, torch.randn(4, 8, 4, 4), torch.randn_like(x), (0.9, -0.1, 0.5, 0.4, 0.1, 0.0)


@torch.no_grad()
def test_fullgraph_compile_matches_eager():
    torch._dynamo.reset()
    block, args = Block(), _args(False)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")(*args)
    for e, c in zip(block(*args), compiled):
        torch.testing.assert_close(c, e)


@torch.no_grad()
def test_inductor_compile_of_channels_last_input_matches_eager():
    torch._dynamo.reset()
    block, args = Block(), _args(True)
    compiled = torch.compile(block, fullgraph=True)(*args)  # inductor checks each output's strides
    for e, c in zip(block(*args), compiled):
        torch.testing.assert_close(c, e)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "triton", "cuda"])
@torch.no_grad()
def test_inductor_compiles_the_unet(backend):
    """Inductor lays convolutions out channels-last on the GPU; the ops in between must still
    produce the layouts their fake kernels promised."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    config = UNetConfig.tiny()
    unet = UNet(config).cuda().half().eval()
    x = torch.randn(2, config.in_channels, config.sample_size, config.sample_size, device="cuda").half()
    t = torch.tensor([999.0, 10.0], device="cuda")
    ctx = torch.randn(2, 77, config.cross_attention_dim, device="cuda").half()
    with ops.use_backend(backend, fallback=True):
        eager = unet(x, t, ctx)
        compiled = torch.compile(unet, fullgraph=True)(x, t, ctx)
    torch.testing.assert_close(compiled, eager, rtol=2e-2, atol=2e-2)
