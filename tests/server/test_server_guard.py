"""What a stranger or a slow reader can cost the TCP coordinator: the peer directory lists
members only and is coalesced per connection; connections are capped, idle ones are closed, and
each class of refusal is one rate-limited log line (never a traceback per event)."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from pathlib import Path

import pytest

from psyche_client.backend.tcp import CoordinatorRejected, TcpCoordinatorClient
from psyche_client.identity import NodeKey
from psyche_client.server.app import CoordinatorServer, ServerLimits
from tests.server.helpers import MemberCore, raw_handshake, read_until_closed

RUN = "run-g"


async def _until(predicate: object, timeout_s: float = 5.0) -> None:
    async def wait() -> None:
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), timeout_s)


def _server(tmp_path: Path, core: MemberCore, **limits: float) -> CoordinatorServer:
    return CoordinatorServer(
        core, RUN, tmp_path / "state.bin", tick_interval_s=0.05, limits=ServerLimits(**limits)
    )


def test_directory_lists_members_only_and_forgets_leavers(tmp_path: Path) -> None:
    async def go() -> None:
        core = MemberCore()
        server = _server(tmp_path, core)
        await server.start()
        ka, kb = NodeKey.generate(), NodeKey.generate()
        a = TcpCoordinatorClient(server.address, ka)
        b = TcpCoordinatorClient(server.address, kb)
        await a.start()
        await b.start()
        with pytest.raises(CoordinatorRejected) as refused:
            await b.request("advertise", {"p2p_addr": "/ip4/1.2.3.4/tcp/1", "fast_addr": ""})
        assert refused.value.name == "NotMember"
        await a.request("join", {})
        await a.request("advertise", {"p2p_addr": "/ip4/127.0.0.1/tcp/5", "fast_addr": ""})
        await _until(lambda: set(b.peers) == {ka.public})
        await a.request("leave", {})  # dropped, ejected, withdrawn or the epoch ended
        await _until(lambda: b.peers == {} and a.peers == {})
        assert server.directory_size() == 0
        await a.stop()
        await b.stop()
        await server.stop()

    asyncio.run(go())


def test_a_slow_reader_gets_the_latest_directory_not_every_version(tmp_path: Path) -> None:
    async def go() -> None:
        core = MemberCore()
        server = _server(
            tmp_path, core, max_send_buffer_bytes=64 * 1024, messages_per_s=1e6, burst=10**6
        )
        await server.start()
        key = NodeKey.generate()
        fast = TcpCoordinatorClient(server.address, key)
        await fast.start()
        await fast.request("join", {})
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        _, slow_writer, _ = await raw_handshake(server.port, NodeKey.generate(), RUN, sock=sock)
        await _until(lambda: len(server._connections) == 2)
        for conn in server._connections:  # no kernel autotuning to hide the backlog
            conn.writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
            )
        peak = 0
        for i in range(1500):
            addr = f"/ip4/127.0.0.1/tcp/{i}/" + "x" * 200
            await fast.request("advertise", {"p2p_addr": addr, "fast_addr": "y" * 250})
            for conn in list(server._connections):
                peak = max(peak, conn.writer.transport.get_write_buffer_size())
        assert peak <= 2 * 64 * 1024, f"a slow reader's backlog reached {peak} bytes"
        await _until(lambda: fast.peers.get(key.public, {}).get("p2p_addr") == addr)
        slow_writer.close()
        await fast.stop()
        await server.stop()

    asyncio.run(go())


def test_connection_cap_refuses_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        server = _server(tmp_path, MemberCore(), max_connections=2)
        await server.start()
        kept = [await raw_handshake(server.port, NodeKey.generate(), RUN) for _ in range(2)]
        await _until(lambda: len(server._connections) == 2)
        for _ in range(6):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            message = await asyncio.wait_for(read_until_closed(reader), 5)
            assert message is not None and "connections" in message
            writer.close()
        for _, writer, _ in kept:
            writer.close()
        await server.stop()

    with caplog.at_level(logging.INFO):
        asyncio.run(go())
    refusals = [r for r in caplog.records if "connection cap" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    assert refusals[0].exc_info is None


def test_idle_connections_are_closed_but_clients_keep_alive(tmp_path: Path) -> None:
    async def go() -> None:
        server = _server(tmp_path, MemberCore(), idle_timeout_s=0.4)
        await server.start()
        reader, writer, _ = await raw_handshake(server.port, NodeKey.generate(), RUN)
        message = await asyncio.wait_for(read_until_closed(reader), 5)
        assert message is not None and "idle" in message
        writer.close()
        client = TcpCoordinatorClient(server.address, NodeKey.generate())
        await client.start()
        await asyncio.sleep(1.6)  # four idle timeouts: only the keepalive keeps it connected
        assert client.reconnects == 0 and client._connected.is_set()
        await client.request("add", {"n": 1})
        await client.stop()
        await server.stop()

    asyncio.run(go())


def test_handshake_has_one_deadline(tmp_path: Path) -> None:
    async def go() -> None:
        server = _server(tmp_path, MemberCore(), handshake_timeout_s=0.3)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x00\x00\x00\x10\x01{")  # a frame header, then nothing more
        await asyncio.wait_for(read_until_closed(reader), 5)
        assert len(server._connections) == 0
        writer.close()
        await server.stop()

    asyncio.run(go())


def test_fd_exhaustion_is_one_rate_limited_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        server = _server(tmp_path, MemberCore())
        await server.start()
        loop = asyncio.get_running_loop()
        for _ in range(20):  # what asyncio reports each time accept() fails with EMFILE
            loop.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(errno.EMFILE, "Too many open files"),
                }
            )
        await server.stop()

    with caplog.at_level(logging.INFO):
        asyncio.run(go())
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].exc_info is None and "Too many open files" in lines[0].getMessage()


def test_connection_cap_stays_under_the_fd_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    from psyche_client.server import guard

    monkeypatch.setattr(resource, "getrlimit", lambda _: (256, 4096))
    assert guard.fd_bounded(1024, logging.getLogger("t")) == 256 - guard.FD_RESERVE
    assert guard.fd_bounded(100, logging.getLogger("t")) == 100


def test_refusal_log_summarises_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    from psyche_client.server.guard import RefusalLog

    now = [0.0]
    refusals = RefusalLog(logging.getLogger("t"), interval_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.INFO):
        for _ in range(5):
            refusals.note("cap", "refused")
        refusals.note("idle", "idle")
        now[0] = 61.0
        refusals.note("cap", "refused")
    assert [r.getMessage() for r in caplog.records] == [
        "refused",
        "idle",
        "refused (4 more like it in the last 61 s)",
    ]
    assert refusals.counts == {"cap": 6, "idle": 1}
