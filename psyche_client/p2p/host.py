"""The libp2p side: host, gossipsub and stream protocols, all running in the trio thread.

Configured for this project rather than py-libp2p's defaults (measured in issue 6):
Noise only (the default also accepts plaintext peers), Yamux only (mplex is ~7x slower),
gossipsub heartbeat 1 s (default 120 s), per-peer spam limit off (it silently dropped a round's
burst of N-1 announcements), IP-diversity eclipse protection off (membership is enforced by the
coordinator, and on loopback every peer shares one IP).

Every decision that needs run state (membership, validation, which blobs exist) is delegated to
`Hooks`, which run on the asyncio loop via the bridge, so that state has one owner.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Protocol

import multiaddr  # type: ignore[import-untyped]
import trio
from libp2p import new_host
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from . import wire
from .addr import host_multiaddr
from .bridge import TrioThread
from .config import P2PConfig
from .identity import NodeId, NodeKey, node_id_of, peer_id_of
from .limits import UploadLimiter, upload_chunk
from .relay import Relays
from .store import Buffer
from .streams import (
    close_quietly,
    raise_for_status,
    read_chunk,
    read_exactly,
    reset_quietly,
    write_bounded,
)
from .transfer import Progress

log = logging.getLogger(__name__)
ADDR_TTL = 3600


class Hooks(Protocol):
    """Run-state callbacks; called on the asyncio loop."""

    def on_gossip(self, data: bytes) -> tuple[bool, str]: ...
    def is_member(self, node_id: NodeId) -> bool: ...
    def get_blob(self, key: bytes) -> Buffer | None: ...
    def handle_rpc(self, remote: NodeId, op: int, body: bytes) -> tuple[int, bytes]: ...


class _MembershipGate(INotifee):
    """Closes connections from peers that are not members of the current epoch."""

    def __init__(self, owner: Libp2pHost) -> None:
        self.owner = owner

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        nursery = self.owner.nursery
        if nursery is not None:
            nursery.start_soon(self.owner.gate_peer, conn.muxed_conn.peer_id)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


class Libp2pHost:
    """Owns the py-libp2p objects. Methods run in trio; call them through `TrioThread.call`."""

    def __init__(
        self,
        key: NodeKey,
        topic: str,
        bridge: TrioThread,
        hooks: Hooks,
        limiter: UploadLimiter,
        config: P2PConfig,
    ) -> None:
        self.key = key
        self.topic = topic
        self.bridge = bridge
        self.hooks = hooks
        self.limiter = limiter
        self.config = config
        self.nursery: trio.Nursery | None = None
        self.listen_addr = ""
        """The multiaddr (with /p2p/) peers are told: `public_host` and the advertised port."""
        self.public_host = "127.0.0.1"
        """Set by the node before `main` (addr.advertised_host)."""
        self.bound_port = 0
        self.relays: Relays | None = None
        self._host: Any = None
        self._pubsub: Pubsub | None = None
        self.refused_peers = 0

    async def main(self, nursery: trio.Nursery) -> None:
        """Start everything; returns once listening and subscribed (tasks stay in `nursery`)."""
        self.nursery = nursery
        ready = await nursery.start(self._run)
        self.listen_addr = ready

    async def _run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        key_pair = self.key.libp2p_key_pair()
        noise = NoiseTransport(key_pair, noise_privkey=create_x25519_pair().private_key)
        host = new_host(
            key_pair=key_pair,
            sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            enable_mDNS=False,
            enable_upnp=False,
        )
        self._host = host
        router = GossipSub(
            protocols=[PROTOCOL_ID_V11],
            degree=cfg.gossip_degree,
            degree_low=cfg.gossip_degree_low,
            degree_high=cfg.gossip_degree_high,
            heartbeat_interval=cfg.heartbeat_interval,
            heartbeat_initial_delay=0.1,
            spam_protection_enabled=False,
            eclipse_protection_enabled=False,
        )
        pubsub = Pubsub(host, router, strict_signing=True)
        self._pubsub = pubsub
        try:
            await self._serve_forever(host, pubsub, router, task_status)
        finally:
            # py-libp2p starts a sweeper thread per Pubsub and never stops it.
            pubsub.seen_messages.stop()

    async def _serve_forever(
        self, host: Any, pubsub: Pubsub, router: GossipSub, task_status: Any
    ) -> None:
        cfg = self.config
        listen = multiaddr.Multiaddr(host_multiaddr(cfg.listen_host, cfg.listen_port))
        relays = Relays(host, cfg)
        self.relays = relays
        async with host.run(listen_addrs=[listen]):
            async with (
                background_trio_service(pubsub),
                background_trio_service(router),
                background_trio_service(relays.protocol),
                background_trio_service(relays.hole_puncher()),
            ):
                await pubsub.wait_until_ready()
                host.get_network().register_notifee(_MembershipGate(self))
                host.set_stream_handler(TProtocol(wire.BLOB_PROTOCOL), self._serve_blob)
                host.set_stream_handler(TProtocol(wire.RPC_PROTOCOL), self._serve_rpc)
                pubsub.set_topic_validator(self.topic, self._validate, True)
                sub = await pubsub.subscribe(self.topic)
                self.bound_port = _bound_port(host)
                port = cfg.public_port or self.bound_port
                advertised = f"{host_multiaddr(self.public_host, port)}/p2p/{host.get_id()}"
                assert self.nursery is not None
                self.nursery.start_soon(relays.maintain)
                task_status.started(advertised)
                # Validation already delivered each message; draining keeps the channel open.
                async for _ in sub:
                    pass

    # ---- gossip ---------------------------------------------------------------------------

    async def _validate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        fwd = node_id_of(forwarder)
        if fwd is None or not (
            fwd == self.key.node_id or await self.bridge.call_asyncio(self.hooks.is_member, fwd)
        ):
            return False
        ok, addr = await self.bridge.call_asyncio(self.hooks.on_gossip, bytes(msg.data))
        if addr:
            self.add_addr(addr)
        return bool(ok)

    async def publish(self, data: bytes) -> None:
        assert self._pubsub is not None
        await self._pubsub.publish(self.topic, data)

    # ---- connections ----------------------------------------------------------------------

    async def connect(self, addr: str) -> NodeId:
        """Dial `addr` directly; if that fails, reach the peer through a relay (it may be
        behind NAT). Raises when neither works."""
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        node = node_id_of(info.peer_id)
        if node is None:
            raise wire.TransferError("peer id is not an ed25519 key")
        try:
            with trio.fail_after(self.config.connect_timeout):
                await self._host.connect(info)
        except Exception as direct:  # noqa: BLE001 - any dial failure: try the relays
            if self._host.get_network().connections.get(info.peer_id):
                return node  # it dialled us meanwhile (a peer behind NAT does)
            if self.relays is None:
                raise
            try:
                await self.relays.dial(info.peer_id)
            except ConnectionError as relayed:
                raise wire.TransferError(f"direct: {direct!r}; {relayed}") from None
            return node
        if self.relays is not None and self.nursery is not None:
            # A new direct peer: reserve a way in through it now rather than at the next sweep.
            self.nursery.start_soon(self.relays.sweep)
        return node

    def connection_kinds(self) -> dict[NodeId, str]:
        """Connected member -> "direct" or "relayed" (direct wins when both exist)."""
        from .relay import is_relayed

        out: dict[NodeId, str] = {}
        for pid, conns in list(self._host.get_network().connections.items()):
            node = node_id_of(pid)
            items = conns if isinstance(conns, list) else [conns]
            if node is None or not items:
                continue
            out[node] = "relayed" if all(is_relayed(c) for c in items) else "direct"
        return out

    async def list_connection_kinds(self) -> dict[NodeId, str]:
        return self.connection_kinds()

    def add_addr(self, addr: str) -> None:
        """Remember a peer's multiaddr so later streams can dial it."""
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            self._host.get_peerstore().add_addrs(info.peer_id, info.addrs, ADDR_TTL)
        except Exception as exc:  # noqa: BLE001 - a bad address from a peer is only logged
            log.debug("ignoring address %r: %s", addr, exc)

    async def add_addrs(self, addrs: list[str]) -> None:
        for a in addrs:
            self.add_addr(a)

    def connected_nodes(self) -> list[NodeId]:
        out = []
        for pid in self._host.get_connected_peers():
            node = node_id_of(pid)
            if node is not None:
                out.append(node)
        return out

    async def list_connected(self) -> list[NodeId]:
        return self.connected_nodes()

    async def gate_peer(self, peer_id: ID) -> None:
        node = node_id_of(peer_id)
        try:
            ok = node is not None and await self.bridge.call_asyncio(self.hooks.is_member, node)
        except Exception:  # noqa: BLE001 - during shutdown
            return
        if not ok:
            self.refused_peers += 1
            log.info("closing connection from non-member %s", peer_id)
            with trio.move_on_after(2):
                try:
                    await self._host.get_network().close_peer(peer_id)
                except Exception as exc:  # noqa: BLE001
                    log.debug("close_peer failed: %s", exc)

    async def disconnect(self, node: NodeId) -> None:
        with trio.move_on_after(2):
            await self._host.get_network().close_peer(peer_id_of(node))

    async def _remote_member(self, stream: INetStream) -> NodeId | None:
        node = node_id_of(stream.muxed_conn.peer_id)
        if node is None or not await self.bridge.call_asyncio(self.hooks.is_member, node):
            self.refused_peers += 1
            return None
        return node

    async def _open(self, node: NodeId, protocol: str) -> INetStream:
        """A stream to `node`: over an existing connection, else a new direct dial, else a
        connection through a relay."""
        pid = peer_id_of(node)
        if not self._host.get_network().connections.get(pid) and self.relays is not None:
            with trio.move_on_after(self.config.connect_timeout):
                with contextlib.suppress(Exception):
                    await self._host.connect(PeerInfo(pid, self._host.get_peerstore().addrs(pid)))
            if not self._host.get_network().connections.get(pid):
                with contextlib.suppress(ConnectionError):
                    await self.relays.dial(pid)
        with trio.move_on_after(self.config.connect_timeout) as scope:
            stream = await self._host.new_stream(pid, [TProtocol(protocol)])
        if scope.cancelled_caught:
            raise wire.TransferError("open stream timed out")
        return stream  # type: ignore[no-any-return]

    # ---- RPC ------------------------------------------------------------------------------

    async def _serve_rpc(self, stream: INetStream) -> None:
        idle = self.config.idle_timeout
        try:
            remote = await self._remote_member(stream)
            if remote is None:
                await write_bounded(stream, wire.RPC_HEADER.pack(wire.STATUS_REFUSED, 0), idle)
                return
            op, n = wire.RPC_HEADER.unpack(await read_exactly(stream, wire.RPC_HEADER.size, idle))
            if n > wire.MAX_RPC_BODY:
                await write_bounded(stream, wire.RPC_HEADER.pack(wire.STATUS_BAD_REQUEST, 0), idle)
                return
            body = await read_exactly(stream, n, idle) if n else b""
            status, reply = await self.bridge.call_asyncio(self.hooks.handle_rpc, remote, op, body)
            await write_bounded(stream, wire.RPC_HEADER.pack(status, len(reply)) + reply, idle)
            await close_quietly(stream)
        except Exception as exc:  # noqa: BLE001 - one bad request must not hurt the host
            log.debug("rpc handler: %r", exc)
            await reset_quietly(stream)

    async def rpc(self, node: NodeId, op: int, body: bytes) -> tuple[int, bytes]:
        idle = self.config.rpc_timeout
        stream = await self._open(node, wire.RPC_PROTOCOL)
        try:
            await write_bounded(stream, wire.RPC_HEADER.pack(op, len(body)) + body, idle)
            status, n = wire.RPC_HEADER.unpack(
                await read_exactly(stream, wire.RPC_HEADER.size, idle)
            )
            if n > wire.MAX_RPC_BODY:
                raise wire.TransferError("rpc reply too large")
            reply = await read_exactly(stream, n, idle) if n else b""
        except BaseException:
            await reset_quietly(stream)
            raise
        await close_quietly(stream)
        return status, reply

    # ---- blobs ----------------------------------------------------------------------------

    async def _serve_blob(self, stream: INetStream) -> None:
        idle = self.config.idle_timeout
        remote: NodeId | None = None
        acquired = False
        try:
            remote = await self._remote_member(stream)
            if remote is None:
                await write_bounded(stream, wire.BLOB_RESPONSE.pack(wire.STATUS_REFUSED, 0), idle)
                return
            key, offset, length = wire.BLOB_REQUEST.unpack(
                await read_exactly(stream, wire.BLOB_REQUEST.size, idle)
            )
            blob = await self.bridge.call_asyncio(self.hooks.get_blob, key)
            if blob is None or offset > len(blob):
                status = wire.STATUS_NOT_FOUND
            elif not self.limiter.try_acquire(remote):
                status = wire.STATUS_BUSY
            else:
                acquired = True
                status = wire.STATUS_OK
            if status != wire.STATUS_OK or blob is None:
                await write_bounded(stream, wire.BLOB_RESPONSE.pack(status, 0), idle)
                await close_quietly(stream)
                return
            end = min(len(blob), offset + length)
            await write_bounded(stream, wire.BLOB_RESPONSE.pack(status, end - offset), idle)
            view = memoryview(blob)
            pos = offset
            rate = self.config.upload_rate_limit
            chunk = upload_chunk(rate, wire.CHUNK)
            while pos < end:
                step = min(chunk, end - pos)
                await write_bounded(stream, view[pos : pos + step], idle)
                pos += step
                if rate > 0:
                    await trio.sleep(step / rate)
            await close_quietly(stream)
        except Exception as exc:  # noqa: BLE001 - a stalled or lying fetcher is only dropped
            log.debug("blob upload ended: %r", exc)
            await reset_quietly(stream)
        finally:
            if acquired and remote is not None:
                self.limiter.release(remote)

    async def fetch_blob(
        self,
        node: NodeId,
        key: bytes,
        dest: memoryview,
        offset: int,
        progress: Progress,
        budget: float,
    ) -> None:
        """Fill dest[offset:] from `node` within `budget` seconds; progress.pos tracks how far
        it got, so the fetcher can resume elsewhere. Never outlives its budget, so the caller
        may reuse `dest` once this returns."""
        idle = self.config.idle_timeout
        deadline = trio.current_time() + budget
        stream = await self._open(node, wire.BLOB_PROTOCOL)
        try:
            want = len(dest) - offset
            await write_bounded(stream, wire.BLOB_REQUEST.pack(key, offset, want), idle)
            status, n = wire.BLOB_RESPONSE.unpack(
                await read_exactly(stream, wire.BLOB_RESPONSE.size, idle, deadline)
            )
            raise_for_status(status)
            if n != want:
                raise wire.TransferError(f"source offers {n} bytes, want {want}")
            pos = offset
            end = offset + want
            while pos < end:
                chunk = await read_chunk(stream, min(wire.CHUNK, end - pos), idle, deadline)
                dest[pos : pos + len(chunk)] = chunk
                pos += len(chunk)
                progress.pos = pos
        except BaseException:
            await reset_quietly(stream)
            raise
        await close_quietly(stream)


def _bound_port(host: Any) -> int:
    """The TCP port the host actually listens on (the config may have asked for 0)."""
    for addr in host.get_addrs():
        try:
            return int(addr.value_for_protocol("tcp"))
        except Exception:  # noqa: BLE001 - an address without TCP (none today)
            continue
    return 0
