"""The TCP coordinator's wire format: framing, the challenge handshake and signed messages.

Every frame is a 4-byte big-endian length, one kind byte, then the body. A `CONTROL` body is a
UTF-8 JSON object with a string "type"; a `STATE` body is the coordinator state exactly as the
core serializes it (the same bytes the Solana program stores), so one decoder serves both
backends. Frames over the reader's limit are refused before anything is allocated for them.

After the TCP connection opens, the server sends a random 32-byte challenge; the client (which
may first send an `{"type": "open"}` frame, so that a server of another protocol answers at once)
answers with its node key and a signature of (protocol tag, challenge, run id); the server's
`welcome` names its idle timeout, which the client's keepalive pings stay under. Each later
client message carries a sequence number and a signature over (tag, challenge, sequence, type,
body), so a message cannot be replayed on another connection, reordered, or altered by anything
on the path.

The server authenticates itself the same way: its challenge names its public key (the run's
coordinator key, kept in its state directory), the client's hello carries a fresh client nonce,
and every frame the server sends from the welcome on ends with a signature over (tag, challenge,
client nonce, run id, frame sequence, kind, sha256 of the body). A client that pins the key
(`join --coordinator-key`, or trust on first use) cannot be fed a forged, replayed, reordered or
altered state or reply by anything on the path. See docs/protocol.md, "TCP coordinator".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from typing import Any

from psyche_client.identity import NodeKey, verify_signature

PROTOCOL_TAG = b"psyche-tcp/2"
PROTOCOL_VERSION = 2
"""Named in the server's challenge: a client of another version says so instead of failing on a
signature."""
SIG_BYTES = 64
KIND_CONTROL = 1
KIND_STATE = 2
DEFAULT_MAX_CONTROL_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16
"""No message of the protocol nests deeper; the limit keeps decoding and re-encoding flat."""
MAX_JSON_DIGITS = 40
"""Longest integer literal accepted: every integer field fits in 64 bits (20 digits)."""
_HEADER = struct.Struct(">IB")


class WireError(Exception):
    """A peer sent something that breaks the wire protocol; the connection should be closed."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its kind and raw body."""

    kind: int
    body: bytes


async def read_frame(reader: asyncio.StreamReader, max_body: int) -> Frame:
    """Read one frame, refusing bodies over `max_body` bytes before reading them."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            raise EOFError("connection closed") from None
        raise WireError("connection closed inside a frame header") from None
    length, kind = _HEADER.unpack(header)
    if length > max_body:
        raise WireError(f"frame of {length} bytes exceeds the limit of {max_body}")
    if kind not in (KIND_CONTROL, KIND_STATE):
        raise WireError(f"unknown frame kind {kind}")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise WireError("connection closed inside a frame body") from None
    return Frame(kind, body)


def encode_frame(kind: int, body: bytes) -> bytes:
    """The bytes of one frame."""
    return _HEADER.pack(len(body), kind) + body


def encode_control(message: dict[str, Any]) -> bytes:
    """A control frame carrying `message` (which must have a string "type")."""
    return encode_frame(KIND_CONTROL, canonical_json(message))


def decode_control(frame: Frame) -> dict[str, Any]:
    """The JSON object of a control frame, or `WireError` if it is not one."""
    if frame.kind != KIND_CONTROL:
        raise WireError(f"expected a control frame, got kind {frame.kind}")
    try:
        text = frame.body.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("control frame is not UTF-8 JSON") from None
    try:
        message = json.loads(
            text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_no_constant
        )
    except RecursionError:
        raise WireError(f"control frame is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError:
        raise WireError("control frame is not UTF-8 JSON") from None
    _check_depth(message)
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise WireError('control frame is not a JSON object with a string "type"')
    return message


def _parse_int(literal: str) -> int:
    # Python refuses >4300 digits with a bare ValueError; refuse far earlier, as a protocol error
    if len(literal.lstrip("-")) > MAX_JSON_DIGITS:
        raise WireError(f"control frame has an integer of over {MAX_JSON_DIGITS} digits")
    return int(literal)


def _parse_float(literal: str) -> float:
    value = float(literal[:64]) if len(literal) <= 64 else math.inf
    if not math.isfinite(value):
        raise WireError("control frame has a number that is not finite")
    return value


def _no_constant(name: str) -> Any:
    raise WireError(f"control frame has a number that is not finite ({name})")


def _check_depth(value: Any) -> None:
    """Iteratively (no recursion for an attacker to exhaust) refuse deep nesting."""
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise WireError(f"control frame is nested deeper than {MAX_JSON_DEPTH} levels")
        children = item.values() if isinstance(item, dict) else item
        todo.extend((child, depth + 1) for child in children)


def canonical_json(value: Any) -> bytes:
    """One byte form per value (sorted keys, no spaces), so signatures are reproducible."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def new_challenge() -> bytes:
    """32 bytes from the OS, unpredictable to the client."""
    return os.urandom(32)


def hello_message(challenge: bytes, run_id: str) -> bytes:
    """What a client signs to prove it holds its node key for this connection."""
    return PROTOCOL_TAG + b" hello" + challenge + run_id.encode()


def make_hello(
    key: NodeKey, challenge: bytes, run_id: str, client_nonce: bytes | None = None
) -> dict[str, Any]:
    """The client's answer to the server's challenge; `client_nonce` (fresh by default) makes
    the server's signatures on this connection unusable on any other."""
    return {
        "type": "hello",
        "node_key": key.public.hex(),
        "nonce": (client_nonce if client_nonce is not None else os.urandom(32)).hex(),
        "sig": key.sign(hello_message(challenge, run_id)).hex(),
    }


def check_hello(message: dict[str, Any], challenge: bytes, run_id: str) -> tuple[bytes, bytes]:
    """(node key, client nonce) of a valid hello; `WireError` for a malformed or wrongly signed
    one."""
    if message.get("type") != "hello":
        raise WireError(f"expected hello, got {message.get('type')!r}")
    node_key = hex_field(message, "node_key", 32)
    client_nonce = hex_field(message, "nonce", 32)
    sig = hex_field(message, "sig", 64)
    if not verify_signature(node_key, hello_message(challenge, run_id), sig):
        raise WireError("hello signature does not verify")
    return node_key, client_nonce


def server_frame_message(
    challenge: bytes, client_nonce: bytes, run_id: str, seq: int, kind: int, body: bytes
) -> bytes:
    """What the server signs for the `seq`-th frame it sends on a connection (welcome = 0)."""
    return (
        PROTOCOL_TAG
        + b" srv"
        + challenge
        + client_nonce
        + hashlib.sha256(run_id.encode()).digest()
        + seq.to_bytes(8, "big")
        + bytes([kind])
        + hashlib.sha256(body).digest()
    )


@dataclass
class FrameSealer:
    """The server's half: signs each frame it sends on one connection, in sending order (the
    caller writes a sealed frame before sealing the next, with no await between)."""

    key: NodeKey
    challenge: bytes
    client_nonce: bytes
    run_id: str
    seq: int = 0

    def seal(self, frame: bytes) -> bytes:
        """`frame` (as `encode_frame` made it) with the signature appended to its body."""
        kind, body = frame[_HEADER.size - 1], frame[_HEADER.size :]
        message = server_frame_message(
            self.challenge, self.client_nonce, self.run_id, self.seq, kind, body
        )
        self.seq += 1
        return encode_frame(kind, body + self.key.sign(message))


@dataclass
class FrameOpener:
    """The client's half: checks each frame from the server against its key, in order."""

    server_key: bytes
    challenge: bytes
    client_nonce: bytes
    run_id: str
    seq: int = 0

    def open(self, frame: Frame) -> Frame:
        """The frame without its signature; `WireError` if it is unsigned or forged."""
        if len(frame.body) < SIG_BYTES:
            raise WireError("coordinator frame is not signed")
        body, sig = frame.body[:-SIG_BYTES], frame.body[-SIG_BYTES:]
        message = server_frame_message(
            self.challenge, self.client_nonce, self.run_id, self.seq, frame.kind, body
        )
        if not verify_signature(self.server_key, message, sig):
            raise WireError(
                "a coordinator frame's signature does not verify (altered or injected on the path)"
            )
        self.seq += 1
        return Frame(frame.kind, body)


def envelope_message(challenge: bytes, seq: int, kind: str, body: dict[str, Any]) -> bytes:
    """What a client signs for its `seq`-th message on the connection that `challenge` opened."""
    return (
        PROTOCOL_TAG
        + b" msg"
        + challenge
        + seq.to_bytes(8, "big")
        + canonical_json({"type": kind, "body": body})
    )


def sign_envelope(
    key: NodeKey, challenge: bytes, seq: int, kind: str, body: dict[str, Any]
) -> dict[str, Any]:
    """A signed client message."""
    sig = key.sign(envelope_message(challenge, seq, kind, body))
    return {"type": kind, "seq": seq, "body": body, "sig": sig.hex()}


def open_envelope(
    message: dict[str, Any], node_key: bytes, challenge: bytes, expected_seq: int
) -> tuple[str, dict[str, Any]]:
    """The (type, body) of a client message after checking its sequence number and signature."""
    seq = message.get("seq")
    body = message.get("body")
    if not isinstance(seq, int) or seq != expected_seq:
        raise WireError(f"message sequence {seq!r} is not the expected {expected_seq}")
    if not isinstance(body, dict):
        raise WireError("message body is not a JSON object")
    sig = hex_field(message, "sig", 64)
    kind = message["type"]
    if not verify_signature(node_key, envelope_message(challenge, seq, kind, body), sig):
        raise WireError(f"signature of {kind} message does not verify")
    return kind, body


def hex_field(message: dict[str, Any], name: str, length: int | None = None) -> bytes:
    """A hex-encoded bytes field, checked for presence, encoding and (optionally) length."""
    value = message.get(name)
    if not isinstance(value, str):
        raise WireError(f"field {name!r} is missing or not a string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise WireError(f"field {name!r} is not hex") from None
    if length is not None and len(raw) != length:
        raise WireError(f"field {name!r} is {len(raw)} bytes, expected {length}")
    return raw
