"""A TCP data server that serves token windows only to authorised clients, and its client.

Why a challenge: the server must serve only clients of the current epoch, identified by their
ed25519 node key (the key the coordinator lists). Checking a signature over a fresh random
challenge proves the peer holds that key right now (no replay), and `authorize(node_key)` —
supplied by the caller, e.g. "is this key in the current epoch's client list" — decides.

Protocol v2. Every message is a frame: u32le body length, then the body. Frame sizes are capped
on both sides before reading the body, and a request names at most `max_samples` indices. The
sizes of the data (sample length, sample count) are told only to an authorised key (v1 sent them
in the hello, to anyone who connected).

    server → client  HELLO  b"PSDD" ‖ u8 version=2 ‖ 32-byte challenge
    client → server  AUTH   32-byte ed25519 public key ‖ 64-byte signature over
                            b"psyche-data-auth-v1" ‖ challenge
    server → client  u8 0 ‖ u32 seq_len ‖ u64 samples (ok) | u8 1 ‖ UTF-8 reason, then close
    client → server  GET    u8 1 ‖ u32 count ‖ count × u64 sample index
    server → client  u8 0 ‖ u32 count ‖ count × (seq_len + 1) × u32 tokens | u8 1 ‖ reason
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from psyche_client.data.provider import DataError, TokenDataProvider

if TYPE_CHECKING:
    import torch

MAGIC = b"PSDD"
VERSION = 2
AUTH_DOMAIN = b"psyche-data-auth-v1"
MAX_REQUEST_FRAME = 1 + 4 + 8 * 4096
OP_GET = 1

Authorize = Callable[[bytes], bool | Awaitable[bool]]


def _frame(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    (n,) = struct.unpack("<I", await reader.readexactly(4))
    if n > limit:
        raise DataError(f"frame of {n} bytes exceeds the {limit} limit")
    return await reader.readexactly(n)


async def _handle(
    provider: TokenDataProvider,
    authorize: Authorize,
    max_samples: int,
    timeout_s: float,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    try:
        challenge = os.urandom(32)
        writer.write(_frame(MAGIC + struct.pack("<B", VERSION) + challenge))
        await writer.drain()
        auth = await asyncio.wait_for(_read_frame(reader, 96), timeout_s)
        if len(auth) != 96:
            raise DataError("malformed auth frame")
        key, sig = auth[:32], auth[32:]
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(sig, AUTH_DOMAIN + challenge)
        except (InvalidSignature, ValueError):
            writer.write(_frame(b"\x01bad signature"))
            return
        try:
            ok = authorize(key)
            if inspect.isawaitable(ok):
                ok = await ok
        except Exception:  # a failing hook must refuse, never crash the server or let anyone in
            ok = False
        if not ok:
            writer.write(_frame(b"\x01node key not authorised for this epoch"))
            return
        writer.write(_frame(b"\x00" + struct.pack("<IQ", provider.seq_len, len(provider))))
        await writer.drain()
        while True:
            try:
                req = await asyncio.wait_for(_read_frame(reader, MAX_REQUEST_FRAME), timeout_s)
            except asyncio.IncompleteReadError:
                return  # client closed
            writer.write(_frame(_answer(provider, req, max_samples)))
            await writer.drain()
    except (DataError, asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        return  # malformed, slow or vanished client: drop it, keep serving others
    finally:
        writer.close()


def _answer(provider: TokenDataProvider, req: bytes, max_samples: int) -> bytes:
    if len(req) < 5 or req[0] != OP_GET:
        return b"\x01unknown request"
    (count,) = struct.unpack_from("<I", req, 1)
    if count > max_samples or len(req) != 5 + 8 * count:
        return b"\x01bad sample count"
    idx = np.frombuffer(req, dtype="<u8", offset=5, count=count)
    try:
        rows = [provider.get(int(i)) for i in idx]
    except DataError as e:
        return b"\x01" + str(e).encode()[:512]
    tokens = np.stack(rows).astype("<u4") if rows else np.zeros(0, "<u4")
    return b"\x00" + struct.pack("<I", count) + tokens.tobytes()


async def serve_data(
    provider: TokenDataProvider,
    authorize: Authorize,
    host: str = "127.0.0.1",
    port: int = 0,
    max_samples: int = 256,
    timeout_s: float = 30.0,
) -> asyncio.Server:
    """Starts serving `provider` on host:port (0 = any free port); returns the asyncio Server.

    The caller keeps the loop running (`await server.serve_forever()`); the bound port is
    `server.sockets[0].getsockname()[1]`. `authorize(node_key)` may be sync or async.
    """
    if max_samples > 4096:
        raise ValueError("max_samples is capped at 4096 by the request frame limit")

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _handle(provider, authorize, max_samples, timeout_s, r, w)

    return await asyncio.start_server(handler, host, port)


class TcpDataProvider(TokenDataProvider):
    """Client of `serve_data`: authenticates with the node key, then fetches samples.

    Blocking sockets on purpose: the trainer asks for a batch and waits for it; every read has a
    timeout so a stalled server raises DataError instead of hanging the step.
    """

    def __init__(
        self,
        host: str,
        port: int,
        node_key: Ed25519PrivateKey,
        timeout_s: float = 10.0,
        max_samples: int = 256,
    ) -> None:
        self.max_samples = max_samples
        self._key = node_key
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as e:
            raise DataError(f"data server {host}:{port} unreachable ({e})") from e
        hello = self._recv_frame(64)
        if len(hello) < 5 or hello[:4] != MAGIC:
            raise DataError(f"{host}:{port} is not a psyche data server (bad hello)")
        if hello[4] != VERSION or len(hello) != 37:
            raise DataError(
                f"data server {host}:{port} speaks protocol v{hello[4]}, this client v{VERSION}"
            )
        challenge = hello[5:37]
        pub = node_key.public_key().public_bytes_raw()
        self._send(pub + node_key.sign(AUTH_DOMAIN + challenge))
        reply = self._recv_frame(1024)
        if reply[:1] != b"\x00":
            raise DataError(f"data server refused: {reply[1:].decode(errors='replace')}")
        if len(reply) != 13:
            raise DataError("data server sent a malformed welcome")
        self.seq_len, self._total = struct.unpack("<IQ", reply[1:13])

    def _send(self, body: bytes) -> None:
        try:
            self._sock.sendall(_frame(body))
        except OSError as e:
            raise DataError(f"data server connection failed ({e})") from e

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self._sock.recv(min(n - len(buf), 1 << 20))
            except OSError as e:
                raise DataError(f"data server connection failed ({e})") from e
            if not chunk:
                raise DataError("data server closed the connection")
            buf += chunk
        return bytes(buf)

    def _recv_frame(self, limit: int) -> bytes:
        (n,) = struct.unpack("<I", self._recv_exact(4))
        if n > limit:
            raise DataError(f"data server frame of {n} bytes exceeds the {limit} limit")
        return self._recv_exact(n)

    def __len__(self) -> int:
        return int(self._total)

    def get_many(self, indices: Sequence[int]) -> np.ndarray:
        """(len(indices), seq_len + 1) int64 tokens, in as few round trips as the cap allows."""
        out = []
        for i in range(0, len(indices), self.max_samples):
            part = [int(x) for x in indices[i : i + self.max_samples]]
            self._send(struct.pack(f"<BI{len(part)}Q", OP_GET, len(part), *part))
            limit = 5 + len(part) * (self.seq_len + 1) * 4
            reply = self._recv_frame(max(limit, 1024))
            if reply[:1] != b"\x00":
                raise DataError(f"data server: {reply[1:].decode(errors='replace')}")
            (count,) = struct.unpack_from("<I", reply, 1)
            if count != len(part) or len(reply) != limit:
                raise DataError("data server sent a malformed reply")
            arr = np.frombuffer(reply, dtype="<u4", offset=5).astype(np.int64)
            out.append(arr.reshape(count, self.seq_len + 1))
        return np.concatenate(out) if out else np.zeros((0, self.seq_len + 1), np.int64)

    def get(self, index: int) -> np.ndarray:
        return self.get_many([index])[0]

    def get_batch(self, indices: Sequence[int]) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.get_many(indices))

    def close(self) -> None:
        self._sock.close()
