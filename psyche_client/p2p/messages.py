"""Signed gossip messages: ANNOUNCE (a new result exists), MOMENTUM (a trainer's disclosed
momentum for a step exists) and HAVE (I hold a copy of either).

Binary, fixed field order, so a signature covers exactly one byte string and decoding never
guesses. The signature is the sender's node key over a domain tag plus the body; the gossipsub
envelope's own signature only proves who *forwarded* a message, so every message carries its own.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from .identity import NodeId, NodeKey, verify_signature

MAGIC = b"PSY1"
KIND_ANNOUNCE = 1
KIND_HAVE = 2
KIND_MOMENTUM = 3
"""A trainer's momentum disclosure for the batch it trained (what verifiers recompute from). Its
own kind, not a flag in `batch_id`, so it shares the result's (step, batch_id) and the signature
binds which of the two a commitment is for."""
CLAIM_KINDS = (KIND_ANNOUNCE, KIND_MOMENTUM)
"""Kinds that are the sender's own claim (a HAVE only re-announces one)."""
SIGN_DOMAIN = b"psyche/p2p/gossip/v1\x00"
MAX_MESSAGE_BYTES = 2048
"""Gossip messages are tiny; anything larger is rejected before its signature is checked."""
MAX_STRING_BYTES = 256

_FIXED = struct.Struct(">QQ32s32sQ")  # step, batch_id, sender, commitment, payload_size


class MessageError(ValueError):
    """A gossip message that cannot be decoded or fails its signature."""


@dataclass(frozen=True)
class Announcement:
    """A signed claim: `sender` trained `batch_id` at `step`; its payload hashes to `commitment`.

    `kind` is ANNOUNCE for the trainer's own result, MOMENTUM for its momentum disclosure of the
    same (step, batch_id); a HAVE is either record re-signed by a holder (`sender` = holder) so
    fetchers learn extra sources for the same commitment.
    `p2p_addr` is a libp2p multiaddr (with /p2p/), `fast_addr` is "host:port" of the plain TCP
    fast path, or "" when the sender offers none.
    """

    run_id: str
    step: int
    batch_id: int
    sender: NodeId
    commitment: bytes
    payload_size: int
    p2p_addr: str = ""
    fast_addr: str = ""
    kind: int = KIND_ANNOUNCE
    signature: bytes = b""

    @property
    def key(self) -> tuple[int, int, bytes]:
        """Identity of the claimed result, shared by its ANNOUNCE and all its HAVEs."""
        return (self.step, self.batch_id, self.commitment)

    def body(self) -> bytes:
        parts = [MAGIC, bytes([self.kind])]
        for s in (self.run_id, self.p2p_addr, self.fast_addr):
            raw = s.encode()
            if len(raw) > MAX_STRING_BYTES:
                raise MessageError("string field too long")
            parts.append(struct.pack(">H", len(raw)) + raw)
        parts.append(
            _FIXED.pack(self.step, self.batch_id, self.sender, self.commitment, self.payload_size)
        )
        return b"".join(parts)

    def signed(self, key: NodeKey) -> Announcement:
        if key.node_id != self.sender:
            raise MessageError("signer is not the sender")
        unsigned = replace(self, signature=b"")
        return replace(unsigned, signature=key.sign(SIGN_DOMAIN + unsigned.body()))

    def verify(self) -> bool:
        return verify_signature(self.sender, SIGN_DOMAIN + self.body(), self.signature)

    def encode(self) -> bytes:
        if len(self.signature) != 64:
            raise MessageError("unsigned message")
        return self.body() + self.signature

    def as_have(self, holder: NodeKey, p2p_addr: str, fast_addr: str) -> Announcement:
        """The HAVE a holder publishes after it verified this result."""
        return replace(
            self,
            kind=KIND_HAVE,
            sender=holder.node_id,
            p2p_addr=p2p_addr,
            fast_addr=fast_addr,
            signature=b"",
        ).signed(holder)


def decode(data: bytes) -> Announcement:
    """Decode and verify a gossip message; raises MessageError on anything malformed."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError("message too large")
    if len(data) < len(MAGIC) + 1 or data[:4] != MAGIC:
        raise MessageError("bad magic")
    kind = data[4]
    if kind not in (*CLAIM_KINDS, KIND_HAVE):
        raise MessageError("unknown kind")
    pos = 5
    strings: list[str] = []
    try:
        for _ in range(3):
            (n,) = struct.unpack_from(">H", data, pos)
            pos += 2
            if n > MAX_STRING_BYTES or pos + n > len(data):
                raise MessageError("bad string field")
            strings.append(data[pos : pos + n].decode())
            pos += n
        step, batch_id, sender, commitment, size = _FIXED.unpack_from(data, pos)
    except (struct.error, UnicodeDecodeError) as exc:
        raise MessageError(f"truncated message: {exc}") from exc
    pos += _FIXED.size
    signature = data[pos:]
    if len(signature) != 64:
        raise MessageError("bad signature length")
    msg = Announcement(
        run_id=strings[0],
        step=step,
        batch_id=batch_id,
        sender=sender,
        commitment=commitment,
        payload_size=size,
        p2p_addr=strings[1],
        fast_addr=strings[2],
        kind=kind,
        signature=signature,
    )
    if not msg.verify():
        raise MessageError("bad signature")
    return msg
