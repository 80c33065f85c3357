"""Fast path: payloads over plain asyncio TCP, advertised in announcements.

Why: libp2p streams moved 64-81 MB/s here against 460-800 MB/s for plain TCP (Noise + Yamux in
pure Python are CPU bound). Payloads are public and verified against their signed commitment,
so they need no encryption. Access is still limited to members: the server sends a fresh nonce
and its node id, the client answers with its node id and a signature over both, so a
non-member cannot download and a fetcher knows which holder it is talking to.

Handshake: server -> "PSYF" | nonce (16) | server node id (32)
           client -> client node id (32) | sig(FAST_DOMAIN | nonce | server id) (64)
then one blob request/response exactly as in `wire`, and the server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

from . import wire
from .config import P2PConfig
from .host import raise_for_status
from .identity import NodeId, NodeKey, verify_signature
from .limits import UploadLimiter, upload_chunk

log = logging.getLogger(__name__)
FAST_MAGIC = b"PSYF"
FAST_DOMAIN = b"psyche/p2p/fast/v1\x00"
_HELLO = len(FAST_MAGIC) + 16 + 32


class FastPathServer:
    """Serves blobs by key to members over TCP; bounded by the shared UploadLimiter."""

    def __init__(
        self,
        key: NodeKey,
        get_blob: Callable[[bytes], bytes | None],
        is_member: Callable[[NodeId], bool],
        limiter: UploadLimiter,
        config: P2PConfig,
    ) -> None:
        self.key = key
        self.get_blob = get_blob
        self.is_member = is_member
        self.limiter = limiter
        self.config = config
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.addr = ""
        self.refused = 0

    async def start(self) -> str:
        self._server = await asyncio.start_server(
            self._on_conn, self.config.listen_host, self.config.fast_port, limit=1 << 16
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self.addr = f"{host}:{port}"
        return self.addr

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=self.config.stop_timeout)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), self.config.stop_timeout)
            self._server = None

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._serve(reader, writer)
        except (asyncio.CancelledError, Exception) as exc:  # noqa: BLE001
            log.debug("fast upload ended: %r", exc)
        finally:
            self._conns.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        idle = self.config.idle_timeout
        nonce = os.urandom(16)
        writer.write(FAST_MAGIC + nonce + self.key.node_id)
        hello = await asyncio.wait_for(reader.readexactly(96), idle)
        client, sig = hello[:32], hello[32:]
        ok = verify_signature(client, FAST_DOMAIN + nonce + self.key.node_id, sig)
        if not ok or not self.is_member(client):
            self.refused += 1
            writer.write(wire.BLOB_RESPONSE.pack(wire.STATUS_REFUSED, 0))
            await asyncio.wait_for(writer.drain(), idle)
            return
        req = await asyncio.wait_for(reader.readexactly(wire.BLOB_REQUEST.size), idle)
        key, offset, length = wire.BLOB_REQUEST.unpack(req)
        blob = self.get_blob(key)
        if blob is None or offset > len(blob):
            writer.write(wire.BLOB_RESPONSE.pack(wire.STATUS_NOT_FOUND, 0))
            await asyncio.wait_for(writer.drain(), idle)
            return
        if not self.limiter.try_acquire(client):
            writer.write(wire.BLOB_RESPONSE.pack(wire.STATUS_BUSY, 0))
            await asyncio.wait_for(writer.drain(), idle)
            return
        try:
            end = min(len(blob), offset + length)
            writer.write(wire.BLOB_RESPONSE.pack(wire.STATUS_OK, end - offset))
            view = memoryview(blob)
            pos = offset
            rate = self.config.upload_rate_limit
            chunk = upload_chunk(rate, wire.CHUNK)
            while pos < end:
                n = min(chunk, end - pos)
                writer.write(view[pos : pos + n])
                pos += n
                # drain() returns once the kernel took most of it: at most ~1 chunk is queued.
                await asyncio.wait_for(writer.drain(), idle)
                if rate > 0:
                    await asyncio.sleep(n / rate)
            if writer.can_write_eof():
                writer.write_eof()
            # Let the client read to the end before the socket goes away.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.read(1), idle)
        finally:
            self.limiter.release(client)


async def fast_fetch(
    addr: str,
    me: NodeKey,
    expect: NodeId,
    key: bytes,
    dest: memoryview,
    offset: int,
    progress: list[int],
    config: P2PConfig,
) -> None:
    """Fill dest[offset:] with blob `key` from the fast-path server at `addr` run by `expect`.

    Raises TransferError (or a subclass) on any failure; progress[0] says how far it got.
    """
    loop = asyncio.get_running_loop()
    host, _, port = addr.rpartition(":")
    idle = config.idle_timeout
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        try:
            connect = loop.sock_connect(sock, (host, int(port)))
            await asyncio.wait_for(connect, config.connect_timeout)
            hello = await _recv_exactly(loop, sock, _HELLO, idle)
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
        while pos < end:
            try:
                got = await asyncio.wait_for(loop.sock_recv_into(sock, dest[pos:end]), idle)
            except TimeoutError as exc:
                raise wire.TransferError("idle timeout") from exc
            except OSError as exc:
                raise wire.TransferError(f"recv: {exc!r}") from exc
            if got == 0:
                raise wire.TransferError("eof")
            pos += got
            progress[0] = pos
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
