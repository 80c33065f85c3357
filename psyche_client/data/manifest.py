"""The manifest of a prepared token directory, and the checks that run before any training.

`psyche-client data prepare` writes shards (flat little-endian u16/u32 token files) and then,
last and atomically, `manifest.json`: a directory without a manifest is not a dataset, so a crash
mid-prepare can never look complete. The manifest fixes what a reader must agree on: the token
dtype, the tokenizer's vocabulary size and hash, the document separator, and for each shard its
token count and sha256.

Checks, each a one-line `DataError`:
- always (cheap, on every open): every shard exists and has exactly tokens × itemsize bytes, so a
  truncated shard, a missing shard or a dtype that disagrees with the files is caught;
- sha256 of every shard: by `psyche-client data verify DIR`, and once on `join` (hashing a large
  dataset costs time, so a passing check leaves a stamp, `.psyche-verified.json`, keyed by each
  shard's size and mtime; a changed file is hashed again);
- vocabulary: a manifest vocab larger than the model's is refused
  (`TokenDataProvider.require_vocab`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psyche_client.data.provider import TOKEN_DTYPES, DataError

MANIFEST_NAME = "manifest.json"
STAMP_NAME = ".psyche-verified.json"
FORMAT = "psyche-tokens"
VERSION = 1
_HASH_CHUNK = 1 << 22
log = logging.getLogger("psyche.data")


def dtype_for_vocab(vocab_size: int) -> str:
    """The smallest token dtype that holds every id below `vocab_size` (u16 up to 65536)."""
    if vocab_size < 1:
        raise DataError(f"vocabulary size {vocab_size} must be positive")
    if vocab_size <= 1 << 16:
        return "u16"
    if vocab_size <= 1 << 32:
        return "u32"
    raise DataError(f"vocabulary size {vocab_size} does not fit u32 token ids")


@dataclass(frozen=True)
class Shard:
    name: str
    tokens: int
    sha256: str


@dataclass
class Manifest:
    dtype: str
    vocab_size: int
    separator_id: int | None
    tokenizer_sha256: str
    shards: list[Shard]
    seq_len: int | None = None
    documents: int = 0
    inputs: list[str] = field(default_factory=list)
    format: str = FORMAT
    version: int = VERSION

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    @property
    def itemsize(self) -> int:
        return TOKEN_DTYPES[self.dtype].itemsize

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["tokens"] = self.tokens
        return out

    @classmethod
    def from_json(cls, data: Any, where: str) -> Manifest:
        try:
            if data.get("format") != FORMAT:
                raise DataError(f"{where} is not a {FORMAT} manifest")
            if data.get("version") != VERSION:
                raise DataError(
                    f"{where} has format version {data.get('version')}; this client reads "
                    f"version {VERSION} (prepare the data again)"
                )
            shards = [
                Shard(str(s["name"]), int(s["tokens"]), str(s["sha256"])) for s in data["shards"]
            ]
            m = cls(
                dtype=str(data["dtype"]),
                vocab_size=int(data["vocab_size"]),
                separator_id=None if data["separator_id"] is None else int(data["separator_id"]),
                tokenizer_sha256=str(data["tokenizer_sha256"]),
                shards=shards,
                seq_len=None if data.get("seq_len") is None else int(data["seq_len"]),
                documents=int(data.get("documents", 0)),
                inputs=[str(i) for i in data.get("inputs", [])],
            )
        except DataError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(f"{where} is not a valid manifest ({e!r})") from None
        if m.dtype not in TOKEN_DTYPES:
            raise DataError(
                f"{where}: unknown dtype {m.dtype!r}; use one of {sorted(TOKEN_DTYPES)}"
            )
        if m.vocab_size > 1 << (8 * m.itemsize):
            raise DataError(f"{where}: vocab size {m.vocab_size} does not fit dtype {m.dtype}")
        if not m.shards:
            raise DataError(f"{where} lists no shards")
        for s in m.shards:
            if Path(s.name).name != s.name or s.name.startswith("."):
                raise DataError(f"{where}: shard name {s.name!r} must be a plain file name")
            if s.tokens < 1:
                raise DataError(f"{where}: shard {s.name} has {s.tokens} tokens")
        return m


def is_prepared(path: str | os.PathLike[str]) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST_NAME).is_file()


def load_manifest(directory: str | os.PathLike[str]) -> Manifest:
    """Read DIR/manifest.json with a one-line error for a missing or malformed manifest."""
    path = Path(directory) / MANIFEST_NAME
    if not Path(directory).is_dir():
        raise DataError(f"{directory}: no such data directory")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{directory} has no {MANIFEST_NAME}: not a prepared dataset (or `data prepare` "
            "did not finish); run `psyche-client data prepare`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is not readable JSON ({e})") from None
    return Manifest.from_json(data, str(path))


def write_manifest(directory: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write the manifest atomically (temp file, fsync, rename)."""
    path = Path(directory) / MANIFEST_NAME
    write_atomic(path, (json.dumps(manifest.to_json(), indent=2) + "\n").encode())
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename, fsync of the directory (which also makes the renames of the
    shards written before the manifest durable: after a power cut, no manifest without them)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(path.parent)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # (platforms without directory fds)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_sizes(directory: str | os.PathLike[str], manifest: Manifest) -> list[Path]:
    """Every shard present with exactly the bytes the manifest says; returns the shard paths."""
    paths = []
    for s in manifest.shards:
        p = Path(directory) / s.name
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            raise DataError(f"{p}: shard listed in the manifest is missing") from None
        want = s.tokens * manifest.itemsize
        if size != want:
            other = [n for n, dt in TOKEN_DTYPES.items() if size == s.tokens * dt.itemsize]
            if other:
                why = f"the size of {s.tokens} {other[0]} tokens: wrong dtype"
            elif size % manifest.itemsize:
                why = f"not a whole number of {manifest.dtype} tokens (wrong dtype?)"
            elif size < want:
                why = "truncated"
            else:
                why = "larger than the manifest says (wrong dtype or a different file?)"
            raise DataError(
                f"{p}: {size} bytes, the manifest says {s.tokens} {manifest.dtype} tokens "
                f"({want} bytes): {why}"
            )
        paths.append(p)
    return paths


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return h.hexdigest()


def verify(
    directory: str | os.PathLike[str],
    manifest: Manifest | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Manifest:
    """Sizes and sha256 of every shard against the manifest; on success, (re)writes the stamp."""
    directory = Path(directory)
    manifest = manifest or load_manifest(directory)
    paths = check_sizes(directory, manifest)
    for s, p in zip(manifest.shards, paths, strict=True):
        if sha256_file(p, on_bytes) != s.sha256:
            raise DataError(f"{p}: sha256 differs from the manifest: the shard is corrupted")
    try:
        write_atomic(directory / STAMP_NAME, json.dumps(_stamp(directory, manifest)).encode())
    except OSError:
        pass  # a read-only dataset is verified again next time; nothing else depends on it
    return manifest


def verify_once(directory: str | os.PathLike[str], manifest: Manifest | None = None) -> Manifest:
    """Sizes always; sha256 only when no stamp vouches for the shards as they are now."""
    directory = Path(directory)
    manifest = manifest or load_manifest(directory)
    check_sizes(directory, manifest)
    try:
        stamp = json.loads((directory / STAMP_NAME).read_text())
    except (OSError, ValueError):
        stamp = None
    if stamp != _stamp(directory, manifest):
        size = manifest.tokens * manifest.itemsize
        if size >= 1 << 30:  # minutes, possibly: say why the client is quiet
            log.warning(
                "%s: checking the sha256 of %.1f GiB once (`psyche-client data verify` does "
                "it ahead of time)",
                directory,
                size / (1 << 30),
            )
        verify(directory, manifest)
    return manifest


def _stamp(directory: Path, manifest: Manifest) -> dict[str, Any]:
    """What a passing sha256 check vouches for: this manifest and these exact files."""
    manifest_hash = hashlib.sha256((directory / MANIFEST_NAME).read_bytes()).hexdigest()
    files = {}
    for s in manifest.shards:
        st = (directory / s.name).stat()
        files[s.name] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return {"manifest_sha256": manifest_hash, "files": files}
