"""Word-level tokenizer over the closed vocabulary of the procedural captions."""
from __future__ import annotations

import torch

from . import data

PAD, UNK = "<pad>", "<unk>"
MAX_LEN = 12  # the longest caption, "a small red circle at the top left", has 8 words


def _vocab() -> tuple[str, ...]:
    words = [PAD, UNK, "a", "at", "the", *data.SIZE_NAMES, *data.COLOUR_NAMES, *data.SHAPES]
    for pos in data.POSITIONS:
        words += [w for w in pos.split() if w not in words]
    return tuple(words)


VOCAB = _vocab()
_INDEX = {w: i for i, w in enumerate(VOCAB)}


def words(text: str) -> list[str]:
    """The words of a caption as the tokenizer reads them."""
    return text.lower().replace(",", " ").replace(".", " ").split()


def encode(texts: list[str] | str, max_len: int = MAX_LEN) -> torch.Tensor:
    """Captions -> (N, max_len) int64 token ids, padded with PAD (id 0); unknown words -> UNK;
    words past max_len are dropped."""
    if isinstance(texts, str):
        texts = [texts]
    ids = torch.zeros(len(texts), max_len, dtype=torch.int64)
    for i, text in enumerate(texts):
        kept = words(text)[:max_len]
        ids[i, : len(kept)] = torch.tensor([_INDEX.get(w, _INDEX[UNK]) for w in kept], dtype=torch.int64)
    return ids


def decode(ids: torch.Tensor) -> list[str]:
    """(N, L) token ids -> captions (PAD dropped)."""
    return [" ".join(VOCAB[i] for i in row.tolist() if i != 0) for row in ids.view(-1, ids.shape[-1])]
