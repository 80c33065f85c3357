"""Shared pieces of the server tests: a tiny member-tracking core and raw handshakes."""

from __future__ import annotations

import asyncio
from typing import Any

from psyche_client.identity import NodeKey
from psyche_client.server import wire
from psyche_client.server.app import CoreRejection


class MemberCore:
    """State = member count and a counter; "join" makes the sender a member, "leave" undoes it,
    "add" adds body["n"]. Stands in for the real core where the tests isolate the transport."""

    def __init__(self) -> None:
        self.members_set: set[bytes] = set()
        self.value = 0

    def state_bytes(self) -> bytes:
        return len(self.members_set).to_bytes(4, "big") + self.value.to_bytes(8, "big")

    def tick(self, now: int, randomness: bytes) -> None:
        pass

    def members(self) -> frozenset[bytes]:
        return frozenset(self.members_set)

    def apply(self, node_key: bytes, kind: str, body: dict[str, Any], now: int) -> None:
        if kind == "join":
            self.members_set.add(node_key)
        elif kind == "leave":
            self.members_set.discard(node_key)
        elif kind == "add" and isinstance(body.get("n"), int):
            self.value += body["n"]
        else:
            raise CoreRejection("InvalidMessage", f"cannot apply {kind}")


async def raw_handshake(
    port: int, key: NodeKey, run_id: str, sock: Any = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Connect and prove `key` by hand (no reader task: the caller decides whether to read)."""
    if sock is None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    else:
        reader, writer = await asyncio.open_connection(sock=sock)
    challenge = wire.decode_control(await wire.read_frame(reader, 1 << 16))
    nonce = bytes.fromhex(challenge["nonce"])
    writer.write(wire.encode_control(wire.make_hello(key, nonce, run_id)))
    await writer.drain()
    return reader, writer, nonce


def unsealed_control(frame: wire.Frame) -> dict[str, Any]:
    """A control frame's message, whether the server signed it (everything after the welcome:
    the signature is stripped unchecked, which `test_wire` covers) or not (a refusal before)."""
    try:
        return wire.decode_control(frame)
    except wire.WireError:
        return wire.decode_control(wire.Frame(frame.kind, frame.body[: -wire.SIG_BYTES]))


async def read_until_closed(reader: asyncio.StreamReader) -> str | None:
    """Read frames until the server closes; the message of its "fatal" frame, if it sent one."""
    fatal = None
    while True:
        try:
            frame = await wire.read_frame(reader, 1 << 24)
        except (EOFError, wire.WireError, ConnectionError):
            return fatal
        if frame.kind == wire.KIND_CONTROL:
            message = unsealed_control(frame)
            if message["type"] == "fatal":
                fatal = str(message.get("message"))
