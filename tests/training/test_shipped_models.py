"""The shipped built-in models sample what the prompt asks, judged by the shipped classifier, at
their default settings, from a fresh seed; guidance is what makes the guided ones follow it, and
the U-Net follows the size and the place a prompt names."""
import pytest
import torch

from fastdiff import builtin
from fastdiff.training import classifier, evaluate

pytestmark = pytest.mark.slow  # 54 to 108 samples per model

# Floors on 54 samples, about 3 standard deviations of chance under the accuracies README reports
# (measured on 108): a fresh seed must not make the suite fail by luck.
FLOOR = {"unet": 0.85, "dit": 0.8, "unet-lcm": 0.75}
SCENE_FLOOR = {"size": 0.85, "position": 0.85}


def _fresh_seed() -> int:
    return int(torch.randint(0, 2**31, ()))


@pytest.mark.parametrize("name", builtin.NAMES)
def test_shipped_model_follows_the_prompt(name):
    model = builtin.sampling_model(name)
    assert model.defaults == builtin.defaults(name)
    judge = classifier.load()
    texts, targets = evaluate.prompts(per_class=1)  # every (colour, shape) pair once
    seed = _fresh_seed()

    def accuracy(scale):
        images = model.generate(texts, guidance_scale=scale, seed=seed)  # the default sampler and steps
        assert images.shape == (len(texts), 3, 32, 32)
        return classifier.accuracy(judge, images, targets)["all"]

    got = accuracy(None)
    assert got >= FLOOR[name], (got, seed)
    if model.defaults.guidance_scale != 1.0:  # the distilled model learned its guidance
        unguided = accuracy(1.0)
        assert got >= unguided + 0.15, (got, unguided, seed)


def test_shipped_unet_follows_size_and_place():
    model, judge, seed = builtin.sampling_model("unet"), classifier.load(), _fresh_seed()
    texts, targets = evaluate.scene_prompts(54, seed)  # "a small red circle at the top left"
    scores = classifier.accuracy(judge, model.generate(texts, seed=seed), targets)
    assert all(scores[a] >= floor for a, floor in SCENE_FLOOR.items()), (scores, seed)
