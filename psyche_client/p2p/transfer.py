"""Fetching one blob from whichever holders can give it: rotate, resume, verify.

A fetch fills one preallocated buffer of the announced size (bounded by config), so memory is
known up front and nothing is buffered beyond it. Each attempt asks one source for the rest of
the blob from the current offset; whatever arrived before a failure is kept and the next source
continues from there. A source is dropped for this blob on EOF, short read, idle timeout or
refusal; BUSY and NOT_FOUND only pause it briefly (it may have capacity or the blob soon).
The finished buffer is checked with the caller's verifier. On a mismatch with one contributor,
that source provably lied and is dropped alone. With several, the liar cannot be told apart, so
nobody is dropped: the fetch restarts from zero in single-source mode, where each attempt must
deliver the whole blob from one source (a failure mid-way discards its bytes instead of letting
the next source resume them), so every later mismatch names its one source. Dropping every
contributor let one poisoned holder (any member may HAVE a claimed commitment) take the honest
announcer out of the fetch with it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from . import wire
from .identity import NodeId
from .payload_check import Verifier

log = logging.getLogger(__name__)

FAST = "fast"
P2P = "p2p"


@dataclass(frozen=True)
class Source:
    """One holder of a blob and how to reach it."""

    node: NodeId
    fast_addr: str = ""
    p2p_addr: str = ""


class FetchFailed(Exception):
    """No source delivered a verified copy within the timeout."""


class Progress:
    """How far an attempt got. `pos` may be written from the trio thread; `notify` is only
    called by attempts that run on the event loop (the fast path)."""

    def __init__(self, pos: int, notify: Callable[[int], None] | None = None) -> None:
        self.pos = pos
        self.notify = notify

    def advance(self, pos: int) -> None:
        self.pos = pos
        if self.notify is not None:
            self.notify(pos)


AttemptFn = Callable[[Source, str, bytes, memoryview, int, Progress, float], Awaitable[None]]
"""(source, transport, key, dest, offset, progress, budget_s) -> fills dest[offset:]."""


@dataclass
class FetchStats:
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    transports: list[str] = field(default_factory=list)
    restarts: int = 0
    resumed_bytes: int = 0
    busy: int = 0
    liars: set[NodeId] = field(default_factory=set)


async def fetch_blob(
    key: bytes,
    size: int,
    sources: Callable[[], list[Source]],
    verifier: Verifier,
    attempt: AttemptFn,
    *,
    timeout: float,
    busy_backoff: float,
    stats: FetchStats | None = None,
) -> memoryview:
    """Return the verified blob (a read-only view, no copy) or raise FetchFailed once
    `timeout` seconds have passed."""
    stats = stats if stats is not None else FetchStats()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    buf = bytearray(size)
    view = memoryview(buf)
    offset = 0
    whole = False
    """Single-source mode: entered after a mismatch that more than one source fed."""
    contributors: set[NodeId] = set()
    bad: set[tuple[NodeId, str]] = set()
    paused_until: dict[NodeId, float] = {}
    order: dict[NodeId, float] = {}
    verifier.restart()

    def feed(pos: int) -> None:
        verifier.feed(view, pos)

    while True:
        if offset == size:
            if await verifier.finish(view):
                return view.toreadonly()
            stats.failures.append("verify")
            stats.restarts += 1
            if len(contributors) == 1:
                # One source sent every byte: it provably served data that does not match the
                # signed commitment. Only it is dropped.
                stats.liars.update(contributors)
                for node in contributors:
                    bad.add((node, FAST))
                    bad.add((node, P2P))
                log.warning("blob %s failed verification; dropping its source", key.hex()[:12])
            else:
                whole = True
                log.warning(
                    "blob %s failed verification with %d sources; fetching it again from one "
                    "source at a time",
                    key.hex()[:12],
                    len(contributors),
                )
            contributors.clear()
            offset = 0
            verifier.restart()
        now = loop.time()
        if now >= deadline:
            raise FetchFailed(f"blob {key.hex()[:12]}: timeout; failures {stats.failures[-5:]}")
        pick = _pick(sources(), bad, paused_until, order, now)
        if pick is None:
            await asyncio.sleep(min(busy_backoff, max(0.0, deadline - now)))
            continue
        src, transport = pick
        progress = Progress(offset, feed)
        stats.attempts += 1
        stats.transports.append(transport)
        try:
            await attempt(src, transport, key, view, offset, progress, deadline - now)
        except wire.SourceBusy:
            stats.busy += 1
            paused_until[src.node] = loop.time() + busy_backoff
        except wire.NotFound:
            paused_until[src.node] = loop.time() + 4 * busy_backoff
        except (wire.TransferError, OSError, Exception) as exc:  # noqa: BLE001
            stats.failures.append(f"{transport}:{exc!r}"[:200])
            bad.add((src.node, transport))
            if transport == FAST and "timeout" in str(exc):
                # A silent fast path usually means a frozen or dead process: skip its p2p too.
                bad.add((src.node, P2P))
        if progress.pos > offset:
            if whole and progress.pos < size:
                # Single-source mode: a partial copy is not resumed by another source.
                offset = 0
                verifier.restart()
                continue
            contributors.add(src.node)
            if progress.pos < size:
                stats.resumed_bytes += progress.pos - offset
            offset = progress.pos
            verifier.feed(view, offset)


def _pick(
    candidates: list[Source],
    bad: set[tuple[NodeId, str]],
    paused_until: dict[NodeId, float],
    order: dict[NodeId, float],
    now: float,
) -> tuple[Source, str] | None:
    """Next (source, transport): random but stable order over sources (spreads a fan-out over
    holders), fast path before libp2p for each."""
    options: list[tuple[float, int, Source, str]] = []
    for src in candidates:
        if paused_until.get(src.node, 0.0) > now:
            continue
        rank = order.setdefault(src.node, random.random())
        if src.fast_addr and (src.node, FAST) not in bad:
            options.append((rank, 0, src, FAST))
        elif (src.node, P2P) not in bad:
            options.append((rank, 1, src, P2P))
    if not options:
        return None
    options.sort(key=lambda o: (o[0], o[1]))
    _, _, src, transport = options[0]
    return src, transport
