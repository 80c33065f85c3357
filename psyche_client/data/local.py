"""Local tokenized files, memory-mapped: the OS pages in only the windows a client reads."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from psyche_client.data.provider import DataError, SampleIndex, TokenDataProvider, token_dtype


class LocalTokenProvider(TokenDataProvider):
    """Samples from one or more flat token files (u16 or u32), optionally shuffled by a seed."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        seq_len: int,
        dtype: str = "u16",
        shuffle_seed: int | None = None,
    ) -> None:
        if not paths:
            raise DataError("no data files given")
        self.seq_len = seq_len
        dt = token_dtype(dtype)
        self._arrays: list[np.ndarray] = []
        for p in map(Path, paths):
            if not p.is_file():
                raise DataError(f"{p}: no such data file")
            size = p.stat().st_size
            if size == 0 or size % dt.itemsize:
                raise DataError(f"{p}: size {size} is not a whole number of {dtype} tokens")
            self._arrays.append(np.memmap(p, dtype=dt, mode="r"))
        self.index = SampleIndex([len(a) for a in self._arrays], seq_len, shuffle_seed)

    def __len__(self) -> int:
        return self.index.total

    def get(self, index: int) -> np.ndarray:
        f, start = self.index.locate(index)
        return np.asarray(self._arrays[f][start : start + self.seq_len + 1], dtype=np.int64)

    def close(self) -> None:
        self._arrays.clear()
