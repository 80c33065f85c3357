"""The TCP coordinator's peer directory: where the run's members listen for p2p connections.

Peer discovery is outside consensus (the p2p layer still refuses anyone the core does not list),
but the directory is pushed to every connection, so it must stay as small as the membership:
only a member (a Pending or Healthy client of the state) may advertise, and an entry goes as soon
as its key stops being a member (withdrawn, dropped, ejected, or its slot cleared when the epoch
ends). Each change bumps `version`; connections send the newest encoding when they can, so a slow
reader gets the latest directory, never a backlog of versions.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from psyche_client.server import wire
from psyche_client.server.rejection import CoreRejection

MAX_ADDR_CHARS = 256


class PeerDirectory:
    """Node key -> {"p2p_addr", "fast_addr"} for members only."""

    def __init__(self) -> None:
        self._entries: dict[bytes, dict[str, str]] = {}
        self.version = 0
        self._frame: tuple[int, bytes] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def advertise(self, node_key: bytes, body: Mapping[str, Any], members: Set[bytes]) -> bool:
        """Record a member's endpoints; True if the directory changed."""
        if node_key not in members:
            raise CoreRejection(
                "NotMember", "only a client of the run may advertise endpoints: join first"
            )
        addrs = {k: body.get(k, "") for k in ("p2p_addr", "fast_addr")}
        if not all(isinstance(v, str) and len(v) <= MAX_ADDR_CHARS for v in addrs.values()):
            raise CoreRejection(
                "InvalidMessage", f"addresses must be strings of <= {MAX_ADDR_CHARS} chars"
            )
        if self._entries.get(node_key) == addrs:
            return False
        self._entries[node_key] = addrs
        self.version += 1
        return True

    def prune(self, members: Set[bytes]) -> bool:
        """Drop the entries of keys that are no longer members; True if any went."""
        gone = [k for k in self._entries if k not in members]
        for k in gone:
            del self._entries[k]
        if gone:
            self.version += 1
        return bool(gone)

    def entries(self) -> list[dict[str, str]]:
        return [{"node_key": k.hex(), **v} for k, v in self._entries.items()]

    def frame(self) -> bytes:
        """The "peers" control frame of the current version (encoded once per version)."""
        if self._frame is None or self._frame[0] != self.version:
            body = wire.encode_control({"type": "peers", "peers": self.entries()})
            self._frame = (self.version, body)
        return self._frame[1]
