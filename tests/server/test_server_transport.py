"""The TCP server's plumbing (auth, pushes, replies, limits, restart) over real loopback sockets.

The state machine here is a tiny counter so that these tests isolate the transport; the real core
is exercised through the same server in the end-to-end tests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from psyche_client.backend.tcp import (
    AddressError,
    CoordinatorRejected,
    NotACoordinator,
    TcpCoordinatorClient,
    parse_address,
)
from psyche_client.identity import NodeKey
from psyche_client.server import wire
from psyche_client.server.app import CoordinatorServer, CoreRejection, ServerLimits
from psyche_client.server.persist import load_state
from tests.server.helpers import unsealed_control


class CounterCore:
    """State = 8-byte counter; "add" adds body["n"] (refused when negative)."""

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self.callers: list[bytes] = []

    def state_bytes(self) -> bytes:
        return self.value.to_bytes(8, "big")

    def tick(self, now: int, randomness: bytes) -> None:
        pass

    def members(self) -> frozenset[bytes]:
        return frozenset()

    def apply(self, node_key: bytes, kind: str, body: dict[str, Any], now: int) -> None:
        if kind != "add" or not isinstance(body.get("n"), int) or body["n"] < 0:
            raise CoreRejection("InvalidMessage", f"cannot apply {kind} {body}")
        self.callers.append(node_key)
        self.value += body["n"]


def _value(state: bytes) -> int:
    return int.from_bytes(state, "big")


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_address("tcp://localhost:1") == ("localhost", 1)
    for bad in ["nohost", "host:", ":80", "host:99999", "host:x"]:
        with pytest.raises(AddressError, match="host:port"):
            parse_address(bad)


def test_requests_pushes_and_rejections(tmp_path: Path) -> None:
    async def go() -> None:
        core = CounterCore()
        server = CoordinatorServer(core, "run-a", tmp_path / "state.bin", tick_interval_s=0.05)
        await server.start()
        key = NodeKey.generate()
        a = TcpCoordinatorClient(server.address, key, run_id="run-a")
        b = TcpCoordinatorClient(server.address, NodeKey.generate())
        await a.start()
        await b.start()
        await a.request("add", {"n": 5})
        await b.wait_state(lambda s: _value(s) == 5, 5)
        with pytest.raises(CoordinatorRejected) as rejected:
            await a.request("add", {"n": -1})
        assert rejected.value.name == "InvalidMessage"
        await a.request("add", {"n": 2})
        assert _value(await b.wait_state(lambda s: _value(s) == 7, 5)) == 7
        assert core.callers == [key.public, key.public]
        assert load_state(tmp_path / "state.bin") == (7).to_bytes(8, "big")
        wrong = TcpCoordinatorClient(server.address, key, run_id="other-run")
        with pytest.raises(NotACoordinator, match="not .other-run."):
            await wrong.start(timeout_s=5)
        await a.stop()
        await b.stop()
        await server.stop()

    asyncio.run(go())


def test_client_survives_server_restart(tmp_path: Path) -> None:
    async def go() -> None:
        path = tmp_path / "state.bin"
        server = CoordinatorServer(CounterCore(), "run-r", path, tick_interval_s=0.05)
        await server.start()
        port = server.port
        client = TcpCoordinatorClient(server.address, NodeKey.generate(), max_backoff_s=0.2)
        await client.start()
        await client.request("add", {"n": 3})
        await server.stop()
        saved = load_state(path)
        assert saved is not None
        restarted = CoordinatorServer(CounterCore(_value(saved)), "run-r", path, port=port)
        await restarted.start()
        await client.wait_state(lambda s: True, 5)
        await asyncio.wait_for(client._connected.wait(), 10)
        await client.request("add", {"n": 4})
        assert _value(await client.wait_state(lambda s: _value(s) == 7, 5)) == 7
        assert client.reconnects >= 1
        await client.stop()
        await restarted.stop()

    asyncio.run(go())


def test_oversize_and_flooding_connections_are_closed(tmp_path: Path) -> None:
    async def go() -> None:
        limits = ServerLimits(max_control_bytes=1024, messages_per_s=1, burst=3)
        server = CoordinatorServer(CounterCore(), "run-l", tmp_path / "s.bin", limits=limits)
        await server.start()
        key = NodeKey.generate()

        async def handshake() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            challenge = wire.decode_control(await wire.read_frame(reader, 4096))
            nonce = bytes.fromhex(challenge["nonce"])
            writer.write(wire.encode_control(wire.make_hello(key, nonce, "run-l")))
            return reader, writer, nonce

        async def read_until_fatal(reader: asyncio.StreamReader) -> str:
            while True:
                frame = await wire.read_frame(reader, 1 << 20)
                if frame.kind == wire.KIND_CONTROL:
                    message = unsealed_control(frame)
                    if message["type"] == "fatal":
                        return str(message["message"])

        reader, writer, _ = await handshake()
        writer.write(wire.encode_frame(wire.KIND_CONTROL, b"x" * 5000))
        assert "exceeds the limit" in await asyncio.wait_for(read_until_fatal(reader), 5)
        writer.close()

        reader, writer, nonce = await handshake()
        for seq in range(10):
            envelope = wire.sign_envelope(key, nonce, seq, "add", {"n": 1})
            writer.write(wire.encode_control(envelope))
        assert "rate limit" in await asyncio.wait_for(read_until_fatal(reader), 5)
        writer.close()
        await server.stop()

    asyncio.run(go())


def test_an_ipv6_server_names_its_address_in_brackets(tmp_path: Path) -> None:
    async def go() -> None:
        server = CoordinatorServer(CounterCore(), "run-6", tmp_path / "s.bin", host="::1")
        await server.start()
        assert server.address == f"[::1]:{server.port}"
        client = TcpCoordinatorClient(server.address, NodeKey.generate())
        await client.start()
        await client.request("add", {"n": 1})
        await client.stop()
        await server.stop()

    asyncio.run(go())
