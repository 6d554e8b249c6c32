"""BabyAI's instruction language as token ids: a fixed vocabulary, so ids never shift."""

from __future__ import annotations

import numpy as np

#: Every word BabyAI's grammar produces (minigrid's verifier `surface` forms); 0 pads.
VOCAB: tuple[str, ...] = (
    "<pad>",
    ",",
    "go", "to", "open", "pick", "up", "put", "next", "then", "after", "you", "and",
    "a", "the", "in", "front", "of", "behind", "on", "your", "left", "right",
    "object", "ball", "box", "key", "door",
    "red", "green", "blue", "purple", "yellow", "grey",
)  # fmt: skip
TOKEN_IDS = {word: i for i, word in enumerate(VOCAB)}
PAD = 0


def tokenize(mission: str, length: int) -> np.ndarray:
    """(length,) uint8 token ids of `mission`, padded with 0; a ValueError if it does not fit."""
    words = mission.replace(",", " , ").split()
    unknown = sorted({w for w in words if w not in TOKEN_IDS})
    if unknown:
        raise ValueError(f"mission {mission!r} has words outside BabyAI's vocabulary: {unknown}")
    if len(words) > length:
        raise ValueError(
            f"mission {mission!r} has {len(words)} tokens; the observation holds {length}"
        )
    ids = np.zeros(length, dtype=np.uint8)
    ids[: len(words)] = [TOKEN_IDS[w] for w in words]
    return ids


def detokenize(ids: np.ndarray) -> str:
    """The mission text of token ids (padding dropped); the inverse of `tokenize`."""
    return " ".join(VOCAB[i] for i in ids if i != PAD).replace(" ,", ",")
