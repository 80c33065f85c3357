"""A weighted mixture of prepared datasets: sample index → (dataset, index in it), the same on
every client.

Every client must read the same tokens for the same sample index, across machines and library
versions, so the mapping uses only integers and SHA-256 (no float sums, no numpy RNG streams,
whose algorithms may change between versions):

- weights become the smallest integers with the same ratios (w_d, W = Σ w_d);
- samples come in blocks of W slots; dataset d owns w_d slots of every block, at positions fixed
  by a seeded Fisher–Yates shuffle, so every block follows the weights exactly;
- slot s of block b, owned by d as its r-th slot, reads d's sample (b·w_d + r) mod len_d, passed
  (with `shuffle`, the default) through a seeded permutation of range(len_d): a Feistel network
  with cycle-walking, O(1) memory whatever the dataset size.

The mixture's length is W · max_d ⌈len_d / w_d⌉: long enough that every sample of every dataset
is read once; a dataset whose weight asks for more than it holds repeats (upsampling).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from psyche_client.data.provider import DataError, TokenDataProvider

MAX_SLOTS = 10_000
"""Bound on W, the block length (and the slot table): weights finer than 1/10000 are refused."""


@dataclass(frozen=True)
class Component:
    path: Path
    weight: Fraction


def integer_weights(weights: Sequence[Fraction]) -> list[int]:
    """The smallest positive integers with the ratios of `weights`."""
    if not weights or any(w <= 0 for w in weights):
        raise DataError("mixture weights must be positive")
    lcm = math.lcm(*(w.denominator for w in weights))
    ints = [int(w * lcm) for w in weights]
    g = math.gcd(*ints)
    ints = [i // g for i in ints]
    if sum(ints) > MAX_SLOTS:
        raise DataError(
            f"mixture weights {', '.join(str(w) for w in weights)} need blocks of {sum(ints)} "
            f"samples; round them (at most {MAX_SLOTS} in all, e.g. 0.3 not 0.30001)"
        )
    return ints


def parse_weight(text: str, where: str) -> Fraction:
    try:
        w = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise DataError(f"{where}: weight {text!r} is not a number") from None
    if w <= 0:
        raise DataError(f"{where}: weight {text!r} must be positive")
    return w


def _prf(key: bytes, *parts: int) -> int:
    """A 64-bit keyed pseudo-random value of integers (SHA-256: same everywhere, forever)."""
    h = hashlib.sha256(key)
    for p in parts:
        h.update(p.to_bytes(16, "little", signed=True))
    return int.from_bytes(h.digest()[:8], "little")


def _key(seed: int, label: str, *parts: int) -> bytes:
    return hashlib.sha256(
        f"psyche-mixture-v1/{label}/{seed}/{'/'.join(map(str, parts))}".encode()
    ).digest()


class FeistelPermutation:
    """A keyed bijection of range(n) computed per element (no table): a balanced 4-round
    Feistel network on the smallest even bit width covering n, cycle-walked back into range
    (fewer than 4 steps expected, since 2^bits < 4n)."""

    ROUNDS = 4

    def __init__(self, n: int, key: bytes) -> None:
        if n < 1:
            raise ValueError("empty permutation")
        self.n, self.key = n, key
        bits = max(2, (n - 1).bit_length())
        self.half = (bits + 1) // 2
        self.mask = (1 << self.half) - 1

    def __call__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(i)
        x = i
        while True:
            left, right = x >> self.half, x & self.mask
            for r in range(self.ROUNDS):
                left, right = right, left ^ (_prf(self.key, r, right) & self.mask)
            x = (left << self.half) | right
            if x < self.n:
                return x


class MixtureProvider(TokenDataProvider):
    """Weighted interleave of several providers of the same sample length (module docstring)."""

    def __init__(
        self,
        providers: Sequence[TokenDataProvider],
        weights: Sequence[int | Fraction],
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if not providers or len(providers) != len(weights):
            raise DataError("a mixture needs one weight per dataset")
        lengths = {p.seq_len for p in providers}
        if len(lengths) != 1:
            raise DataError(f"mixture datasets disagree on the sample length: {sorted(lengths)}")
        self.providers = list(providers)
        self.seq_len = providers[0].seq_len
        self.weights = integer_weights([Fraction(w) for w in weights])
        self.seed = seed
        self.shuffle = shuffle
        self.block = sum(self.weights)
        slots = [d for d, w in enumerate(self.weights) for _ in range(w)]
        key = _key(seed, "slots")
        for i in range(len(slots) - 1, 0, -1):  # Fisher–Yates (modulo bias < 2^-50)
            j = _prf(key, i) % (i + 1)
            slots[i], slots[j] = slots[j], slots[i]
        seen = [0] * len(self.weights)
        self._slots: list[tuple[int, int]] = []
        for d in slots:
            self._slots.append((d, seen[d]))
            seen[d] += 1
        self._sizes = [len(p) for p in providers]
        blocks = max(-(-n // w) for n, w in zip(self._sizes, self.weights, strict=True))
        self._total = self.block * blocks
        self._perms = [
            FeistelPermutation(n, _key(seed, "order", d)) if shuffle else None
            for d, n in enumerate(self._sizes)
        ]
        vocabs = [p.vocab_size for p in providers]
        self.vocab_size = None if None in vocabs else max(v for v in vocabs if v is not None)

    def __len__(self) -> int:
        return self._total

    def for_run(self, run_id: bytes) -> MixtureProvider:
        """The same mixture seeded by the run as well: every client of a run (same run id, same
        mixture file) reads the same samples, and two runs over one mixture file do not."""
        digest = hashlib.sha256(b"psyche-mixture-run-v1/" + run_id + b"/" + str(self.seed).encode())
        seed = int.from_bytes(digest.digest()[:8], "big")
        return MixtureProvider(self.providers, self.weights, seed=seed, shuffle=self.shuffle)

    def locate(self, index: int) -> tuple[int, int]:
        """(dataset number, sample index in that dataset) of mixture sample `index`."""
        if not 0 <= index < self._total:
            raise DataError(f"sample index {index} out of range 0..{self._total - 1}")
        b, s = divmod(index, self.block)
        d, r = self._slots[s]
        local = (b * self.weights[d] + r) % self._sizes[d]
        perm = self._perms[d]
        return d, perm(local) if perm is not None else local

    def get(self, index: int) -> np.ndarray:
        d, i = self.locate(index)
        return self.providers[d].get(i)

    def close(self) -> None:
        for p in self.providers:
            p.close()


def read_mixture_file(path: str | os.PathLike[str]) -> tuple[list[Component], int, bool]:
    """(components, seed, shuffle) of a mixture file:

        {"seed": 0, "shuffle": true,
         "datasets": [{"path": "web", "weight": 3}, {"path": "code", "weight": "1"}]}

    Relative paths are relative to the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read the mixture file ({e})") from None
    try:
        seed, shuffle = int(data.get("seed", 0)), bool(data.get("shuffle", True))
        comps = [
            Component(
                path.parent / str(d["path"]),
                parse_weight(str(d["weight"]), f"{path}: dataset {d['path']}"),
            )
            for d in data["datasets"]
        ]
    except DataError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(
            f'{path}: a mixture file is {{"seed": N, "datasets": [{{"path": DIR, '
            f'"weight": W}}, ...]}} ({e!r})'
        ) from None
    if not comps:
        raise DataError(f"{path}: the mixture lists no datasets")
    return comps, seed, shuffle


def parse_sources(sources: Sequence[str]) -> tuple[list[Component], int, bool] | None:
    """The mixture `--data` asks for, or None for plain files/directories (concatenated).

    A mixture is one `*.json` mixture file, or every source written DIR:WEIGHT."""
    if len(sources) == 1 and sources[0].endswith(".json") and Path(sources[0]).is_file():
        return read_mixture_file(sources[0])
    weighted = [_split_weight(s) for s in sources]
    if all(w is None for w in weighted):
        return None
    if any(w is None for w in weighted):
        raise DataError("give a weight to every --data source (DIR:WEIGHT) or to none")
    return [w for w in weighted if w is not None], 0, True


def _split_weight(source: str) -> Component | None:
    head, sep, tail = source.rpartition(":")
    if not sep or not head or Path(source).exists():
        return None
    try:
        Fraction(tail)
    except (ValueError, ZeroDivisionError):
        return None
    return Component(Path(head), parse_weight(tail, source))


def check_sources(sources: Sequence[str]) -> None:
    """Before joining: every local source exists; prepared directories pass their checks (sizes
    always, sha256 once: see manifest.py). One-line DataError otherwise."""
    from psyche_client.data.manifest import verify_once

    mixture = parse_sources(sources)
    paths = [c.path for c in mixture[0]] if mixture else [Path(s) for s in sources]
    for p in paths:
        if p.is_dir():
            verify_once(p)
        elif not p.is_file():
            raise DataError(f"data file {p} does not exist")


def open_sources(
    sources: Sequence[str], seq_len: int, seed: int | None = None
) -> TokenDataProvider:
    """The provider for local `--data` sources: a mixture, or files/directories in order.

    `seed`, when given (a run-wide seed every client shares), replaces the mixture's own."""
    from psyche_client.data.local import LocalTokenProvider

    mixture = parse_sources(sources)
    if mixture is None:
        return LocalTokenProvider(list(sources), seq_len)
    comps, file_seed, shuffle = mixture
    seed = file_seed if seed is None else seed
    providers = [LocalTokenProvider([c.path], seq_len) for c in comps]
    return MixtureProvider(providers, [c.weight for c in comps], seed=seed, shuffle=shuffle)
