"""Operator join control for a TCP run: an allowlist of node keys and/or a join token.

Without it any key that reaches the port may join (and, once a member, fetch from the run's data
server, which serves members). With an allowlist, only listed node keys may join; with a token,
only clients that know it. The token never crosses the wire: the client sends
HMAC-SHA256(token, tag ‖ challenge ‖ node key), bound to its connection's challenge and key, so
an eavesdropper can neither replay it nor learn the token. Refusals are typed (`NotAllowed`,
`JoinTokenRequired`, `BadJoinToken`) so the client can say what to do.

Allowlist file: one node public key per line, base58 (as `psyche-client` prints keys) or 64 hex
characters; `#` starts a comment. The file is re-read when it changes, so an operator can admit
a key without restarting; an edit that does not parse keeps the previous list (and is logged).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psyche_client.errors import UserError
from psyche_client.server import wire
from psyche_client.server.rejection import CoreRejection

log = logging.getLogger("psyche.server.join")

JOIN_PROOF_TAG = wire.PROTOCOL_TAG + b" join-token"
JOIN_REFUSALS = ("NotAllowed", "JoinTokenRequired", "BadJoinToken")


class AllowListError(UserError, ValueError):
    """The allowlist file cannot be read or has a line that is not a node key."""


def join_proof(token: str, challenge: bytes, node_key: bytes) -> bytes:
    """What a client sends to show it knows `token`, for this connection and key only."""
    return hmac.new(token.encode(), JOIN_PROOF_TAG + challenge + node_key, hashlib.sha256).digest()


def parse_node_key(text: str) -> bytes:
    """32 bytes from a base58 public key or 64 hex characters; ValueError otherwise."""
    text = text.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    from solders.pubkey import Pubkey

    try:
        return bytes(Pubkey.from_string(text))
    except ValueError:
        raise ValueError(f"{text[:80]!r} is not a node public key (base58 or hex)") from None


def read_allowlist(path: Path) -> frozenset[bytes]:
    """The keys in an allowlist file, or `AllowListError` naming the file and line."""
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError:
        raise AllowListError(f"allowlist {path} does not exist") from None
    except UnicodeDecodeError:
        raise AllowListError(f"allowlist {path} is not a text file") from None
    except OSError as e:
        raise AllowListError(f"cannot read allowlist {path}: {e.strerror}") from None
    keys: set[bytes] = set()
    for number, line in enumerate(lines, 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            keys.add(parse_node_key(entry))
        except ValueError as e:
            raise AllowListError(f"allowlist {path}:{number}: {e}") from None
    return frozenset(keys)


class AllowList:
    """An allowlist file, re-read when its modification time or size changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._stamp = self._stat()
        self.keys = read_allowlist(self.path)
        if not self.keys:
            log.warning("allowlist %s is empty: nobody may join until keys are added", self.path)

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def current(self) -> frozenset[bytes]:
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.keys = read_allowlist(self.path)
                log.warning("allowlist %s reloaded: %d keys", self.path, len(self.keys))
            except AllowListError as e:
                log.warning("%s; keeping the previous %d keys", e, len(self.keys))
        return self.keys


@dataclass
class JoinPolicy:
    """Who may join: everyone (the default), listed keys, token holders, or both checks."""

    allow: AllowList | None = None
    token: str | None = None

    @property
    def open(self) -> bool:
        return self.allow is None and not self.token

    def check(self, node_key: bytes, challenge: bytes, body: Mapping[str, Any]) -> None:
        """Raise `CoreRejection` unless `node_key` may join on the connection of `challenge`."""
        if self.allow is not None and node_key not in self.allow.current():
            from solders.pubkey import Pubkey

            raise CoreRejection(
                "NotAllowed",
                f"node key {Pubkey.from_bytes(node_key)} is not on this run's allowlist; "
                "send it to the run's operator",
            )
        if self.token:
            proof = body.get("token_proof")
            if proof is None:
                raise CoreRejection(
                    "JoinTokenRequired", "this run needs a join token: pass --join-token"
                )
            expected = join_proof(self.token, challenge, node_key).hex()
            if not isinstance(proof, str) or not hmac.compare_digest(proof, expected):
                raise CoreRejection("BadJoinToken", "the join token is not this run's")
