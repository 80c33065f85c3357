"""Tokenized files served by any static HTTP server, read with byte-range requests.

Only the bytes of the requested window cross the network (one `Range: bytes=a-b` request per
sample), so a client needs no local copy of the dataset. File sizes are learned once with HEAD
(or, for servers that omit Content-Length on HEAD, a one-byte range request). Transient failures
(connection errors, timeouts, 5xx, 429) are retried with exponential backoff; every request has a
bounded timeout, so a dead server surfaces as a DataError instead of a hang.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import httpx
import numpy as np

from psyche_client.data.provider import DataError, SampleIndex, TokenDataProvider, token_dtype

_RETRY_STATUS = {429, 500, 502, 503, 504}


class HttpTokenProvider(TokenDataProvider):
    """Samples from flat token files at the given URLs (same layout as LocalTokenProvider)."""

    def __init__(
        self,
        urls: Sequence[str],
        seq_len: int,
        dtype: str = "u16",
        shuffle_seed: int | None = None,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        client: httpx.Client | None = None,
    ) -> None:
        if not urls:
            raise DataError("no data URLs given")
        self.seq_len = seq_len
        self.urls = list(urls)
        self.dt = token_dtype(dtype)
        self.retries = retries
        self.backoff_s = backoff_s
        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=True)
        sizes = [self._size(u) for u in self.urls]
        for u, s in zip(self.urls, sizes, strict=True):
            if s == 0 or s % self.dt.itemsize:
                raise DataError(f"{u}: size {s} is not a whole number of {dtype} tokens")
        self.index = SampleIndex([s // self.dt.itemsize for s in sizes], seq_len, shuffle_seed)

    def _request(self, method: str, url: str, headers: dict[str, str]) -> httpx.Response:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                resp = self._client.request(method, url, headers=headers)
                if resp.status_code not in _RETRY_STATUS:
                    return resp
                last = DataError(f"{url}: HTTP {resp.status_code}")
            except httpx.TransportError as e:  # connect/read errors and timeouts
                last = e
            if attempt < self.retries:
                time.sleep(self.backoff_s * (2**attempt))
        raise DataError(f"{url}: failed after {self.retries + 1} attempts ({last})")

    def _size(self, url: str) -> int:
        resp = self._request("HEAD", url, {})
        if resp.status_code == 404:
            raise DataError(f"{url}: no such data file (HTTP 404)")
        if resp.status_code == 200 and "content-length" in resp.headers:
            return int(resp.headers["content-length"])
        resp = self._request("GET", url, {"Range": "bytes=0-0"})
        cr = resp.headers.get("content-range", "")
        if resp.status_code != 206 or "/" not in cr:
            raise DataError(f"{url}: server gave no size (HTTP {resp.status_code})")
        try:
            return int(cr.rsplit("/", 1)[1])
        except ValueError as e:
            raise DataError(f"{url}: unreadable Content-Range {cr!r}") from e

    def __len__(self) -> int:
        return self.index.total

    def get(self, index: int) -> np.ndarray:
        f, start = self.index.locate(index)
        first = start * self.dt.itemsize
        n = (self.seq_len + 1) * self.dt.itemsize
        url = self.urls[f]
        resp = self._request("GET", url, {"Range": f"bytes={first}-{first + n - 1}"})
        if resp.status_code != 206:
            raise DataError(f"{url}: expected HTTP 206 for a range request, got {resp.status_code}")
        body = resp.content
        if len(body) != n:
            raise DataError(f"{url}: range {first}+{n} returned {len(body)} bytes")
        return np.frombuffer(body, dtype=self.dt).astype(np.int64)

    def close(self) -> None:
        self._client.close()
