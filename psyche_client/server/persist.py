"""Crash-safe persistence of the coordinator state for the TCP server.

The state is one fixed-size byte string (the core's layout), so persisting it is a single atomic
file replacement: write a temporary file beside the target, fsync it, rename it over the target,
fsync the directory. A crash at any point leaves either the old or the new state on disk, never a
torn one. A checksum trailer catches a file corrupted later (disk, manual edit).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from psyche_client.errors import UserError

_MAGIC = b"PSYSTATE"


class StateFileError(UserError, ValueError):
    """The state file exists but cannot be used; the message says why."""


def save_state(path: str | Path, state: bytes) -> None:
    """Atomically replace `path` with `state` plus a magic header and SHA-256 trailer."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    blob = _MAGIC + len(state).to_bytes(8, "big") + state + hashlib.sha256(state).digest()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        dir_fd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise StateFileError(f"cannot write the state to {p}: {e.strerror or e}") from None


def load_state(path: str | Path) -> bytes | None:
    """The saved state, None if there is no file, `StateFileError` if it is damaged."""
    p = Path(path)
    try:
        blob = p.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateFileError(f"cannot read the state file {p}: {e.strerror or e}") from None
    if len(blob) < len(_MAGIC) + 8 + 32 or not blob.startswith(_MAGIC):
        raise StateFileError(f"{p} is not a Psyche state file")
    size = int.from_bytes(blob[len(_MAGIC) : len(_MAGIC) + 8], "big")
    body = blob[len(_MAGIC) + 8 : -32]
    if len(body) != size:
        raise StateFileError(f"{p} is truncated ({len(body)} of {size} bytes)")
    if hashlib.sha256(body).digest() != blob[-32:]:
        raise StateFileError(f"{p} is corrupt (checksum mismatch)")
    return body
