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
from dataclasses import dataclass
from pathlib import Path

from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature


class KeyFileError(ValueError):
    """A key file is missing, unreadable or not a Solana keypair; the message says which."""


@dataclass(frozen=True)
class NodeKey:
    """An ed25519 signing key, with the raw bytes forms the protocol uses."""

    keypair: Keypair

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKey:
        """Build a key from a 32-byte seed (the libp2p key derives from the same seed)."""
        if len(seed) != 32:
            raise KeyFileError(f"an ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(Keypair.from_seed(seed))

    @classmethod
    def generate(cls) -> NodeKey:
        """A fresh random key (OS randomness)."""
        return cls.from_seed(os.urandom(32))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed."""
        return bytes(self.keypair.secret())

    @property
    def public(self) -> bytes:
        """The 32-byte public key."""
        return bytes(self.keypair.pubkey())

    @property
    def pubkey(self) -> Pubkey:
        """The public key as a Solana `Pubkey` (its base58 form is how users see it)."""
        return self.keypair.pubkey()

    def sign(self, message: bytes) -> bytes:
        """A 64-byte ed25519 signature of `message`."""
        return bytes(self.keypair.sign_message(message))


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
        raw = p.read_text()
    except FileNotFoundError:
        raise KeyFileError(f"key file {p} does not exist") from None
    except OSError as e:
        raise KeyFileError(f"cannot read key file {p}: {e.strerror}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
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
