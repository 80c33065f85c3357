"""Model download for a late joiner: config + every tensor, from several peers in parallel.

Each piece is a blob keyed by its sha256 in a signed manifest, so any peer may serve any piece
and each is verified on its own. Piece i prefers peer i mod n and falls back to the others, so
load spreads over the peers and a peer dying mid-transfer only costs a resume elsewhere (the
same rotate/resume/verify machinery as results).

Which manifest to download is either the first trusted one (no `select`: only for callers
that check the weights themselves) or, with `select` (warmup and resync), the one a quorum of
peers signed with identical content (`agreed_by`): every peer is asked, manifests are grouped
by what they describe (config and tensor hashes, not the signer), and only the peers of the
chosen group serve pieces. One lying peer can then neither pick the model (it is outvoted) nor
corrupt it (every piece is checked against the agreed hashes).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from psyche_client.progress import progress

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
Select = Callable[[dict[NodeId, Manifest]], "Manifest | None"]
"""Given every trusted manifest by peer, the one to download (None: no acceptable choice)."""
Check = Callable[[Manifest, bytes], None]
"""Called with the chosen manifest and its downloaded config blob before any tensor is
fetched; raises (e.g. ValueError) to refuse a model whose config is out of bounds or whose
tensors are not what that config implies, so nothing of a hostile size is downloaded."""


@dataclass
class ModelSnapshot:
    """A downloaded model; buffers are read-only views (bytes-like, not copied)."""

    config: Buffer
    tensors: dict[str, Buffer]
    manifest: Manifest
    agreeing: tuple[NodeId, ...] = ()
    """The peers whose manifests described exactly this content (with `select`)."""


ContentKey = tuple[bytes, int, tuple[tuple[str, bytes, int], ...]]


def content_key(m: Manifest) -> ContentKey:
    """What a manifest describes, without who signed it: equal keys mean identical bytes."""
    return m.config_sha256, m.config_size, tuple((t.name, t.sha256, t.size) for t in m.tensors)


def agreed_by(needed: int, acceptable: Callable[[Manifest], bool] | None = None) -> Select:
    """A `Select` that picks the content at least `needed` distinct peers signed (among the
    manifests `acceptable` lets through), or None. With `needed` a strict majority of the peers
    asked, at most one content can qualify."""

    def select(manifests: dict[NodeId, Manifest]) -> Manifest | None:
        groups: dict[ContentKey, list[Manifest]] = {}
        for node, m in manifests.items():
            if m.signer == node and (acceptable is None or acceptable(m)):
                groups.setdefault(content_key(m), []).append(m)
        best = max(groups.values(), key=len, default=[])
        return best[0] if best and len(best) >= max(1, needed) else None

    return select


async def _ask(
    node: NodeId, rpc: Rpc, trust: Callable[[Manifest], bool], want_manifest: bool
) -> tuple[str, Manifest | None]:
    if not want_manifest:
        status, info = await rpc(node, wire.OP_INFO, b"")
        raise_for_status(status)
        return info.decode(), None
    # Both at once: each RPC opens a stream, which costs round trips on a slow link.
    (status, info), (status_m, raw) = await asyncio.gather(
        rpc(node, wire.OP_INFO, b""), rpc(node, wire.OP_MANIFEST, b"")
    )
    raise_for_status(status)
    raise_for_status(status_m)
    candidate = Manifest.decode(raw)
    if not trust(candidate):
        raise ManifestError("manifest signer not trusted")
    return info.decode(), candidate


async def model_sources(
    peers: list[NodeId],
    rpc: Rpc,
    trust: Callable[[Manifest], bool],
    select: Select | None = None,
    ask_timeout: float | None = None,
) -> tuple[Manifest, list[Source]]:
    """The manifest to download and the peers to download it from.

    Without `select`: the first trusted manifest among `peers`, and every peer that answered
    INFO. With it: every peer is asked at once, `select` picks among their manifests, and the
    sources are the peers whose manifest has the chosen content (a peer silent for
    `ask_timeout` counts as not answering)."""
    if select is None:
        manifest: Manifest | None = None
        sources: list[Source] = []
        for node in peers:
            try:
                fast, got = await _ask(node, rpc, trust, manifest is None)
            except Exception as exc:  # noqa: BLE001 - try the other peers
                log.info("model peer %s unusable: %r", node.hex()[:8], exc)
                continue
            manifest = manifest or got
            sources.append(Source(node, fast, ""))
        if manifest is None or not sources:
            raise ModelUnavailable("no peer served a trusted model manifest")
        return manifest, sources

    answers = await asyncio.gather(
        *(asyncio.wait_for(_ask(node, rpc, trust, True), ask_timeout) for node in peers),
        return_exceptions=True,
    )
    manifests: dict[NodeId, Manifest] = {}
    fast_addrs: dict[NodeId, str] = {}
    for node, answer in zip(peers, answers, strict=True):
        if isinstance(answer, BaseException):
            log.info("model peer %s unusable: %r", node.hex()[:8], answer)
            continue
        fast_addrs[node], got = answer
        if got is not None:
            manifests[node] = got
    chosen = select(manifests)
    if chosen is None:
        raise ModelUnavailable(
            f"no acceptable model that enough peers agree on ({len(manifests)} of "
            f"{len(peers)} peers served a trusted manifest)"
        )
    key = content_key(chosen)
    sources = [Source(n, fast_addrs[n], "") for n, m in manifests.items() if content_key(m) == key]
    return chosen, sources


PROGRESS_MIN_BYTES = 64 << 20
"""Smaller models arrive in well under a second here: no progress report."""


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
    select: Select | None = None,
    check: Check | None = None,
) -> ModelSnapshot:
    manifest, sources = await model_sources(peers, rpc, trust, select, timeout)
    pieces = [(manifest.config_sha256, manifest.config_size)] + [
        (t.sha256, t.size) for t in manifest.tensors
    ]
    limit = asyncio.Semaphore(parallel)
    out: list[Buffer] = [b""] * len(pieces)
    total = sum(size for _, size in pieces)
    shown = (
        progress("model from peers", total, unit="bytes") if total >= PROGRESS_MIN_BYTES else None
    )

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
            if shown is not None:
                shown.advance(size)

    with shown if shown is not None else contextlib.nullcontext():
        if check is None:
            await asyncio.gather(*(get(i, d, n) for i, (d, n) in enumerate(pieces)))
        else:  # the config first, checked, then the tensors
            await get(0, *pieces[0])
            try:
                check(manifest, bytes(out[0]))
            except (ValueError, TypeError, KeyError) as e:
                raise ModelUnavailable(f"the peers' model is refused: {e}") from None
            await asyncio.gather(*(get(i, d, n) for i, (d, n) in enumerate(pieces) if i))
    tensors = {t.name: out[i + 1] for i, t in enumerate(manifest.tensors)}
    agreeing = tuple(s.node for s in sources) if select is not None else ()
    return ModelSnapshot(out[0], tensors, manifest, agreeing)
