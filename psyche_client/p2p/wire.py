"""Byte layouts shared by the blob and RPC protocols (libp2p streams and the TCP fast path).

Blob request:  key (32 B) | offset (u64) | length (u64)        -> 48 bytes
Blob response: status (u8) | length (u64) | `length` payload bytes, then the sender closes.
RPC request:   op (u8) | body length (u32) | body
RPC response:  status (u8) | body length (u32) | body
All integers are big-endian.
"""

from __future__ import annotations

import struct
from typing import Final

BLOB_PROTOCOL: Final = "/psyche/blob/1.0.0"
RPC_PROTOCOL: Final = "/psyche/rpc/1.0.0"

BLOB_REQUEST = struct.Struct(">32sQQ")
BLOB_RESPONSE = struct.Struct(">BQ")
RPC_HEADER = struct.Struct(">BI")

STATUS_OK: Final = 0
STATUS_NOT_FOUND: Final = 1
STATUS_BUSY: Final = 2
STATUS_REFUSED: Final = 3
STATUS_BAD_REQUEST: Final = 4

OP_PULL: Final = 1
"""Body: step (u64). Reply: concatenated u16-length-prefixed signed gossip messages."""
OP_INFO: Final = 2
"""Body: empty. Reply: the peer's fast-path address ("host:port" or "")."""
OP_MANIFEST: Final = 3
"""Body: empty. Reply: the signed model manifest the peer serves, or NOT_FOUND."""

MAX_RPC_BODY: Final = 1 << 20
CHUNK: Final = 1 << 20
"""Transfer unit: big enough to amortise per-call overhead, small enough to bound memory."""


class TransferError(Exception):
    """One attempt to get bytes from one source failed (the fetcher tries another)."""


class SourceBusy(TransferError):
    """The source refused for now because it is at its upload limit; try it again later."""


class NotFound(TransferError):
    """The source does not hold that blob (yet)."""


def pack_messages(messages: list[bytes]) -> bytes:
    return b"".join(struct.pack(">H", len(m)) + m for m in messages)


def unpack_messages(data: bytes, limit: int) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    while pos + 2 <= len(data) and len(out) < limit:
        (n,) = struct.unpack_from(">H", data, pos)
        pos += 2
        out.append(data[pos : pos + n])
        pos += n
    return out
