"""Local tokenized files, memory-mapped: the OS pages in only the windows a client reads.

A path is either a flat token file (u16 unless `dtype` says otherwise) or a directory written by
`psyche-client data prepare`, whose manifest gives the dtype and the shards in order; opening
one checks every shard's presence and size (sha256 is `manifest.verify`'s job: it reads every
byte). Files and directories concatenate in the order given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from psyche_client.data.manifest import check_sizes, load_manifest
from psyche_client.data.provider import DataError, SampleIndex, TokenDataProvider, token_dtype


class LocalTokenProvider(TokenDataProvider):
    """Samples from flat token files (u16 or u32) and prepared directories, optionally shuffled
    by a seed."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        seq_len: int,
        dtype: str | None = None,
        shuffle_seed: int | None = None,
    ) -> None:
        if not paths:
            raise DataError("no data files given")
        self.seq_len = seq_len
        self._arrays: list[np.ndarray] = []
        vocabs: list[int] = []
        for p in map(Path, paths):
            if p.is_dir():
                vocabs.append(self._open_prepared(p, dtype))
            elif p.is_file():
                self._open_flat(p, dtype or "u16")
            else:
                raise DataError(f"{p}: no such data file or directory")
        self.vocab_size = max(vocabs) if vocabs else None
        self.index = SampleIndex([len(a) for a in self._arrays], seq_len, shuffle_seed)

    def _open_flat(self, p: Path, dtype: str) -> None:
        dt = token_dtype(dtype)
        size = p.stat().st_size
        if size == 0 or size % dt.itemsize:
            raise DataError(f"{p}: size {size} is not a whole number of {dtype} tokens")
        self._arrays.append(np.memmap(p, dtype=dt, mode="r"))

    def _open_prepared(self, p: Path, dtype: str | None) -> int:
        manifest = load_manifest(p)
        if dtype is not None and dtype != manifest.dtype:
            raise DataError(f"{p} holds {manifest.dtype} tokens (manifest), not {dtype}")
        dt = token_dtype(manifest.dtype)
        for shard in check_sizes(p, manifest):
            self._arrays.append(np.memmap(shard, dtype=dt, mode="r"))
        return manifest.vocab_size

    def __len__(self) -> int:
        return self.index.total

    def get(self, index: int) -> np.ndarray:
        f, start = self.index.locate(index)
        return np.asarray(self._arrays[f][start : start + self.seq_len + 1], dtype=np.int64)

    def close(self) -> None:
        self._arrays.clear()
