"""Node identity on the p2p layer: peer ids from and to the node's raw 32-byte public key.

The key itself is `psyche_client.identity.NodeKey` (one key class for the package; re-exported
here with `verify_signature` for the p2p modules). Everything outside the libp2p thread refers
to peers by their raw 32-byte public key ("node id"), never by libp2p's `ID` object, so callers
need no libp2p types.
"""

from __future__ import annotations

from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.peer.id import ID

from psyche_client.identity import NodeKey, verify_signature

NodeId = bytes
"""A peer's 32-byte ed25519 public key."""

__all__ = ["NodeId", "NodeKey", "node_id_of", "peer_id_of", "verify_signature"]


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
