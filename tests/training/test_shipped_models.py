"""The shipped default models sample what the prompt asks, judged by the shipped classifier, at
their default settings, from a fresh seed."""
import pytest
import torch

from fastdiff.training import checkpoint, classifier, default, evaluate


@pytest.mark.parametrize("name", default.NAMES)
def test_shipped_model_follows_the_prompt(name):
    model = default.default_model(name)
    judge = checkpoint.load(classifier.AttributeClassifier(**checkpoint.config("classifier")), "classifier")
    texts, colour, shape = evaluate.prompts(per_class=1)  # every (colour, shape) pair once
    seed = int(torch.randint(0, 2**31, ()))
    d = default.SAMPLING_DEFAULTS
    images = default.generate(model, texts, d["sampler"], d["steps"], d["guidance_scale"], seed=seed)
    assert images.shape == (len(texts), 3, 32, 32)
    # measured: 100% (U-Net) and 92% (DiT) over 96 samples; 24 samples leave room for chance
    assert classifier.accuracy(judge, images, colour, shape)[2] >= 0.75, seed
