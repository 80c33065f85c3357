"""Upload admission: bounded concurrent uploads, per requesting peer and in total.

Shared by the libp2p (trio thread) and fast path (asyncio) servers, hence the lock. Admission
never waits: a full uploader answers BUSY at once and the fetcher rotates to another holder,
which spreads load over holders and keeps no hidden queue of waiting requests.
"""

from __future__ import annotations

import threading
from collections import Counter


class UploadLimiter:
    def __init__(self, per_peer: int, total: int) -> None:
        self.per_peer = per_peer
        self.total = total
        self._lock = threading.Lock()
        self._by_peer: Counter[bytes] = Counter()
        self._active = 0
        self.served = 0
        """Uploads admitted so far (for stats)."""

    def try_acquire(self, peer: bytes) -> bool:
        with self._lock:
            if self._active >= self.total or self._by_peer[peer] >= self.per_peer:
                return False
            self._active += 1
            self._by_peer[peer] += 1
            self.served += 1
            return True

    def release(self, peer: bytes) -> None:
        with self._lock:
            self._active -= 1
            self._by_peer[peer] -= 1
            if self._by_peer[peer] <= 0:
                del self._by_peer[peer]

    @property
    def active(self) -> int:
        with self._lock:
            return self._active


def upload_chunk(rate_limit: float, chunk: int) -> int:
    """Chunk size for an upload: smaller under a rate cap so pacing stays smooth."""
    if rate_limit <= 0:
        return chunk
    return max(16 << 10, min(chunk, int(rate_limit / 8)))
