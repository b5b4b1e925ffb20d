import torch

from fastdiff.builtin import data
from fastdiff.training import classifier


def test_shipped_classifier_is_accurate_on_fresh_scenes():
    model = classifier.load()
    seed = int(torch.randint(0, 2**31, ()))
    images, _, scenes = data.batch(1000, seed=seed)
    colour, shape, both = classifier.accuracy(model, images, scenes.colour, scenes.shape)
    assert both > 0.95, (colour, shape, both, seed)
    # and on the noise it is trained to tolerate
    noisy = classifier.augment(images, torch.Generator().manual_seed(seed))
    assert classifier.accuracy(model, noisy, scenes.colour, scenes.shape)[2] > 0.95
