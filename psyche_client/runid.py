"""Run ids: a short human name on the outside, 32 bytes inside the core and the program.

The name (1–32 characters of letters, digits, '-', '_' and '.') is stored zero-padded, so the
32 bytes read back as the name and the on-chain seed is the name itself.
"""

from __future__ import annotations

import re

from psyche_client.errors import UserError

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,32}$")


def run_id_bytes(name: str | bytes) -> bytes:
    """The 32-byte run id of a run name; `UserError` for a name that cannot be one.

    Every `--run`/`--run-id`/run argument goes through here. Raw bytes (at most 32, as tests
    and SDK callers pass them) are only zero-padded.
    """
    if isinstance(name, bytes):
        if len(name) > 32:
            raise UserError(f"run id is {len(name)} bytes; at most 32")
        return name.ljust(32, b"\0")
    if not _NAME.match(name):
        raise UserError(
            f"run name {name!r} must be 1-32 characters of letters, digits, '.', '-' or '_'"
        )
    return name.encode().ljust(32, b"\0")


def run_name(run_id: bytes) -> str:
    """The name a 32-byte run id was made from (undecodable bytes shown as hex)."""
    raw = run_id.rstrip(b"\0")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return run_id.hex()
    return text if _NAME.match(text) else run_id.hex()
