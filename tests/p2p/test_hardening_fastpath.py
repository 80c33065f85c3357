"""Issue 14: the fast path against slow and crowding clients, over real loopback sockets
(p2p/fastpath.py). Distinct source addresses (127.0.0.x) stand for distinct remote hosts."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from psyche_client.p2p import NodeKey, P2PConfig, wire
from psyche_client.p2p.fastpath import FAST_BUSY, FAST_MAGIC, FastPathServer, fast_fetch
from psyche_client.p2p.limits import UploadLimiter
from psyche_client.p2p.transfer import Progress

PAYLOAD = random.Random(3).randbytes(256 << 10)
KEY = b"k" * 32


@asynccontextmanager
async def _server(cfg: P2PConfig, member: NodeKey) -> AsyncIterator[FastPathServer]:
    server = FastPathServer(
        NodeKey.generate(),
        {KEY: PAYLOAD}.get,
        lambda n: n == member.node_id,
        UploadLimiter(4, 16),
        cfg,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _open(server: FastPathServer, source_ip: str) -> tuple[asyncio.StreamReader, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source_ip, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.bound_port))
    return await asyncio.open_connection(sock=sock)


async def _first(reader: asyncio.StreamReader) -> bytes:
    """What the server sends first: its hello, or the BUSY marker then EOF."""
    head = await asyncio.wait_for(reader.readexactly(4), 10)
    if head == FAST_MAGIC:
        await asyncio.wait_for(reader.readexactly(48), 10)
    return head


async def _honest_fetch(server: FastPathServer, me: NodeKey) -> bytes:
    dest = memoryview(bytearray(len(PAYLOAD)))
    await fast_fetch(server.addr, me, server.key.node_id, KEY, dest, 0, Progress(0), server.config)
    return bytes(dest)


def test_a_byte_per_interval_client_is_cut_at_the_handshake_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each byte comes well within the 5 s idle timeout; the 96-byte hello never completes.
    cfg = P2PConfig(idle_timeout=5.0, fast_handshake_timeout=0.4)
    member = NodeKey.generate()

    async def main() -> tuple[int, dict[str, int], bytes]:
        async with _server(cfg, member) as server:
            reader, writer = await _open(server, "127.0.0.1")
            assert await _first(reader) == FAST_MAGIC
            sent = 0
            for _ in range(60):  # 60 of the 96 bytes, one per 50 ms, unless cut first
                try:
                    writer.write(b"x")
                    await writer.drain()
                    sent += 1
                    if await asyncio.wait_for(reader.read(1), 0.05) == b"":
                        break  # the server closed the connection
                except TimeoutError:
                    continue
                except OSError:
                    break
            writer.close()
            got = await _honest_fetch(server, member)  # the server still serves
            return sent, dict(server.refusals.counts), got

    with caplog.at_level(logging.WARNING, logger="psyche_client.p2p.fastpath"):
        sent, counts, got = asyncio.run(main())
    assert sent < 60, "a trickling handshake was never cut"
    assert counts == {"handshake": 1}
    assert got == PAYLOAD
    assert sum("did not finish its handshake" in r.getMessage() for r in caplog.records) == 1


def test_the_connection_caps_refuse_with_busy_while_honest_transfers_work(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = P2PConfig(
        fast_handshake_timeout=60.0, fast_max_connections=4, fast_max_connections_per_ip=2
    )
    member = NodeKey.generate()

    async def main() -> dict[str, int]:
        async with _server(cfg, member) as server:
            held = []
            # One host holds its two allowed connections; its third is refused at once.
            for _ in range(2):
                reader, writer = await _open(server, "127.0.0.2")
                assert await _first(reader) == FAST_MAGIC
                held.append(writer)
            reader, writer = await _open(server, "127.0.0.2")
            assert await _first(reader) == FAST_BUSY
            assert await asyncio.wait_for(reader.read(1), 10) == b""
            writer.close()
            # Another host is not affected by that host's cap.
            assert await _honest_fetch(server, member) == PAYLOAD
            # A second host fills the total cap (4): the next connection, from anyone, is BUSY.
            for _ in range(2):
                reader, writer = await _open(server, "127.0.0.3")
                assert await _first(reader) == FAST_MAGIC
                held.append(writer)
            reader, writer = await _open(server, "127.0.0.4")
            assert await _first(reader) == FAST_BUSY
            writer.close()
            with pytest.raises(wire.SourceBusy):
                await _honest_fetch(server, member)
            # When the holders leave, honest transfers go through again.
            for w in held:
                w.close()
            for _ in range(200):
                try:
                    assert await _honest_fetch(server, member) == PAYLOAD
                    break
                except wire.SourceBusy:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("slots were never freed")
            return dict(server.refusals.counts)

    with caplog.at_level(logging.WARNING, logger="psyche_client.p2p.fastpath"):
        counts = asyncio.run(main())
    assert counts["ip cap"] == 1 and counts["cap"] >= 2
    refused = [r.getMessage() for r in caplog.records if "connection refused" in r.getMessage()]
    assert len(refused) == 2, refused  # one line per kind, however many refusals
