"""The data server tells nothing about its data (sample length, sample count) before auth."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from psyche_client.data.local import LocalTokenProvider
from psyche_client.data.provider import DataError
from psyche_client.data.tcp import AUTH_DOMAIN, TcpDataProvider, serve_data

SEQ_LEN = 13
TOKENS = 4000


def _recv_frame(s: socket.socket) -> bytes:
    (n,) = struct.unpack("<I", s.recv(4))
    body = b""
    while len(body) < n:
        body += s.recv(n - len(body))
    return body


def _run(tmp_path: Path, allowed: set[bytes], body: object) -> None:
    path = tmp_path / "tokens.bin"
    np.arange(TOKENS, dtype="<u2").tofile(path)
    provider = LocalTokenProvider([path], seq_len=SEQ_LEN)

    async def go() -> None:
        server = await serve_data(provider, lambda k: k in allowed, timeout_s=5)
        port = server.sockets[0].getsockname()[1]
        try:
            await asyncio.to_thread(body, port, len(provider))  # type: ignore[arg-type]
        finally:
            server.close()

    asyncio.run(go())


def test_hello_carries_no_sizes_and_a_stranger_learns_none(tmp_path: Path) -> None:
    def body(port: int, samples: int) -> None:
        stranger = Ed25519PrivateKey.generate()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            hello = _recv_frame(s)
            assert len(hello) == 4 + 1 + 32  # magic, version, challenge: nothing else
            challenge = hello[5:37]
            pub = stranger.public_key().public_bytes_raw()
            auth = pub + stranger.sign(AUTH_DOMAIN + challenge)
            s.sendall(struct.pack("<I", len(auth)) + auth)
            reply = _recv_frame(s)
            assert reply.startswith(b"\x01") and b"not authorised" in reply
            assert struct.pack("<Q", samples) not in reply
        with pytest.raises(DataError, match="not authorised"):
            TcpDataProvider("127.0.0.1", port, stranger, timeout_s=5)

    _run(tmp_path, set(), body)


def test_a_member_learns_the_sizes_after_auth(tmp_path: Path) -> None:
    member = Ed25519PrivateKey.generate()

    def body(port: int, samples: int) -> None:
        remote = TcpDataProvider("127.0.0.1", port, member, timeout_s=5)
        try:
            assert (remote.seq_len, len(remote)) == (SEQ_LEN, samples)
            assert remote.get(0).tolist() == list(range(SEQ_LEN + 1))
        finally:
            remote.close()

    _run(tmp_path, {member.public_key().public_bytes_raw()}, body)
