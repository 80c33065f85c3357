"""Clients authenticate the TCP coordinator: its key is pinned or trusted on first use, and a
frame forged or altered on the path is never taken for the server's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from psyche_client.backend.pinning import CoordinatorKeyMismatch, KeyPolicy
from psyche_client.backend.tcp import TcpCoordinatorClient
from psyche_client.identity import NodeKey
from psyche_client.server import wire
from psyche_client.server.app import CoordinatorServer
from tests.server.helpers import MemberCore

RUN = "run-k"


def _server(directory: Path) -> CoordinatorServer:
    directory.mkdir(parents=True, exist_ok=True)
    return CoordinatorServer(MemberCore(), RUN, directory / "state.bin")


def test_the_key_persists_with_the_state_and_a_pinned_key_must_match(tmp_path: Path) -> None:
    async def go() -> None:
        server = _server(tmp_path / "a")
        await server.start()
        key = server.server_key.public
        good = TcpCoordinatorClient(server.address, NodeKey.generate(), key_policy=KeyPolicy(key))
        await good.start()
        assert good.server_key == key
        await good.stop()
        wrong = KeyPolicy(pinned=NodeKey.generate().public)
        bad = TcpCoordinatorClient(server.address, NodeKey.generate(), key_policy=wrong)
        with pytest.raises(CoordinatorKeyMismatch, match="not the pinned"):
            await bad.start()
        await server.stop()
        again = _server(tmp_path / "a")  # a restart keeps its key
        assert again.server_key.public == key

    asyncio.run(go())


def test_trust_on_first_use_refuses_another_server_for_the_run(tmp_path: Path) -> None:
    known = tmp_path / "client" / "known_coordinators.json"

    async def go() -> None:
        first = _server(tmp_path / "one")
        await first.start()
        client = TcpCoordinatorClient(
            first.address, NodeKey.generate(), key_policy=KeyPolicy(known_path=known)
        )
        await client.start()
        await client.stop()
        assert json.loads(known.read_text()) == {RUN: first.server_key.public.hex()}
        await first.stop()
        impostor = _server(tmp_path / "two")  # same run name, another key
        await impostor.start()
        client = TcpCoordinatorClient(
            impostor.address, NodeKey.generate(), key_policy=KeyPolicy(known_path=known)
        )
        with pytest.raises(CoordinatorKeyMismatch, match="delete that entry"):
            await client.start()
        await impostor.stop()

    asyncio.run(go())
    known.write_text("not json")
    with pytest.raises(Exception, match="not a known-coordinators file"):
        KeyPolicy(known_path=known).check(RUN, b"k" * 32)


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, inject: bytes | None
) -> None:
    """Copy frames; after the second server frame (the welcome), put `inject` in the stream."""
    seen = 0
    try:
        while True:
            header = await reader.readexactly(5)
            body = await reader.readexactly(int.from_bytes(header[:4], "big"))
            writer.write(header + body)
            seen += 1
            if inject is not None and seen == 2:
                writer.write(inject)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def _attack(server: CoordinatorServer, inject: bytes, forged_state: bytes) -> None:
    """Connect through a proxy that injects `inject` into the first session only."""
    sessions = 0

    async def proxy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal sessions
        sessions += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", server.port)
        evil = inject if sessions == 1 else None
        await asyncio.gather(_pipe(r, up_w, None), _pipe(up_r, w, evil))

    relay = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = relay.sockets[0].getsockname()[1]
    client = TcpCoordinatorClient(
        f"127.0.0.1:{port}",
        NodeKey.generate(),
        key_policy=KeyPolicy(server.server_key.public),
        max_backoff_s=0.1,
    )
    states: list[bytes] = []
    watcher = asyncio.create_task(
        client.wait_state(lambda s: states.append(s) is not None and False)
    )
    await client.start()
    await asyncio.wait_for(_until(lambda: client.reconnects >= 1), 10)
    await client.request("add", {"n": 1})  # the honest path works after the reconnect
    watcher.cancel()
    assert states and forged_state not in states and client.state != forged_state
    await client.stop()
    relay.close()


def test_a_state_frame_injected_on_the_path_is_refused(tmp_path: Path) -> None:
    """A man in the middle (a proxy on the path) slips in a state frame: unsigned, and signed
    with its own key. The client accepts neither, drops the connection and reconnects."""
    forged_state = b"\xff" * 12
    mitm = NodeKey.generate()
    unsigned = wire.encode_frame(wire.KIND_STATE, forged_state)
    signed_by_mitm = wire.FrameSealer(mitm, b"c" * 32, b"n" * 32, RUN, seq=1).seal(unsigned)

    async def go() -> None:
        server = _server(tmp_path / "s")
        await server.start()
        for inject in (unsigned, signed_by_mitm):
            await _attack(server, inject, forged_state)
        await server.stop()

    asyncio.run(go())


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.02)
