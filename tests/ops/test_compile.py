"""torch.compile(fullgraph=True) traces through every fastdiff op with no graph break."""
import torch
import torch.nn as nn

from fastdiff import ops


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


@torch.no_grad()
def test_fullgraph_compile_matches_eager():
    torch._dynamo.reset()
    block = Block()
    x = torch.randn(2, 8, 4, 4)
    args = (x, torch.randn(4, 8, 4, 4), torch.randn_like(x), (0.9, -0.1, 0.5, 0.4, 0.1, 0.0))
    eager = block(*args)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")(*args)
    for e, c in zip(eager, compiled):
        torch.testing.assert_close(c, e)
