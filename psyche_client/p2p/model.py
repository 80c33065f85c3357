"""Model download for a late joiner: config + every tensor, from several peers in parallel.

Each piece is a blob keyed by its sha256 in a signed manifest, so any peer may serve any piece
and each is verified on its own. Piece i prefers peer i mod n and falls back to the others, so
load spreads over the peers and a peer dying mid-transfer only costs a resume elsewhere (the
same rotate/resume/verify machinery as results).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import wire
from .config import P2PConfig
from .errors import ModelUnavailable
from .host import raise_for_status
from .identity import NodeId
from .manifest import Manifest, ManifestError
from .payload_check import StreamingHashVerifier
from .store import Buffer
from .transfer import AttemptFn, FetchStats, Source, fetch_blob

log = logging.getLogger(__name__)

Rpc = Callable[[NodeId, int, bytes], Awaitable[tuple[int, bytes]]]


@dataclass
class ModelSnapshot:
    """A downloaded model; buffers are read-only views (bytes-like, not copied)."""

    config: Buffer
    tensors: dict[str, Buffer]
    manifest: Manifest


async def model_sources(
    peers: list[NodeId], rpc: Rpc, trust: Callable[[Manifest], bool]
) -> tuple[Manifest, list[Source]]:
    """The first trusted manifest among `peers`, and every peer that answered INFO."""
    manifest: Manifest | None = None
    sources: list[Source] = []
    for node in peers:
        try:
            status, info = await rpc(node, wire.OP_INFO, b"")
            raise_for_status(status)
            if manifest is None:
                status, raw = await rpc(node, wire.OP_MANIFEST, b"")
                raise_for_status(status)
                candidate = Manifest.decode(raw)
                if not trust(candidate):
                    raise ManifestError("manifest signer not trusted")
                manifest = candidate
        except Exception as exc:  # noqa: BLE001 - try the other peers
            log.info("model peer %s unusable: %r", node.hex()[:8], exc)
            continue
        sources.append(Source(node, info.decode(), ""))
    if manifest is None or not sources:
        raise ModelUnavailable("no peer served a trusted model manifest")
    return manifest, sources


async def fetch_model(
    peers: list[NodeId],
    *,
    rpc: Rpc,
    attempt: AttemptFn,
    hash_pool: concurrent.futures.Executor | None,
    config: P2PConfig,
    record: Callable[[FetchStats], None],
    trust: Callable[[Manifest], bool],
    parallel: int,
    timeout: float,
) -> ModelSnapshot:
    manifest, sources = await model_sources(peers, rpc, trust)
    pieces = [(manifest.config_sha256, manifest.config_size)] + [
        (t.sha256, t.size) for t in manifest.tensors
    ]
    limit = asyncio.Semaphore(parallel)
    out: list[Buffer] = [b""] * len(pieces)

    async def get(i: int, digest: bytes, size: int) -> None:
        order = sources[i % len(sources) :] + sources[: i % len(sources)]
        async with limit:
            stats = FetchStats()
            try:
                out[i] = await fetch_blob(
                    digest,
                    size,
                    lambda: order,
                    StreamingHashVerifier(hashlib.sha256, digest, hash_pool),
                    attempt,
                    timeout=timeout,
                    busy_backoff=config.busy_backoff,
                    stats=stats,
                )
            finally:
                record(stats)

    await asyncio.gather(*(get(i, d, n) for i, (d, n) in enumerate(pieces)))
    tensors = {t.name: out[i + 1] for i, t in enumerate(manifest.tensors)}
    return ModelSnapshot(out[0], tensors, manifest)
