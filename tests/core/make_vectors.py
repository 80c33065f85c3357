"""Regenerate crates/coordinator/tests/data/murmur3_vectors.json from Python's mmh3.

The vectors are the cross-language contract: the Rust core's murmur3 and Bloom indices must
match what `mmh3` computes. Run: .venv/bin/python tests/core/make_vectors.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mmh3

BLOOM_BITS = 2560
BLOOM_HASHES = 7
MASK = (1 << 64) - 1
OUT = Path(__file__).resolve().parents[2] / "crates/coordinator/tests/data/murmur3_vectors.json"


def keys() -> list[bytes]:
    out: list[bytes] = [b"", b"a", b"hello", b"The quick brown fox jumps over the lazy dog"]
    # Every tail length 0..15 over two block counts, deterministic content.
    for n in range(0, 49):
        out.append(bytes((i * 37 + n) & 0xFF for i in range(n)))
    # 32-byte commitments / wallets as the filters see them.
    for i in range(8):
        out.append(hashlib.sha256(f"commitment-{i}".encode()).digest())
    out.append(bytes(range(256)))
    return out


def main() -> None:
    vectors = []
    for key in keys():
        for seed in (0, 1, 0x9747B28C, 0xFFFFFFFF):
            h1, h2 = mmh3.hash64(key, seed=seed, x64arch=True, signed=False)
            h128 = mmh3.hash128(key, seed=seed, x64arch=True, signed=False)
            assert h128 == (h2 << 64) | h1
            entry: dict[str, object] = {
                "key": key.hex(),
                "seed": seed,
                "h1": str(h1),
                "h2": str(h2),
            }
            # Bloom bit indices of the key under this seed (the witness salt; 0 = unsalted).
            entry["bloom"] = [((h1 + i * h2) & MASK) % BLOOM_BITS for i in range(BLOOM_HASHES)]
            vectors.append(entry)
    doc = {
        "generator": "mmh3 " + getattr(mmh3, "__version__", "5.x"),
        "bloom_bits": BLOOM_BITS,
        "bloom_hashes": BLOOM_HASHES,
        "note": "h1/h2 = mmh3.hash64(key, seed, x64arch=True, signed=False) as decimal strings",
        "vectors": vectors,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(vectors)} vectors to {OUT}")


if __name__ == "__main__":
    main()
