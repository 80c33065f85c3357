"""P2PNode: the one asyncio-facing object of the p2p layer.

The client loop owns a P2PNode per run. It publishes its own result each step, consumes
validated announcements from `announcements`, fetches their payloads (verified before they are
returned), pulls what gossip missed at the round deadline, and shares the model at warmup.
Run state (membership, which announcements are acceptable, how to verify a payload) comes in as
callables so the consensus core can be wired in without this package depending on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import wire
from .addr import advertised_host
from .book import RETAINED_STEPS, AnnouncementBook, BookStats
from .bridge import TrioThread
from .config import P2PConfig
from .errors import P2PError
from .fastpath import FastPathServer, fast_fetch
from .host import Libp2pHost
from .identity import NodeId, NodeKey
from .limits import UploadLimiter
from .manifest import Manifest
from .messages import KIND_ANNOUNCE, Announcement
from .model import Check, ModelSnapshot, Select, fetch_model
from .payload_check import Hasher, StreamingHashVerifier, Verifier, WholeVerifier
from .store import BlobStore, Buffer
from .transfer import FAST, FetchStats, Progress, Source, fetch_blob

log = logging.getLogger(__name__)

IsMember = Callable[[NodeId], bool]
ValidateAnnouncement = Callable[[Announcement], "str | None"]
VerifyPayload = Callable[[Announcement, memoryview], bool]
PayloadHasher = Callable[[Announcement], Hasher]


def sha256_commitment(payload: Buffer) -> bytes:
    """First-cut commitment; the engine's commitment(run_id, step, batch_id, payload) replaces it
    through `P2PNode(commit=..., payload_hasher=...)` (or `verify_payload=...`)."""
    return hashlib.sha256(payload).digest()


@dataclass
class NodeStats(BookStats):
    queue_dropped: int = 0
    fetched: int = 0
    fetch_failed: int = 0
    fetch_transports: dict[str, int] = field(default_factory=dict)
    fetch_failures: list[str] = field(default_factory=list)
    """Why single attempts failed (most recent 50), e.g. 'fast:TransferError('eof')'."""
    resumed_bytes: int = 0
    """Bytes kept from attempts that then failed and were continued from another source."""
    busy_replies: int = 0
    """Times a source answered BUSY (at its upload limit) and the fetch went elsewhere."""
    liars: set[bytes] = field(default_factory=set)
    """Peers that alone served bytes not matching a signed commitment. They are no longer
    used as sources; the client may report them to the coordinator."""


class P2PNode:
    def __init__(
        self,
        key: NodeKey,
        run_id: str,
        *,
        is_member: IsMember,
        validate_announcement: ValidateAnnouncement | None = None,
        payload_hasher: PayloadHasher | None = None,
        verify_payload: VerifyPayload | None = None,
        commit: Callable[[int, int, Buffer], bytes] | None = None,
        config: P2PConfig | None = None,
    ) -> None:
        """`is_member(node_id)`: is this peer in the current epoch (streams and gossip from
        others are refused). `validate_announcement(ann)`: None if acceptable (e.g. the sender
        trains that batch this round), else a reason. A payload is accepted when
        `payload_hasher(ann)` (a hashlib-style object, e.g. sha256 already fed with run id,
        step and batch id), fed the payload while it downloads, digests to `ann.commitment`;
        default: plain sha256. `verify_payload(ann, payload)`, if given, replaces that with one
        check of the whole payload. `commit(step, batch_id, payload)` computes our own
        commitments (default sha256). All run on the caller's asyncio loop, except that
        hasher updates run on a worker thread."""
        self.key = key
        self.run_id = run_id
        self.config = config or P2PConfig()
        self.is_member = is_member
        self.validate_announcement = validate_announcement or (lambda _a: None)
        self.payload_hasher: PayloadHasher = payload_hasher or (lambda _a: hashlib.sha256())
        self.verify_payload = verify_payload
        self.commit = commit or (lambda _s, _b, payload: sha256_commitment(payload))
        self.topic = f"/psyche/{run_id}/results/1"
        self.announcements: asyncio.Queue[Announcement] = asyncio.Queue()
        self.stats = NodeStats()
        self._book = AnnouncementBook(
            run_id,
            key.node_id,
            is_member,
            lambda ann: self.validate_announcement(ann),
            self.config,
            self.stats,
        )
        self._store = BlobStore()
        self._limiter = UploadLimiter(self.config.uploads_per_peer, self.config.uploads_total)
        self._bridge = TrioThread(f"libp2p-{key.node_id.hex()[:8]}")
        self._lp = Libp2pHost(key, self.topic, self._bridge, self, self._limiter, self.config)
        self._fast: FastPathServer | None = None
        self._inflight: dict[bytes, asyncio.Task[Buffer]] = {}
        self._manifest: Manifest | None = None
        self._hash_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fast_down: dict[NodeId, float] = {}
        """Peers whose fast path could not be dialled -> until when it is not tried again."""
        self.public_host = ""
        self._state = "new"

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        return self.key.node_id

    @property
    def p2p_addr(self) -> str:
        """Multiaddr (with /p2p/<peer id>) other nodes pass to `connect`."""
        return self._lp.listen_addr

    @property
    def fast_addr(self) -> str:
        return self._fast.addr if self._fast else ""

    async def start(self) -> None:
        if self._state != "new":
            raise P2PError(f"cannot start a node that is {self._state}")
        self._state = "starting"
        self._hash_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="p2p-hash")
        cfg = self.config
        try:
            # May do a route lookup (no packet is sent), so not on the loop.
            self.public_host = await asyncio.to_thread(
                advertised_host, cfg.listen_host, cfg.public_host, cfg.route_hint
            )
            self._lp.public_host = self.public_host
            if cfg.fast_path:
                self._fast = FastPathServer(
                    self.key, self.get_blob, self.is_member, self._limiter, cfg
                )
                await self._fast.start(self.public_host)
            await self._bridge.start(self._lp.main)
        except BaseException:
            await self.stop()
            raise
        self._state = "running"
        self._spawn(self._reannounce_loop())

    async def stop(self) -> None:
        """Stop everything this node started. Never raises; safe to call twice."""
        if self._state == "stopped":
            return
        self._state = "stopped"
        try:
            current = asyncio.current_task()
            for task in list(self._tasks) + list(self._inflight.values()):
                if task is not current:
                    task.cancel()
            pending = [
                t for t in list(self._tasks) + list(self._inflight.values()) if t is not current
            ]
            if pending:
                await asyncio.wait(pending, timeout=self.config.stop_timeout)
            if self._fast is not None:
                await self._fast.stop()
            if not await self._bridge.stop(self.config.stop_timeout):
                log.warning("libp2p thread did not stop within %.1fs", self.config.stop_timeout)
            if self._hash_pool is not None:
                self._hash_pool.shutdown(wait=True, cancel_futures=True)
        except BaseException as exc:  # noqa: BLE001 - stop must not raise into the caller
            log.warning("error while stopping p2p node: %r", exc)

    async def __aenter__(self) -> P2PNode:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _running(self) -> None:
        if self._state != "running":
            raise P2PError(f"node is {self._state}")

    # ---- connections ----------------------------------------------------------------------

    async def connect(self, addr: str) -> NodeId:
        """Dial a peer by multiaddr; returns its node id."""
        self._running()
        return await self._bridge.call(self._lp.connect, addr)

    async def connected_peers(self) -> list[NodeId]:
        self._running()
        return await self._bridge.call(self._lp.list_connected)

    async def connection_kinds(self) -> dict[NodeId, str]:
        """Connected peer -> "direct" or "relayed" (through another member)."""
        self._running()
        return await self._bridge.call(self._lp.list_connection_kinds)

    @property
    def listen_port(self) -> int:
        """The libp2p TCP port actually bound (the fast path's is `fast_port`)."""
        return self._lp.bound_port

    @property
    def fast_port(self) -> int:
        return self._fast.bound_port if self._fast else 0

    @property
    def relay_reservations(self) -> int:
        """Members currently holding a relay reservation for this node."""
        relays = self._lp.relays
        return len(relays.reserved) if relays else 0

    # ---- steps and announcements ----------------------------------------------------------

    @property
    def current_step(self) -> int | None:
        return self._book.current_step

    def set_step(self, step: int) -> None:
        """The coordinator moved to `step`: accept announcements for it and the
        `RETAINED_STEPS` before it only, and forget (and stop serving) results older than that
        (a round's results are applied two rounds later, and must still be fetchable then)."""
        self._book.set_step(step)
        self._store.prune_before(step - RETAINED_STEPS)

    async def publish(
        self,
        step: int,
        batch_id: int,
        payload: Buffer,
        commitment: bytes | None = None,
        kind: int = KIND_ANNOUNCE,
    ) -> Announcement:
        """Serve `payload` and announce it (signed, as `kind`: a result or a momentum
        disclosure) on the run topic; re-announced periodically while its step is live."""
        self._running()
        if len(payload) > self.config.max_payload_bytes:
            raise ValueError("payload larger than max_payload_bytes")
        commitment = commitment if commitment is not None else self.commit(step, batch_id, payload)
        ann = Announcement(
            run_id=self.run_id,
            step=step,
            batch_id=batch_id,
            sender=self.node_id,
            commitment=commitment,
            payload_size=len(payload),
            p2p_addr=self.p2p_addr,
            fast_addr=self.fast_addr,
            kind=kind,
        ).signed(self.key)
        self._store.put(commitment, payload, step)
        self._book.add_own(ann)
        await self._gossip(ann.encode())
        return ann

    async def _gossip(self, data: bytes) -> None:
        try:
            await self._bridge.call(self._lp.publish, data)
        except Exception as exc:  # noqa: BLE001 - pull and re-announce cover a lost publish
            log.info("publish failed: %r", exc)

    async def _reannounce_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reannounce_interval)
            for ann in self._book.own_live():
                await self._gossip(ann.encode())

    def on_gossip(self, data: bytes) -> tuple[bool, str]:
        """Hook (asyncio side): judge one gossip message. Returns (forward it, address to
        remember). Valid new ANNOUNCEs go to `announcements`."""
        verdict = self._book.accept(data)
        if verdict.new is not None:
            if self.announcements.qsize() >= self.config.max_queue:
                self.announcements.get_nowait()
                self.stats.queue_dropped += 1
            self.announcements.put_nowait(verdict.new)
        return verdict.forward, verdict.addr

    # ---- pull fallback --------------------------------------------------------------------

    async def pull(self, step: int, peers: list[NodeId] | None = None) -> int:
        """Ask peers directly for every announcement and HAVE they know for `step` (gossip can
        miss some under load). New ones land in `announcements`; returns how many were new."""
        self._running()
        targets = peers if peers is not None else await self.connected_peers()
        before = self.stats.accepted

        async def one(node: NodeId) -> None:
            try:
                status, reply = await asyncio.wait_for(
                    self._bridge.call(self._lp.rpc, node, wire.OP_PULL, struct.pack(">Q", step)),
                    self.config.rpc_timeout,
                )
            except Exception as exc:  # noqa: BLE001 - one silent peer must not stop the rest
                log.info("pull from %s failed: %r", node.hex()[:8], exc)
                return
            if status != wire.STATUS_OK:
                return
            addrs = []
            for raw in wire.unpack_messages(reply, self.config.max_pull_messages):
                _ok, addr = self.on_gossip(raw)
                if addr:
                    addrs.append(addr)
            if addrs:
                with contextlib.suppress(Exception):
                    await self._bridge.call(self._lp.add_addrs, addrs)

        await asyncio.gather(*(one(n) for n in targets if self.is_member(n)))
        return self.stats.accepted - before

    def handle_rpc(self, remote: NodeId, op: int, body: bytes) -> tuple[int, bytes]:
        """Hook (asyncio side) for the RPC protocol; `remote` is already a member."""
        if op == wire.OP_PULL and len(body) == 8:
            (step,) = struct.unpack(">Q", body)
            return wire.STATUS_OK, wire.pack_messages(self._book.raw_for_step(step))
        if op == wire.OP_INFO:
            return wire.STATUS_OK, self.fast_addr.encode()
        if op == wire.OP_MANIFEST:
            if self._manifest is None:
                return wire.STATUS_NOT_FOUND, b""
            return wire.STATUS_OK, self._manifest.encode()
        return wire.STATUS_BAD_REQUEST, b""

    # ---- blobs ----------------------------------------------------------------------------

    def get_blob(self, key: bytes) -> Buffer | None:
        return self._store.get(key)

    def serve(self, key: bytes, payload: Buffer, step: int | None = None) -> None:
        """Make `payload` downloadable under `key` (pinned when `step` is None)."""
        self._store.put(key, payload, step)

    async def fetch(self, ann: Announcement, timeout: float | None = None) -> Buffer:
        """The payload of `ann` (a read-only bytes-like view), from the announcer or any
        holder, verified against `ann.commitment` before it is returned; raises FetchFailed
        after `timeout` (default config.fetch_timeout). Afterwards this node serves it too and
        announces HAVE. Concurrent fetches of one commitment share one download."""
        self._running()
        have = self._store.get(ann.commitment)
        if have is not None:
            return have
        task = self._inflight.get(ann.commitment)
        if task is None:
            task = asyncio.ensure_future(self._fetch(ann, timeout or self.config.fetch_timeout))
            self._inflight[ann.commitment] = task
            task.add_done_callback(lambda _t: self._inflight.pop(ann.commitment, None))
        return await asyncio.shield(task)

    def _verifier(self, ann: Announcement) -> Verifier:
        check = self.verify_payload
        if check is not None:
            return WholeVerifier(lambda payload: check(ann, payload))
        return StreamingHashVerifier(
            lambda: self.payload_hasher(ann), ann.commitment, self._hash_pool
        )

    async def _fetch(self, ann: Announcement, timeout: float) -> Buffer:
        self._book.add_holder(ann)
        stats = FetchStats()

        def sources() -> list[Source]:
            return [
                self._reachable(s)
                for s in self._book.holders(ann.commitment)
                if s.node not in self.stats.liars
            ]

        try:
            data = await fetch_blob(
                ann.commitment,
                ann.payload_size,
                sources,
                self._verifier(ann),
                self._attempt,
                timeout=timeout,
                busy_backoff=self.config.busy_backoff,
                stats=stats,
            )
        except Exception:
            self.stats.fetch_failed += 1
            raise
        finally:
            self._record(stats)
        self.stats.fetched += 1
        self._store.put(ann.commitment, data, ann.step)
        if self._state == "running" and self._book.step_ok(ann.step):
            have = ann.as_have(self.key, self.p2p_addr, self.fast_addr)
            self._book.add_own_have(have)
            self._spawn(self._gossip(have.encode()))
        return data

    def _record(self, stats: FetchStats) -> None:
        for t in stats.transports:
            self.stats.fetch_transports[t] = self.stats.fetch_transports.get(t, 0) + 1
        self.stats.fetch_failures = (self.stats.fetch_failures + stats.failures)[-50:]
        self.stats.resumed_bytes += stats.resumed_bytes
        self.stats.busy_replies += stats.busy
        if stats.liars:
            log.warning(
                "peers served data not matching its commitment: %s",
                [n.hex()[:8] for n in stats.liars],
            )
            self.stats.liars |= stats.liars

    @property
    def uploads_served(self) -> int:
        return self._limiter.served

    @property
    def uploads_active(self) -> int:
        return self._limiter.active

    @property
    def refused_connections(self) -> int:
        return self._lp.refused_peers + (self._fast.refused if self._fast else 0)

    def _reachable(self, src: Source) -> Source:
        """`src` without its fast address while that recently could not be dialled (a peer
        behind NAT advertises one nobody can reach): go straight to libp2p, maybe relayed."""
        until = self._fast_down.get(src.node)
        if until is None or not src.fast_addr:
            return src
        if until < asyncio.get_running_loop().time():
            del self._fast_down[src.node]
            return src
        return Source(src.node, "", src.p2p_addr)

    async def _attempt(
        self,
        src: Source,
        transport: str,
        key: bytes,
        dest: memoryview,
        offset: int,
        progress: Progress,
        budget: float,
    ) -> None:
        if transport == FAST:
            try:
                await asyncio.wait_for(
                    fast_fetch(
                        src.fast_addr, self.key, src.node, key, dest, offset, progress, self.config
                    ),
                    budget,
                )
            except wire.TransferError as exc:
                if str(exc).startswith("fast connect"):
                    loop_time = asyncio.get_running_loop().time()
                    self._fast_down[src.node] = loop_time + self.config.unreachable_after
                raise
            return
        if src.p2p_addr:
            await self._bridge.call(self._lp.add_addrs, [src.p2p_addr])
        # Not cancelled from here: the trio side stops by itself within `budget`, so `dest`
        # is never written after this returns.
        await self._bridge.call(self._lp.fetch_blob, src.node, key, dest, offset, progress, budget)

    # ---- model sharing --------------------------------------------------------------------

    def share_model(self, config: Buffer, tensors: Mapping[str, Buffer]) -> Manifest:
        """Serve a model (config bytes + raw tensor bytes by name) under a manifest signed by
        this node, for late joiners. Replaces any model shared before."""
        manifest = Manifest.build(self.key, self.run_id, config, tensors)
        self._store.drop_pinned()
        self._store.put(manifest.config_sha256, config, None)
        for entry in manifest.tensors:
            self._store.put(entry.sha256, tensors[entry.name], None)
        self._manifest = manifest
        return manifest

    async def fetch_model(
        self,
        peers: list[NodeId],
        *,
        trust: Callable[[Manifest], bool] | None = None,
        parallel: int = 4,
        timeout: float | None = None,
        select: Select | None = None,
        check: Check | None = None,
    ) -> ModelSnapshot:
        """Download config and every tensor from `peers` in parallel (each piece from any of
        them, rotating on failure and resuming from the offset), each checked against the
        signed manifest. `trust(manifest)` defaults to: signed by a member for this run.
        `select` (e.g. `model.agreed_by(n)`): ask every peer and download the manifest it picks
        (p2p/model.py), from the peers that signed that same content only. `check(manifest,
        config)`: refuse a model from its config blob before any tensor is fetched."""
        self._running()

        async def rpc(node: NodeId, op: int, body: bytes) -> tuple[int, bytes]:
            return await self._bridge.call(self._lp.rpc, node, op, body)

        return await fetch_model(
            peers,
            rpc=rpc,
            attempt=self._attempt,
            hash_pool=self._hash_pool,
            config=self.config,
            record=self._record,
            trust=trust or (lambda m: m.run_id == self.run_id and self.is_member(m.signer)),
            parallel=parallel,
            timeout=timeout or self.config.fetch_timeout,
            select=select,
            check=check,
        )
