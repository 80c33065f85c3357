"""Node identity: one ed25519 key that signs announcements and is the libp2p peer id.

The 32-byte seed is the same secret a Solana keypair file starts with, so a client may use its
wallet key as node key in tests and demos; production keeps a separate node key (PLAN.md).
Everything outside the libp2p thread refers to peers by their raw 32-byte public key
("node id"), never by libp2p's `ID` object, so callers need no libp2p types.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.crypto.ed25519 import create_new_key_pair as libp2p_ed25519_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

NodeId = bytes
"""A peer's 32-byte ed25519 public key."""


@dataclass(frozen=True)
class NodeKey:
    """The node's signing key, built from a 32-byte ed25519 seed."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("an ed25519 seed is 32 bytes")

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(os.urandom(32))

    @classmethod
    def from_solana_keypair_bytes(cls, keypair: bytes) -> NodeKey:
        """A Solana keypair file holds 64 bytes: seed then public key."""
        if len(keypair) != 64:
            raise ValueError("a Solana keypair is 64 bytes")
        return cls(bytes(keypair[:32]))

    @property
    def node_id(self) -> NodeId:
        return bytes(SigningKey(self.seed).verify_key)

    def sign(self, message: bytes) -> bytes:
        return SigningKey(self.seed).sign(message).signature

    def libp2p_key_pair(self) -> KeyPair:
        return libp2p_ed25519_pair(self.seed)


def verify_signature(node_id: NodeId, message: bytes, signature: bytes) -> bool:
    """True when `signature` is `node_id`'s ed25519 signature of `message`."""
    if len(node_id) != 32 or len(signature) != 64:
        return False
    try:
        VerifyKey(node_id).verify(message, signature)
    except (BadSignatureError, ValueError):
        return False
    return True


def peer_id_of(node_id: NodeId) -> ID:
    """The libp2p peer id of a node id (an identity multihash of the key)."""
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(node_id))


def node_id_of(peer_id: ID) -> NodeId | None:
    """The node id inside a libp2p peer id, or None for non-ed25519 peers."""
    try:
        key = peer_id.extract_public_key()
    except Exception:
        return None
    if not isinstance(key, Ed25519PublicKey):
        return None
    return key.to_bytes()
