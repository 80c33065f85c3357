"""Identities: the wallet that signs transactions and the node key that signs results.

A Psyche participant has two ed25519 keys (see docs/protocol.md, "Identity"): the funded Solana
wallet, and a node key registered with it at join that signs TCP messages and result commitments
and is the libp2p peer id. Keeping the wallet out of the networking process is the default; tests
and demos may use one key for both. Both are read from Solana's keypair file format (a JSON array
of 64 integers: the 32-byte seed followed by the 32-byte public key).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from psyche_client.errors import UserError


class KeyFileError(UserError, ValueError):
    """A key file is missing, unreadable or not a Solana keypair; the message says which."""


@dataclass(frozen=True)
class NodeKey:
    """An ed25519 signing key from a 32-byte seed: signs TCP messages, results and p2p
    announcements, and is the libp2p peer identity (`libp2p_key_pair`). The one key class of the
    package; `psyche_client.p2p.identity` re-exports it."""

    seed: bytes = field(repr=False)
    keypair: Keypair = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise KeyFileError(f"an ed25519 seed is 32 bytes, got {len(self.seed)}")
        object.__setattr__(self, "seed", bytes(self.seed))
        object.__setattr__(self, "keypair", Keypair.from_seed(self.seed))

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKey:
        """Build a key from a 32-byte seed (the libp2p key derives from the same seed)."""
        return cls(seed)

    @classmethod
    def from_solana_keypair_bytes(cls, keypair: bytes) -> NodeKey:
        """A key from the 64 bytes of a Solana keypair file (seed, then public key)."""
        if len(keypair) != 64:
            raise KeyFileError(f"a Solana keypair is 64 bytes, got {len(keypair)}")
        return cls(bytes(keypair[:32]))

    @classmethod
    def generate(cls) -> NodeKey:
        """A fresh random key (OS randomness)."""
        return cls(os.urandom(32))

    @property
    def public(self) -> bytes:
        """The 32-byte public key."""
        return bytes(self.keypair.pubkey())

    @property
    def node_id(self) -> bytes:
        """The 32-byte public key, as the p2p layer names peers (same as `public`)."""
        return self.public

    @property
    def pubkey(self) -> Pubkey:
        """The public key as a Solana `Pubkey` (its base58 form is how users see it)."""
        return self.keypair.pubkey()

    def sign(self, message: bytes) -> bytes:
        """A 64-byte ed25519 signature of `message`."""
        return bytes(self.keypair.sign_message(message))

    def libp2p_key_pair(self) -> Any:
        """The libp2p key pair of this key (imported here so the CLI does not load libp2p)."""
        from libp2p.crypto.ed25519 import create_new_key_pair

        return create_new_key_pair(self.seed)


def verify_signature(public: bytes, message: bytes, signature: bytes) -> bool:
    """True if `signature` is `public`'s ed25519 signature of `message`; False on any bad input."""
    if len(public) != 32 or len(signature) != 64:
        return False
    try:
        return Signature.from_bytes(signature).verify(Pubkey.from_bytes(public), message)
    except ValueError:
        return False


def load_keypair(path: str | Path) -> NodeKey:
    """Read a Solana keypair file, with a one-line error naming the file on any problem."""
    p = Path(path).expanduser()
    try:
        blob = p.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key file {p} does not exist") from None
    except IsADirectoryError:
        raise KeyFileError(f"key file {p} is a directory") from None
    except OSError as e:
        raise KeyFileError(f"cannot read key file {p}: {e.strerror}") from None
    if len(blob) > 4096:  # a keypair file is ~200 bytes; never parse a large file
        raise KeyFileError(f"key file {p} is not a Solana keypair ({len(blob)} bytes)")
    try:
        data = json.loads(blob.decode("utf-8"))
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {p} is not a Solana keypair (not text)") from None
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise KeyFileError(f"key file {p} is not JSON (expected a Solana keypair file)") from None
    if (
        not isinstance(data, list)
        or len(data) != 64
        or not all(isinstance(b, int) and 0 <= b < 256 for b in data)
    ):
        raise KeyFileError(f"key file {p} is not a Solana keypair (expected 64 integers 0..255)")
    key = NodeKey.from_seed(bytes(data[:32]))
    if key.public != bytes(data[32:]):
        raise KeyFileError(f"key file {p} is corrupt: its public key does not match its seed")
    return key


def save_keypair(key: NodeKey, path: str | Path) -> None:
    """Write `key` as a Solana keypair file atomically, readable by its owner only."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(list(key.seed + key.public), f)
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_or_create_keypair(path: str | Path) -> NodeKey:
    """Load the key at `path`, creating a new one there first if the file does not exist."""
    p = Path(path).expanduser()
    if not p.exists():
        save_keypair(NodeKey.generate(), p)
    return load_keypair(p)
