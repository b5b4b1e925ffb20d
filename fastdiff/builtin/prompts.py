"""What the built-in models make of a prompt, said before sampling rather than left to show in the
images: words outside the captions' vocabulary (the U-Net reads each as one unknown token), words
past the tokenizer's length (dropped), more than one colour or shape (one shape of one colour is
drawn), and for the DiT, which is conditioned on the (colour, shape) class alone, the size and
position words it ignores. The DiT's classes are named here too."""
from __future__ import annotations

from . import data, tokenizer


def class_names() -> list[str]:
    """The DiT's class labels' names: label colour * len(SHAPES) + shape."""
    return [f"{colour} {shape}" for colour in data.COLOUR_NAMES for shape in data.SHAPES]


def missing_class(prompt: str) -> str | None:
    """Why the DiT cannot take `prompt`, or None: it must name a colour and a shape."""
    found = data.parse(prompt)
    if "colour" in found and "shape" in found:
        return None
    return (f"prompt {prompt!r}: the built-in DiT needs a colour ({', '.join(data.COLOUR_NAMES)}) and a shape "
            f"({', '.join(data.SHAPES)})")


def problems(model: str, prompt: str) -> list[str]:
    """What the built-in `model` (one of fastdiff.builtin.NAMES) will not follow in `prompt`, as short phrases."""
    words = tokenizer.words(prompt)
    vocab = set(tokenizer.VOCAB) - {tokenizer.PAD, tokenizer.UNK}
    found = []
    unknown = [w for w in dict.fromkeys(words) if w not in vocab]
    if unknown:
        found.append(f"unknown words {' '.join(unknown)} (the models know: {' '.join(sorted(vocab))})")
    if model != "dit" and len(words) > tokenizer.MAX_LEN:
        found.append(f"words past the {tokenizer.MAX_LEN}th dropped: {' '.join(words[tokenizer.MAX_LEN:])}")
    for what, names in (("colours", data.COLOUR_NAMES), ("shapes", data.SHAPES)):
        named = [w for w in dict.fromkeys(words) if w in names]
        if len(named) > 1:
            found.append(f"several {what} ({' '.join(named)}): one shape of one colour is drawn")
    if model == "dit":
        place = set(data.SIZE_NAMES) | {w for p in data.POSITIONS for w in p.split()} | {"at", "the"}
        ignored = [w for w in words if w in place]
        if ignored:
            found.append(f"the DiT ignores size and position: {' '.join(ignored)}")
    return found
