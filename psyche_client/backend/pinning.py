"""Which coordinator key a client accepts for a TCP run: pinned, or trusted on first use.

A TCP run's coordinator signs every frame it sends with its coordinator key (see
`server.wire.FrameSealer`). That only helps if the client knows which key is genuine. Either the
operator hands it out (`join --coordinator-key HEX`, printed by `serve`), or the client remembers
the key it saw the first time it joined the run (a `known_coordinators.json` next to its node
key, like ssh's known_hosts) and refuses a different one later.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from psyche_client.errors import UserError
from psyche_client.server import wire

log = logging.getLogger("psyche.backend.tcp")

MAX_KNOWN_BYTES = 1 << 20
"""A known-coordinators file larger than this is not one this client wrote."""


class CoordinatorKeyMismatch(UserError, wire.WireError):
    """The server at the run's address holds another key than the pinned or remembered one."""


def parse_coordinator_key(text: str) -> bytes:
    """32 bytes from 64 hex characters; `UserError` otherwise."""
    value = text.strip()
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise UserError(
            f"--coordinator-key must be 64 hex characters (as `serve` prints), not {value!r}"
        )
    return raw


@dataclass
class KeyPolicy:
    """`pinned`: the only key accepted. Else, with `known_path`, trust on first use per run
    (`record=False` checks a remembered key but records none: `doctor` looks, `join` trusts)."""

    pinned: bytes | None = None
    known_path: Path | None = None
    record: bool = True

    def check(self, run_id: str, key: bytes) -> None:
        """Raise `CoordinatorKeyMismatch` unless `key` may be the coordinator of `run_id`."""
        if self.pinned is not None:
            if key != self.pinned:
                raise CoordinatorKeyMismatch(
                    f"the coordinator of run {run_id!r} holds key {key.hex()[:16]}…, not the "
                    f"pinned {self.pinned.hex()[:16]}… (another server at that address, or "
                    "someone on the path)"
                )
            return
        known = self._known().get(run_id)
        if known is not None and known != key.hex():
            raise CoordinatorKeyMismatch(
                f"the coordinator of run {run_id!r} now holds key {key.hex()[:16]}…, not "
                f"{known[:16]}… as when this client first joined (remembered in "
                f"{self.known_path}); if the operator really changed it, delete that entry"
            )

    def remember(self, run_id: str, key: bytes) -> None:
        """After a verified handshake: record a run's key the first time (atomic write)."""
        if self.pinned is not None or self.known_path is None or not self.record:
            return
        known = self._known()
        if run_id in known:
            return
        known[run_id] = key.hex()
        path = self.known_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".known-", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(known, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except OSError as e:
            log.warning("cannot remember the coordinator key in %s: %s", path, e)
            return
        log.info(
            "trusting coordinator key %s for run %s (first use; recorded in %s)",
            key.hex(),
            run_id,
            path,
        )

    def _known(self) -> dict[str, str]:
        if self.known_path is None:
            return {}
        try:
            with self.known_path.open("rb") as f:
                raw = f.read(MAX_KNOWN_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise UserError(f"cannot read {self.known_path}: {e.strerror}") from None
        try:
            data = json.loads(raw) if len(raw) <= MAX_KNOWN_BYTES else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise UserError(f"{self.known_path} is not a known-coordinators file; move it away")
        return data
