import torch

from fastdiff.training import checkpoint, classifier, data


def test_shipped_classifier_is_accurate_on_fresh_scenes():
    model = checkpoint.load(classifier.AttributeClassifier(**checkpoint.config("classifier")), "classifier")
    seed = int(torch.randint(0, 2**31, ()))
    images, _, scenes = data.batch(1000, seed=seed)
    colour, shape, both = classifier.accuracy(model, images, scenes.colour, scenes.shape)
    assert both > 0.95, (colour, shape, both, seed)
    # and on the noise it is trained to tolerate
    noisy = classifier.augment(images, torch.Generator().manual_seed(seed))
    assert classifier.accuracy(model, noisy, scenes.colour, scenes.shape)[2] > 0.95
