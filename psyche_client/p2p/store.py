"""Blobs this node can serve, keyed by 32-byte content key (result commitment or sha256).

Results are tagged with their step and pruned once two steps old, so memory stays bounded by
what the pipeline can still ask for (the current and previous step); model tensors are pinned
until replaced.
"""

from __future__ import annotations

Buffer = bytes | memoryview
"""A payload: bytes we made, or the read-only view a fetch returns (no copy)."""


class BlobStore:
    def __init__(self) -> None:
        self._blobs: dict[bytes, Buffer] = {}
        self._step: dict[bytes, int | None] = {}

    def put(self, key: bytes, data: Buffer, step: int | None) -> None:
        self._blobs[key] = data
        self._step[key] = step

    def get(self, key: bytes) -> Buffer | None:
        return self._blobs.get(key)

    def __contains__(self, key: bytes) -> bool:
        return key in self._blobs

    def prune_before(self, step: int) -> int:
        """Drop step-tagged blobs older than `step`; returns how many went."""
        old = [k for k, s in self._step.items() if s is not None and s < step]
        for k in old:
            del self._blobs[k]
            del self._step[k]
        return len(old)

    def drop_pinned(self) -> None:
        for k in [k for k, s in self._step.items() if s is None]:
            del self._blobs[k]
            del self._step[k]

    @property
    def total_bytes(self) -> int:
        return sum(len(b) for b in self._blobs.values())
