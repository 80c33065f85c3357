"""The TCP coordinator's framing, handshake and signed messages, over a real loopback socket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from psyche_client.identity import (
    KeyFileError,
    NodeKey,
    load_keypair,
    load_or_create_keypair,
    save_keypair,
    verify_signature,
)
from psyche_client.server import wire


async def _pipe(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_frame_round_trip_and_limits() -> None:
    async def go() -> None:
        msg = {"type": "ping", "n": 3}
        frame = await wire.read_frame(await _pipe(wire.encode_control(msg)), 1024)
        assert wire.decode_control(frame) == msg
        state = wire.encode_frame(wire.KIND_STATE, b"\x00" * 100)
        assert (await wire.read_frame(await _pipe(state), 1024)).body == b"\x00" * 100
        with pytest.raises(wire.WireError, match="exceeds the limit"):
            await wire.read_frame(await _pipe(state), 99)
        with pytest.raises(wire.WireError, match="unknown frame kind"):
            await wire.read_frame(await _pipe(wire.encode_frame(9, b"")), 99)
        with pytest.raises(wire.WireError, match="inside a frame body"):
            await wire.read_frame(await _pipe(state[:20]), 1024)
        with pytest.raises(EOFError):
            await wire.read_frame(await _pipe(b""), 1024)
        bad = wire.Frame(wire.KIND_CONTROL, b"\xff\xfe")
        with pytest.raises(wire.WireError, match="not UTF-8 JSON"):
            wire.decode_control(bad)
        with pytest.raises(wire.WireError, match='string "type"'):
            wire.decode_control(wire.Frame(wire.KIND_CONTROL, b"[1,2]"))

    asyncio.run(go())


def test_handshake_and_envelopes_over_tcp() -> None:
    """A real server/client pair: the hello proves the key; replays and forgeries are refused."""
    key = NodeKey.generate()
    other = NodeKey.generate()
    run_id = "run-1"
    seen: list[tuple[str, dict[str, object]]] = []
    errors: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        challenge = wire.new_challenge()
        writer.write(wire.encode_control({"type": "challenge", "nonce": challenge.hex()}))
        hello = wire.decode_control(await wire.read_frame(reader, 4096))
        node_key, _ = wire.check_hello(hello, challenge, run_id)
        seq = 0
        while True:
            try:
                frame = await wire.read_frame(reader, 4096)
            except EOFError:
                break
            try:
                seen.append(
                    wire.open_envelope(wire.decode_control(frame), node_key, challenge, seq)
                )
                seq += 1
            except wire.WireError as e:
                errors.append(str(e))
        writer.close()

    async def go() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        challenge = bytes.fromhex(wire.decode_control(await wire.read_frame(reader, 4096))["nonce"])
        writer.write(wire.encode_control(wire.make_hello(key, challenge, run_id)))
        good = wire.sign_envelope(key, challenge, 0, "witness", {"step": 1})
        writer.write(wire.encode_control(good))
        writer.write(wire.encode_control(good))  # replay: wrong sequence
        forged = wire.sign_envelope(other, challenge, 1, "witness", {"step": 2})
        writer.write(wire.encode_control(forged))  # wrong signer
        altered = dict(wire.sign_envelope(key, challenge, 1, "witness", {"step": 3}))
        altered["body"] = {"step": 4}
        writer.write(wire.encode_control(altered))  # altered body
        writer.write(wire.encode_control(wire.sign_envelope(key, challenge, 1, "health", {})))
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.2)
        server.close()
        await server.wait_closed()

    asyncio.run(go())
    assert seen == [("witness", {"step": 1}), ("health", {})]
    assert len(errors) == 3
    assert "sequence" in errors[0]
    assert all("does not verify" in e for e in errors[1:])


def test_hello_rejects_wrong_challenge_and_bad_fields() -> None:
    key = NodeKey.generate()
    hello = wire.make_hello(key, b"a" * 32, "run")
    assert wire.check_hello(hello, b"a" * 32, "run") == (key.public, bytes.fromhex(hello["nonce"]))
    with pytest.raises(wire.WireError, match="does not verify"):
        wire.check_hello(hello, b"b" * 32, "run")
    with pytest.raises(wire.WireError, match="does not verify"):
        wire.check_hello(hello, b"a" * 32, "other-run")
    with pytest.raises(wire.WireError, match="not hex"):
        wire.check_hello({**hello, "sig": "zz"}, b"a" * 32, "run")
    with pytest.raises(wire.WireError, match="expected 32"):
        wire.check_hello({**hello, "node_key": "00"}, b"a" * 32, "run")


def test_keypair_files(tmp_path: Path) -> None:
    path = tmp_path / "id.json"
    key = load_or_create_keypair(path)
    assert load_keypair(path).public == key.public
    assert verify_signature(key.public, b"m", key.sign(b"m"))
    assert not verify_signature(key.public, b"n", key.sign(b"m"))
    assert not verify_signature(b"short", b"m", key.sign(b"m"))
    with pytest.raises(KeyFileError, match="does not exist"):
        load_keypair(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("not json")
    with pytest.raises(KeyFileError, match="not JSON"):
        load_keypair(tmp_path / "bad.json")
    (tmp_path / "short.json").write_text(json.dumps([1, 2, 3]))
    with pytest.raises(KeyFileError, match="not a Solana keypair"):
        load_keypair(tmp_path / "short.json")
    other = NodeKey.generate()
    (tmp_path / "mismatch.json").write_text(json.dumps(list(key.seed + other.public)))
    with pytest.raises(KeyFileError, match="does not match"):
        load_keypair(tmp_path / "mismatch.json")
    save_keypair(other, path)
    assert load_keypair(path).public == other.public
    assert (path.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"type":"x","v":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"),
        (b'{"type":"x","v":' + b"[" * 40 + b"]" * 40 + b"}", "nested"),
        (b'{"type":"x","v":' + b"7" * 5000 + b"}", "digits"),
        (b'{"type":"x","v":1e99999}', "not finite"),
        (b'{"type":"x","v":NaN}', "not finite"),
    ],
)
def test_hostile_json_is_a_protocol_error(body: bytes, needle: str) -> None:
    """Deep nesting and huge numbers must be a `WireError` (the connection is closed cleanly),
    never a RecursionError or ValueError escaping into the server's accept loop."""
    with pytest.raises(wire.WireError, match=needle):
        wire.decode_control(wire.Frame(wire.KIND_CONTROL, body))


def test_ordinary_json_still_decodes() -> None:
    nested = {"type": "x", "v": [[[{"a": [1, 2.5, -3, True, None, "s"]}]]], "n": 2**63 - 1}
    frame = wire.Frame(wire.KIND_CONTROL, wire.canonical_json(nested))
    assert wire.decode_control(frame) == nested


def test_server_frames_are_sealed_in_order_for_one_connection() -> None:
    """What a client accepts from the server: frames signed by the coordinator key for this
    connection (its challenge and the client's nonce), in sending order, unaltered."""
    server, other = NodeKey.generate(), NodeKey.generate()
    challenge, nonce = b"c" * 32, b"n" * 32
    sealer = wire.FrameSealer(server, challenge, nonce, "run")
    frames = [
        sealer.seal(wire.encode_control({"type": "welcome"})),
        sealer.seal(wire.encode_frame(wire.KIND_STATE, b"state-1")),
        sealer.seal(wire.encode_frame(wire.KIND_STATE, b"state-2")),
    ]

    def frame(raw: bytes) -> wire.Frame:
        return wire.Frame(raw[4], raw[5:])

    opener = wire.FrameOpener(server.public, challenge, nonce, "run")
    assert wire.decode_control(opener.open(frame(frames[0]))) == {"type": "welcome"}
    assert opener.open(frame(frames[1])).body == b"state-1"
    with pytest.raises(wire.WireError, match="does not verify"):  # replayed
        opener.open(frame(frames[1]))
    fresh = wire.FrameOpener(server.public, challenge, nonce, "run", seq=2)
    assert fresh.open(frame(frames[2])).body == b"state-2"
    cases = {
        "reordered": (wire.FrameOpener(server.public, challenge, nonce, "run", 1), frames[2]),
        "other key": (wire.FrameOpener(other.public, challenge, nonce, "run"), frames[0]),
        "other connection": (
            wire.FrameOpener(server.public, challenge, b"m" * 32, "run"),
            frames[0],
        ),
        "other run": (wire.FrameOpener(server.public, challenge, nonce, "run2"), frames[0]),
        "altered": (
            wire.FrameOpener(server.public, challenge, nonce, "run", 1),
            frames[1][:-70] + b"X" + frames[1][-69:],
        ),
    }
    for name, (check, raw) in cases.items():
        with pytest.raises(wire.WireError, match="does not verify"):
            check.open(frame(raw))
            pytest.fail(name)
    with pytest.raises(wire.WireError, match="not signed"):
        opener.open(wire.Frame(wire.KIND_STATE, b"short"))
