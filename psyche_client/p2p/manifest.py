"""Signed model manifest: the hash and size of the config and of every tensor, by name.

A joining client trusts a manifest only if the signer passes the caller's trust check (by
default: a member of the run), then accepts each downloaded blob only if its sha256 matches,
so any peer may serve any piece. Canonical JSON keeps the signed bytes unambiguous and easy to
inspect; a manifest for thousands of tensors stays well under the 1 MiB RPC limit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from .identity import NodeId, NodeKey, verify_signature
from .store import Buffer

MANIFEST_DOMAIN = b"psyche/p2p/manifest/v1\x00"


class ManifestError(ValueError):
    pass


@dataclass(frozen=True)
class TensorEntry:
    name: str
    sha256: bytes
    size: int


@dataclass(frozen=True)
class Manifest:
    run_id: str
    signer: NodeId
    config_sha256: bytes
    config_size: int
    tensors: tuple[TensorEntry, ...]
    signature: bytes = b""

    @classmethod
    def build(
        cls, key: NodeKey, run_id: str, config: Buffer, tensors: Mapping[str, Buffer]
    ) -> Manifest:
        entries = tuple(
            TensorEntry(name, hashlib.sha256(data).digest(), len(data))
            for name, data in sorted(tensors.items())
        )
        unsigned = cls(run_id, key.node_id, hashlib.sha256(config).digest(), len(config), entries)
        sig = key.sign(MANIFEST_DOMAIN + unsigned.body())
        return cls(run_id, key.node_id, unsigned.config_sha256, len(config), entries, sig)

    def body(self) -> bytes:
        doc = {
            "run_id": self.run_id,
            "signer": self.signer.hex(),
            "config": [self.config_sha256.hex(), self.config_size],
            "tensors": [[t.name, t.sha256.hex(), t.size] for t in self.tensors],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def encode(self) -> bytes:
        return self.signature + self.body()

    @property
    def total_bytes(self) -> int:
        return self.config_size + sum(t.size for t in self.tensors)

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        sig, body = data[:64], data[64:]
        try:
            doc = json.loads(body)
            m = cls(
                run_id=str(doc["run_id"]),
                signer=bytes.fromhex(doc["signer"]),
                config_sha256=bytes.fromhex(doc["config"][0]),
                config_size=int(doc["config"][1]),
                tensors=tuple(
                    TensorEntry(str(n), bytes.fromhex(h), int(s)) for n, h, s in doc["tensors"]
                ),
                signature=sig,
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ManifestError(f"malformed manifest: {exc}") from exc
        if m.body() != body or not verify_signature(m.signer, MANIFEST_DOMAIN + body, sig):
            raise ManifestError("bad manifest signature")
        return m
