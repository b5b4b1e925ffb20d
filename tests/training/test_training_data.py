import torch

from fastdiff.builtin import data, tokenizer


def test_batches_are_deterministic_and_seeds_differ():
    x1, c1, s1 = data.batch(32, seed=7)
    x2, c2, s2 = data.batch(32, seed=7)
    x3, _, _ = data.batch(32, seed=8)
    assert torch.equal(x1, x2) and c1 == c2 and torch.equal(s1.label, s2.label)
    assert not torch.equal(x1, x3)
    assert x1.shape == (32, 3, data.IMAGE_SIZE, data.IMAGE_SIZE) and x1.min() >= -1 and x1.max() <= 1


def test_caption_names_the_scene():
    x, captions, scenes = data.batch(200, seed=int(torch.randint(0, 2**31, ())), p_keep=0.5)
    for i, text in enumerate(captions):
        found = data.parse(text)
        assert found["shape"] == scenes.shape[i] and found["colour"] == scenes.colour[i], text
        assert found.get("size", scenes.size[i]) == scenes.size[i], text
        assert found.get("position", scenes.position[i]) == scenes.position[i], text
    full = data.caption(scenes)
    assert all(data.parse(t).keys() == {"shape", "colour", "size", "position"} for t in full)


def test_scene_pixels_match_attributes():
    """The shape is drawn in its colour, at its grid cell (a ring around it), larger when 'large'."""
    scenes = data.random_scenes(300, torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()))))
    images = (data.render(scenes) + 1) / 2
    rgb = torch.tensor(list(data.COLOURS.values()))[scenes.colour]
    background = images[:, :, 0, 0]
    ring = data.SHAPES.index("ring")
    for i in range(len(scenes)):
        row, col = divmod(int(scenes.position[i]), 3)
        cy, cx = 8 + 8 * row, 8 + 8 * col
        if scenes.shape[i] == ring:
            assert torch.allclose(images[i, :, cy, cx], background[i], atol=1e-5)
            radius = 0.72 * list(data.SIZES.values())[scenes.size[i]]
            cx += int(radius)  # pixel centres sit at +0.5: this one is inside the band
        assert torch.allclose(images[i, :, cy, cx], rgb[i], atol=1e-5)
    area = (images - images[:, :, :1, :1]).abs().sum(1).gt(0.05).float().sum((1, 2))
    for shape in range(len(data.SHAPES)):
        same = scenes.shape == shape
        small, large = area[same & (scenes.size == 0)], area[same & (scenes.size == 1)]
        if len(small) and len(large):
            assert small.max() < large.min()


def test_tokenizer_round_trip_and_padding():
    _, captions, _ = data.batch(50, seed=3)
    ids = tokenizer.encode(captions)
    assert ids.shape == (50, tokenizer.MAX_LEN) and ids.dtype == torch.int64
    assert tokenizer.decode(ids) == captions
    empty = tokenizer.encode([""])
    assert empty.eq(0).all()
    assert tokenizer.decode(tokenizer.encode(["a zebra circle"])) == ["a <unk> circle"]
    long = " ".join(["red"] * (tokenizer.MAX_LEN + 5))
    assert tokenizer.encode([long]).shape == (1, tokenizer.MAX_LEN)
