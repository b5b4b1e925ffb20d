import torch

from fastdiff.builtin import data
from fastdiff.training import classifier


def test_shipped_classifier_is_accurate_on_fresh_scenes():
    model = classifier.load()
    seed = int(torch.randint(0, 2**31, ()))
    images, _, scenes = data.batch(1000, seed=seed)
    targets = {name: getattr(scenes, name) for name in classifier.ATTRIBUTES}
    scores = classifier.accuracy(model, images, targets)
    assert min(scores.values()) > 0.95, (scores, seed)
    # and on the noise it is trained to tolerate
    noisy = classifier.augment(images, torch.Generator().manual_seed(seed))
    scores = classifier.accuracy(model, noisy, targets)
    assert min(scores.values()) > 0.95, (scores, seed)


def test_accuracy_counts_each_named_attribute_and_all_of_them():
    class Fixed(torch.nn.Module):  # predicts colour 0, shape 1, size 0, position 4 for every image
        def predict(self, images):
            n = images.shape[0]
            return {"colour": torch.zeros(n, dtype=torch.long), "shape": torch.ones(n, dtype=torch.long),
                    "size": torch.zeros(n, dtype=torch.long), "position": torch.full((n,), 4)}

    targets = {"colour": torch.tensor([0, 0, 1, 0]), "shape": torch.tensor([1, 2, 1, 1]),
               "position": torch.tensor([4, 4, 4, 0])}
    got = classifier.accuracy(Fixed(), torch.zeros(4, 3, 32, 32), targets)
    assert got == {"colour": 0.75, "shape": 0.75, "position": 0.75, "all": 0.25}
