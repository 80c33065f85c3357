"""The one interface every data source implements: sample index → seq_len + 1 tokens.

A sample is a window of seq_len + 1 consecutive tokens (inputs are the first seq_len, targets the
last seq_len). The coordinator assigns sample indices; any provider given the same files must
return the same tokens for the same index, so assignments mean the same thing on every client.

Layout shared by the file-backed providers: each file (a flat array of little-endian u16 or u32
token ids) contributes (n_tokens − 1) // seq_len non-overlapping windows (stride seq_len, so one
token is shared between neighbours and no token is wasted); files are concatenated in the given
order; an optional seeded permutation shuffles sample order reproducibly.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from psyche_client.errors import UserError

if TYPE_CHECKING:  # torch loads with the first batch: `join`'s input checks import this module
    import torch

TOKEN_DTYPES: dict[str, np.dtype] = {"u16": np.dtype("<u2"), "u32": np.dtype("<u4")}


class DataError(UserError, RuntimeError):
    """A data source is missing, unreachable, malformed, or an index is out of range."""


def token_dtype(name: str) -> np.dtype:
    try:
        return TOKEN_DTYPES[name]
    except KeyError as e:
        raise DataError(f"unknown token dtype {name!r}; use one of {sorted(TOKEN_DTYPES)}") from e


class TokenDataProvider(ABC):
    """Random access to fixed-length token windows."""

    seq_len: int
    vocab_size: int | None = None
    """Vocabulary of the tokenizer the data was prepared with, where known (prepared dirs)."""
    token_limit: int | None = None
    """Once set (`require_vocab`), every batch is checked to hold only ids below it."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @abstractmethod
    def get(self, index: int) -> np.ndarray:
        """The tokens of sample `index`: int64 array of length seq_len + 1."""

    def get_batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Samples stacked into a (len(indices), seq_len + 1) int64 tensor."""
        import torch

        batch = np.stack([self.get(int(i)) for i in indices])
        self._check_ids(batch)
        return torch.from_numpy(batch)

    def require_vocab(self, model_vocab: int) -> None:
        """Refuse data tokenized with more ids than the model's embedding has, before training
        (a smaller data vocabulary is fine: padded model vocabularies); from then on a batch
        holding an id past the embedding (flat files say nothing of their tokenizer) is a
        DataError, not an index error deep inside the model."""
        if self.vocab_size is not None and self.vocab_size > model_vocab:
            raise DataError(
                f"the data was tokenized with a vocabulary of {self.vocab_size}, the model has "
                f"vocab_size {model_vocab}: prepare it with the model's tokenizer"
            )
        self.token_limit = model_vocab

    def _check_ids(self, batch: np.ndarray) -> None:
        if self.token_limit is not None and batch.size and int(batch.max()) >= self.token_limit:
            raise DataError(
                f"the data holds token id {int(batch.max())}, the model's vocab_size is "
                f"{self.token_limit}: the data was tokenized for another model"
            )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files or connections."""

    def __enter__(self) -> TokenDataProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class SampleIndex:
    """Maps a global sample index to (file number, first token) for files of known lengths."""

    file_tokens: list[int]
    seq_len: int
    shuffle_seed: int | None = None

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise DataError("seq_len must be positive")
        per_file = [max(0, (n - 1) // self.seq_len) for n in self.file_tokens]
        self._starts = np.cumsum([0, *per_file]).tolist()
        self.total = int(self._starts[-1])
        if self.total == 0:
            raise DataError(f"data holds no sample of {self.seq_len + 1} tokens")
        self._perm: np.ndarray | None = None
        if self.shuffle_seed is not None:
            rng = np.random.Generator(np.random.PCG64(self.shuffle_seed))
            self._perm = rng.permutation(self.total)

    def locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.total:
            raise DataError(f"sample index {index} out of range 0..{self.total - 1}")
        i = int(self._perm[index]) if self._perm is not None else index
        f = bisect.bisect_right(self._starts, i) - 1
        return f, (i - self._starts[f]) * self.seq_len
