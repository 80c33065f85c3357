"""A small, learnable, byte-level corpus generated from a seed, for tests and the demo.

Real text needs downloads or a large file in the repo; a seeded toy grammar gives text with real
structure (words, agreement, punctuation) that a tiny model learns within a few hundred steps,
and identical bytes on every machine. Tokenization is byte-level: token id = byte value (vocab
256), stored as little-endian u16 (or u32) like any other tokenized corpus.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np

from psyche_client.data.provider import token_dtype

_SUBJECTS = [
    "the cat",
    "a dog",
    "the old man",
    "my sister",
    "the farmer",
    "a small bird",
    "the teacher",
    "our neighbour",
    "the children",
    "a sailor",
]
_VERBS = ["sees", "likes", "finds", "carries", "paints", "follows", "remembers", "feeds"]
_OBJECTS = [
    "the red ball",
    "a green apple",
    "the long road",
    "a quiet river",
    "the blue door",
    "an empty boat",
    "the tall tree",
    "a warm loaf of bread",
]
_TAILS = [
    "in the morning",
    "near the house",
    "every day",
    "after the rain",
    "with great care",
    "before dinner",
    "",
]


def generate_text(n_bytes: int, seed: int = 0) -> str:
    """At least n_bytes of sentences drawn from a fixed toy grammar (deterministic per seed)."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        tail = rng.choice(_TAILS)
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
        s = (s + (" " + tail if tail else "")).capitalize() + rng.choice([". ", ". ", "! ", ".\n"])
        parts.append(s)
        size += len(s)
    return "".join(parts)


def tokenize_bytes(text: str) -> np.ndarray:
    """Byte-level tokenization: UTF-8 bytes as token ids 0..255."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)


def make_corpus(
    path: str | os.PathLike[str],
    n_tokens: int = 200_000,
    seed: int = 0,
    n_files: int = 1,
    dtype: str = "u16",
) -> list[Path]:
    """Writes n_files flat token files (about n_tokens in total) into directory `path`.

    Returns the file paths in order; feed them to LocalTokenProvider or serve them over HTTP.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokens = tokenize_bytes(generate_text(n_tokens, seed))[:n_tokens]
    files = []
    for i, part in enumerate(np.array_split(tokens, n_files)):
        f = out / f"tokens_{i:03d}.{dtype}.bin"
        part.astype(token_dtype(dtype)).tofile(f)
        files.append(f)
    return files
