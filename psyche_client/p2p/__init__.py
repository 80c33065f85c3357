"""Peer-to-peer layer: signed result announcements over gossipsub, verified payload transfer
(plain-TCP fast path with libp2p streams as fallback) and model sharing for late joiners.

The client loop uses `P2PNode`; everything else here is its machinery. See docs/p2p.md.
"""

from .config import P2PConfig
from .errors import ModelUnavailable, P2PError
from .identity import NodeId, NodeKey
from .manifest import Manifest
from .messages import Announcement
from .model import ModelSnapshot
from .node import NodeStats, P2PNode, sha256_commitment
from .transfer import FetchFailed

__all__ = [
    "Announcement",
    "FetchFailed",
    "Manifest",
    "ModelSnapshot",
    "ModelUnavailable",
    "NodeId",
    "NodeKey",
    "NodeStats",
    "P2PConfig",
    "P2PError",
    "P2PNode",
    "sha256_commitment",
]
