"""On CUDA: the accelerated pipeline replays each step as a CUDA graph, one capture per shape,
gives diffusers' images under the numerics rule, and reads weights changed in place (a merged
LoRA) at replay, with no new capture."""
import copy

import pytest
import torch

import fastdiff
from fastdiff.testing import assert_numerics, max_error

diffusers = pytest.importorskip("diffusers")
import tiny_pipelines  # noqa: E402

pytestmark = pytest.mark.gpu

CALLS = [dict(prompt="a red ring", guidance_scale=7.5, num_inference_steps=4),
         dict(prompt=["abc", "xyz"], guidance_scale=1.0, num_inference_steps=3, height=24, width=32)]


def _check(pipes, call, seed):
    with tiny_pipelines.float32_draws():
        images = [p(**call, generator=torch.Generator("cuda").manual_seed(seed), output_type="pt").images
                  for p in pipes]
    want, want64, got = images
    assert max_error(want, want64) < 1e-3  # the oracle samples the same image
    assert pipes[2]._fastdiff.last == "fastdiff's fused loop"
    assert_numerics(got, want, want64)


def _graphs(pipe) -> int:
    return sum(p.captured_graphs for _, p in pipe._fastdiff.pipelines.values())


def test_steps_replay_cuda_graphs_and_follow_in_place_weights(tmp_path):
    sd = tiny_pipelines.sd(tmp_path, diffusers.DPMSolverMultistepScheduler).to("cuda")
    pipes = (sd, copy.deepcopy(sd).to(torch.float64), fastdiff.accelerate(copy.deepcopy(sd)))
    for i, call in enumerate(CALLS):
        _check(pipes, call, i)
    assert _graphs(pipes[2]) == 2
    assert "CUDA graphs: on" in fastdiff.explain(pipes[2])
    for pipe in pipes:
        with torch.no_grad():
            pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_v.weight.mul_(1.5)
    _check(pipes, CALLS[0], 0)
    assert _graphs(pipes[2]) == 2
