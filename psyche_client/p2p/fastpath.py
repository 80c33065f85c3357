"""Fast path: payloads over plain asyncio TCP, advertised in announcements.

Why: libp2p streams moved 64-81 MB/s here against 460-800 MB/s for plain TCP (Noise + Yamux in
pure Python are CPU bound). Payloads are public and verified against their signed commitment,
so they need no encryption. Access is still limited to members: the server sends a fresh nonce
and its node id, the client answers with its node id and a signature over both, so a
non-member cannot download and a fetcher knows which holder it is talking to.

Handshake: server -> "PSYF" | nonce (16) | server node id (32)
           client -> client node id (32) | sig(FAST_DOMAIN | nonce | server id) (64)
then one blob request/response exactly as in `wire`, and the server closes.

A connection over the server's caps (in all, or from one IP address) gets "PSYB" instead of the
hello and is closed at once: the fetcher treats it as BUSY (backs off, tries other holders). The
whole handshake, up to the end of the request, must arrive within `fast_handshake_timeout`, so a
client trickling a byte per idle interval cannot hold a connection; refusals are logged one line
per kind per minute with a count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

from psyche_client.server.guard import RefusalLog

from . import wire
from .addr import family_of, join_host_port, split_host_port
from .config import P2PConfig
from .identity import NodeId, NodeKey, verify_signature
from .limits import UploadLimiter, upload_chunk
from .store import Buffer
from .streams import raise_for_status
from .transfer import Progress

log = logging.getLogger(__name__)
FAST_MAGIC = b"PSYF"
FAST_BUSY = b"PSYB"
"""Sent instead of the hello by a server at its connection cap."""
FAST_DOMAIN = b"psyche/p2p/fast/v1\x00"
_HELLO = len(FAST_MAGIC) + 16 + 32


class FastPathServer:
    """Serves blobs by key to members over TCP; bounded by the shared UploadLimiter.

    Raw non-blocking sockets with `loop.sock_sendall` rather than asyncio streams: the payload
    goes from the stored buffer to the kernel without the transport's extra copies.
    """

    def __init__(
        self,
        key: NodeKey,
        get_blob: Callable[[bytes], Buffer | None],
        is_member: Callable[[NodeId], bool],
        limiter: UploadLimiter,
        config: P2PConfig,
    ) -> None:
        self.key = key
        self.get_blob = get_blob
        self.is_member = is_member
        self.limiter = limiter
        self.config = config
        self._sock: socket.socket | None = None
        self._accept: asyncio.Task[None] | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.addr = ""
        self.bound_port = 0
        self.refused = 0
        self._per_ip: dict[str, int] = {}
        self.refusals = RefusalLog(log)
        """Counts per kind ("cap", "ip cap", "handshake", "accept") and the rate-limited log."""

    async def start(self, public_host: str = "") -> str:
        """Listen on (listen_host, fast_port), IPv4 or IPv6; advertise `public_host` (default:
        the listen host) with the public port (public_port + 1 when one is set)."""
        cfg = self.config
        sock = socket.socket(family_of(cfg.listen_host), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((cfg.listen_host, cfg.fast_port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        self.bound_port = int(sock.getsockname()[1])
        port = cfg.public_port + 1 if cfg.public_port else self.bound_port
        self.addr = join_host_port(public_host or cfg.listen_host, port)
        self._accept = asyncio.ensure_future(self._accept_loop(sock))
        return self.addr

    async def stop(self) -> None:
        tasks = [t for t in [self._accept, *self._conns] if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.stop_timeout)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        while True:
            try:
                conn, peer = await loop.sock_accept(listener)
            except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                self.refusals.note("accept", f"fast path cannot accept connections: {exc!r}")
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            ip = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
            if len(self._conns) >= cfg.fast_max_connections:
                self._refuse(conn, "cap", f"{cfg.fast_max_connections} connections in all")
                continue
            if self._per_ip.get(ip, 0) >= cfg.fast_max_connections_per_ip:
                self._refuse(conn, "ip cap", f"{cfg.fast_max_connections_per_ip} from {ip}")
                continue
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
            task = asyncio.ensure_future(self._on_conn(conn, ip))
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    def _refuse(self, conn: socket.socket, kind: str, cap: str) -> None:
        """Over a cap: BUSY (non-blocking, best effort) and close, without a task."""
        with contextlib.suppress(OSError):
            conn.send(FAST_BUSY)
        conn.close()
        self.refusals.note(kind, f"fast path: connection refused, at its cap of {cap}")

    async def _on_conn(self, conn: socket.socket, ip: str) -> None:
        try:
            await self._serve(conn, ip)
        except (asyncio.CancelledError, Exception) as exc:  # noqa: BLE001
            log.debug("fast upload ended: %r", exc)
        finally:
            conn.close()
            left = self._per_ip.get(ip, 1) - 1
            if left > 0:
                self._per_ip[ip] = left
            else:
                self._per_ip.pop(ip, None)

    async def _send(self, conn: socket.socket, data: Buffer) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.config.idle_timeout):
            await loop.sock_sendall(conn, data)

    async def _serve(self, conn: socket.socket, ip: str) -> None:
        loop = asyncio.get_running_loop()
        idle = self.config.idle_timeout
        limit = self.config.fast_handshake_timeout
        nonce = os.urandom(16)
        try:
            async with asyncio.timeout(limit):  # one deadline for the whole handshake
                await self._send(conn, FAST_MAGIC + nonce + self.key.node_id)
                hello = await _recv_exactly(loop, conn, 96, idle)
                client, sig = hello[:32], hello[32:]
                ok = verify_signature(client, FAST_DOMAIN + nonce + self.key.node_id, sig)
                if not ok or not self.is_member(client):
                    self.refused += 1
                    await self._send(conn, wire.BLOB_RESPONSE.pack(wire.STATUS_REFUSED, 0))
                    return
                req = await _recv_exactly(loop, conn, wire.BLOB_REQUEST.size, idle)
        except TimeoutError:
            self.refusals.note(
                "handshake", f"fast path: {ip} did not finish its handshake in {limit:g}s"
            )
            return
        key, offset, length = wire.BLOB_REQUEST.unpack(req)
        blob = self.get_blob(key)
        if blob is None or offset > len(blob):
            await self._send(conn, wire.BLOB_RESPONSE.pack(wire.STATUS_NOT_FOUND, 0))
            return
        if not self.limiter.try_acquire(client):
            await self._send(conn, wire.BLOB_RESPONSE.pack(wire.STATUS_BUSY, 0))
            return
        try:
            end = min(len(blob), offset + length)
            await self._send(conn, wire.BLOB_RESPONSE.pack(wire.STATUS_OK, end - offset))
            view = memoryview(blob)
            rate = self.config.upload_rate_limit
            # Each slice must leave within the idle timeout, so 1 MiB keeps a slow (>= 100 kB/s)
            # but live receiver from being mistaken for a frozen one; throttled: paced.
            chunk = upload_chunk(rate, wire.CHUNK)
            pos = offset
            while pos < end:
                n = min(chunk, end - pos)
                await self._send(conn, view[pos : pos + n])
                pos += n
                if rate > 0:
                    await asyncio.sleep(n / rate)
            conn.shutdown(socket.SHUT_WR)
            # Let the client read to the end before the socket goes away.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(idle):
                    await loop.sock_recv(conn, 1)
        finally:
            self.limiter.release(client)


async def fast_fetch(
    addr: str,
    me: NodeKey,
    expect: NodeId,
    key: bytes,
    dest: memoryview,
    offset: int,
    progress: Progress,
    config: P2PConfig,
) -> None:
    """Fill dest[offset:] with blob `key` from the fast-path server at `addr` run by `expect`.

    Raises TransferError (or a subclass) on any failure; progress.pos says how far it got.
    """
    loop = asyncio.get_running_loop()
    try:
        host, port = split_host_port(addr)
        # A DNS name (public_host may be one) is resolved off the loop, bounded below.
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), config.connect_timeout
        )
        family, _, _, _, sockaddr = infos[0]
    except (OSError, ValueError, TimeoutError, IndexError) as exc:
        raise wire.TransferError(f"fast connect {addr}: {exc!r}") from exc
    idle = config.idle_timeout
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        try:
            connect = loop.sock_connect(sock, sockaddr)
            await asyncio.wait_for(connect, min(config.fast_connect_timeout, idle))
            magic = await _recv_exactly(loop, sock, len(FAST_MAGIC), idle)
            if magic == FAST_BUSY:
                raise wire.SourceBusy(f"fast path {addr} is at its connection cap")
            hello = magic + await _recv_exactly(loop, sock, _HELLO - len(magic), idle)
        except (OSError, ValueError, TimeoutError) as exc:
            raise wire.TransferError(f"fast connect {addr}: {exc!r}") from exc
        if hello[:4] != FAST_MAGIC or hello[20:] != expect:
            raise wire.TransferError("fast path server is not the expected holder")
        nonce = hello[4:20]
        want = len(dest) - offset
        await loop.sock_sendall(
            sock,
            me.node_id
            + me.sign(FAST_DOMAIN + nonce + expect)
            + wire.BLOB_REQUEST.pack(key, offset, want),
        )
        status, n = wire.BLOB_RESPONSE.unpack(
            await _recv_exactly(loop, sock, wire.BLOB_RESPONSE.size, idle)
        )
        raise_for_status(status)
        if n != want:
            raise wire.TransferError(f"source offers {n} bytes, want {want}")
        pos = offset
        end = len(dest)
        try:
            # One timer, pushed forward after every receive: the idle timeout.
            async with asyncio.timeout(idle) as idle_timer:
                while pos < end:
                    got = await loop.sock_recv_into(sock, dest[pos:end])
                    if got == 0:
                        raise wire.TransferError("eof")
                    pos += got
                    progress.advance(pos)
                    idle_timer.reschedule(loop.time() + idle)
        except TimeoutError as exc:
            raise wire.TransferError("idle timeout") from exc
    except OSError as exc:
        raise wire.TransferError(repr(exc)) from exc
    finally:
        sock.close()


async def _recv_exactly(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int, idle: float
) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    pos = 0
    while pos < n:
        try:
            got = await asyncio.wait_for(loop.sock_recv_into(sock, view[pos:]), idle)
        except TimeoutError as exc:
            raise wire.TransferError("idle timeout") from exc
        if got == 0:
            raise wire.TransferError("eof")
        pos += got
    return bytes(buf)
