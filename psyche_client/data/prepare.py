"""Text, jsonl and parquet files → token shards and a manifest (`psyche-client data prepare`).

Documents stream through `datasets` (local files, streaming mode: batches, no Arrow cache, so
memory stays bounded by a batch whatever the corpus size) and a HF `tokenizers` tokenizer; each
document's ids, then the separator (the tokenizer's EOS unless told otherwise), go straight into
the current shard file. Shards are written as hidden temp files and renamed when complete, and
the manifest comes last: an interrupted run leaves no shard that looks finished and no manifest.

The token dtype follows the vocabulary: u16 while every id fits (≤ 65536), else u32 (Llama-3's
128256). `datasets` and `tokenizers` are imported only here, when a prepare actually runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from psyche_client.data.manifest import (
    MANIFEST_NAME,
    STAMP_NAME,
    Manifest,
    Shard,
    dtype_for_vocab,
    write_manifest,
)
from psyche_client.data.provider import DataError, token_dtype

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
EOS_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[SEP]")
DEFAULT_SHARD_TOKENS = 1 << 27
BATCH_DOCS = 256


@dataclass
class Progress:
    """Callbacks a front end (the CLI's progress bars) can follow; all optional."""

    on_files: Callable[[list[Path]], None] | None = None  # all input files, once
    on_file: Callable[[Path], None] | None = None
    on_batch: Callable[[int, int], None] | None = None  # (documents, tokens) in this batch
    on_shard: Callable[[Shard], None] | None = None
    on_done: Callable[[], None] | None = None


@dataclass
class LoadedTokenizer:
    tokenizer: Any  # tokenizers.Tokenizer
    sha256: str
    vocab_size: int
    eos_id: int | None
    source: Path


def load_tokenizer(path: str | os.PathLike[str]) -> LoadedTokenizer:
    """A tokenizer.json file, or a HF tokenizer/model directory holding one (its
    tokenizer_config.json / special_tokens_map.json name the EOS token)."""
    from tokenizers import Tokenizer

    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise DataError(
            f"{path}: no tokenizer.json (give the file, or a HF tokenizer directory saved with "
            "a fast tokenizer)"
        )
    raw = file.read_bytes()
    try:
        tok = Tokenizer.from_str(raw.decode())
    except Exception as e:  # noqa: BLE001 - the Rust parser's errors have no common type
        raise DataError(f"{file}: not a HF tokenizers file ({str(e).splitlines()[0]})") from None
    tok.no_truncation()
    tok.no_padding()
    ids = list(tok.get_vocab(with_added_tokens=True).values())
    vocab = max(max(ids, default=-1) + 1, tok.get_vocab_size(with_added_tokens=True))
    eos = _eos_from_config(file.parent, tok)
    if eos is None:
        eos = next((i for n in EOS_NAMES if (i := tok.token_to_id(n)) is not None), None)
    return LoadedTokenizer(tok, hashlib.sha256(raw).hexdigest(), vocab, eos, file)


def _eos_from_config(directory: Path, tok: Any) -> int | None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            eos = json.loads((directory / name).read_text()).get("eos_token")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(eos, dict):
            eos = eos.get("content")
        if isinstance(eos, str) and (i := tok.token_to_id(eos)) is not None:
            return int(i)
    return None


def resolve_separator(tok: LoadedTokenizer, separator: str | None) -> int | None:
    """The id put after each document: `separator` (a token or an id; "none" for nothing), else
    the tokenizer's EOS."""
    if separator is None:
        if tok.eos_id is None:
            raise DataError(
                f"{tok.source}: no EOS token found to separate documents; pass --separator "
                "TOKEN (or an id, or none)"
            )
        return tok.eos_id
    if separator.lower() == "none":
        return None
    if separator.isdigit():
        sep = int(separator)
    elif (found := tok.tokenizer.token_to_id(separator)) is not None:
        sep = int(found)
    else:
        raise DataError(f"separator {separator!r} is not a token of {tok.source}")
    if not 0 <= sep < tok.vocab_size:
        raise DataError(f"separator id {sep} is outside the vocabulary (size {tok.vocab_size})")
    return sep


def expand_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Input files in order; a directory contributes its supported files, sorted by name."""
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and _builder(f) is not None)
            if not found:
                raise DataError(f"{p}: no .txt, .jsonl or .parquet files inside")
            out.extend(found)
        elif p.is_file():
            if _builder(p) is None:
                raise DataError(
                    f"{p}: unknown input type; use {', '.join(TEXT_SUFFIXES + JSON_SUFFIXES)} "
                    "or .parquet"
                )
            out.append(p)
        else:
            raise DataError(f"{p}: no such input file")
    if not out:
        raise DataError("give at least one input file")
    return out


def _builder(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    if name.endswith(JSON_SUFFIXES):
        return "json"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def iter_documents(
    path: Path, text_field: str, text_split: str = "paragraph"
) -> Iterator[list[str]]:
    """Batches of documents from one file, streamed: a text file's paragraphs (or lines, or the
    whole file), the `text_field` of each jsonl record or parquet row."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local files only: never ask the Hub
    import datasets

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity(logging.CRITICAL)  # its read errors become ours, below
    builder = _builder(path)
    kwargs: dict[str, Any] = {}
    if builder == "text":
        kwargs["sample_by"] = text_split
        field = "text"
    else:
        field = text_field
    try:
        if builder == "parquet":
            _check_parquet_column(path, text_field)
            kwargs["columns"] = [text_field]
        ds = datasets.load_dataset(
            builder, data_files=[str(path)], split="train", streaming=True, **kwargs
        )
        for batch in ds.iter(batch_size=BATCH_DOCS):
            if field not in batch:
                raise DataError(
                    f"{path}: no field {field!r} (fields: {', '.join(sorted(batch))}); "
                    "pass --text-field"
                )
            docs = batch[field]
            for d in docs:
                if d is not None and not isinstance(d, str):
                    raise DataError(f"{path}: field {field!r} holds {type(d).__name__}, not text")
            yield [d for d in docs if d]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow/datasets parse errors have many types
        msg = str(e).strip().splitlines()
        raise DataError(
            f"{path}: cannot read as {builder} ({msg[0] if msg else type(e).__name__})"
        ) from None


def _check_parquet_column(path: Path, field: str) -> None:
    """The text column must exist (read from the footer: datasets' own error is a schema dump)."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    if field not in names:
        raise DataError(
            f"{path}: no field {field!r} (fields: {', '.join(names)}); pass --text-field"
        )


class ShardWriter:
    """Writes tokens into shards of `shard_tokens`, each a temp file renamed once complete."""

    def __init__(
        self, out: Path, dtype: str, shard_tokens: int, on_shard: Callable[[Shard], None] | None
    ) -> None:
        self.out, self.dtype, self.np_dtype = out, dtype, token_dtype(dtype)
        self.shard_tokens, self.on_shard = shard_tokens, on_shard
        self.shards: list[Shard] = []
        self._file: Any = None
        self._hash: Any = None
        self._count = 0

    def write(self, ids: np.ndarray) -> None:
        arr = ids.astype(self.np_dtype, copy=False)
        while arr.size:
            if self._file is None:
                self._open()
            take = min(arr.size, self.shard_tokens - self._count)
            data = arr[:take].tobytes()
            self._file.write(data)
            self._hash.update(data)
            self._count += take
            arr = arr[take:]
            if self._count == self.shard_tokens:
                self._finish()

    def close(self) -> list[Shard]:
        if self._file is not None and self._count:
            self._finish()
        return self.shards

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            self._file = None

    def _name(self) -> str:
        return f"shard_{len(self.shards):05d}.{self.dtype}.bin"

    def _open(self) -> None:
        self._tmp = self.out / f".{self._name()}.tmp"
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in _finish/abort
        self._hash = hashlib.sha256()
        self._count = 0

    def _finish(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        shard = Shard(self._name(), self._count, self._hash.hexdigest())
        os.replace(self._tmp, self.out / shard.name)
        self.shards.append(shard)
        if self.on_shard is not None:
            self.on_shard(shard)


def prepare(
    inputs: Sequence[str | os.PathLike[str]],
    tokenizer: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    seq_len: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    text_field: str = "text",
    text_split: str = "paragraph",
    separator: str | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Manifest:
    """Tokenize `inputs` into shards in `out` and write its manifest (module docstring)."""
    files = expand_inputs(inputs)
    if text_split not in ("line", "paragraph", "document"):
        raise DataError(f"--text-split {text_split!r}: use line, paragraph or document")
    tok = load_tokenizer(tokenizer)
    sep = resolve_separator(tok, separator)
    chosen = dtype_for_vocab(tok.vocab_size)
    if dtype is not None:
        token_dtype(dtype)
        if dtype == "u16" and chosen == "u32":
            raise DataError(f"a vocabulary of {tok.vocab_size} needs u32 tokens, not u16")
        chosen = dtype
    per_shard = _shard_size(shard_tokens, seq_len)
    out_dir = _prepare_out(Path(out), overwrite)
    progress = progress or Progress()
    writer = ShardWriter(out_dir, chosen, per_shard, progress.on_shard)
    documents = 0
    if progress.on_files:
        progress.on_files(files)
    try:
        for path in files:
            if progress.on_file:
                progress.on_file(path)
            for docs in iter_documents(path, text_field, text_split):
                if not docs:
                    continue
                encs = tok.tokenizer.encode_batch(docs, add_special_tokens=False)
                parts = [np.asarray(e.ids, dtype=np.int64) for e in encs]
                if sep is not None:
                    tail = np.array([sep], dtype=np.int64)
                    parts = [x for p in parts for x in (p, tail)]
                ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
                writer.write(ids)
                documents += len(docs)
                if progress.on_batch:
                    progress.on_batch(len(docs), int(ids.size))
        shards = writer.close()
        if progress.on_done:
            progress.on_done()
    except BaseException:
        writer.abort()
        raise
    if not shards:
        raise DataError("the inputs hold no text: nothing to write")
    manifest = Manifest(
        dtype=chosen,
        vocab_size=tok.vocab_size,
        separator_id=sep,
        tokenizer_sha256=tok.sha256,
        shards=shards,
        seq_len=seq_len,
        documents=documents,
        inputs=[p.name for p in files],
    )
    write_manifest(out_dir, manifest)
    return manifest


def _shard_size(shard_tokens: int, seq_len: int | None) -> int:
    """Tokens per shard; with a sample length, k·seq_len + 1 so no shard wastes a token."""
    if seq_len is not None and seq_len < 1:
        raise DataError("--seq-len must be positive")
    if seq_len is None:
        if shard_tokens < 2:
            raise DataError("--shard-tokens must be at least 2")
        return shard_tokens
    if shard_tokens < seq_len + 1:
        raise DataError(f"--shard-tokens {shard_tokens} is below one sample ({seq_len + 1} tokens)")
    return (shard_tokens - 1) // seq_len * seq_len + 1


def _prepare_out(out: Path, overwrite: bool) -> Path:
    """An empty output directory; with `overwrite`, an old dataset there is removed (manifest
    first, so an interruption never pairs the old manifest with new shards)."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    entries = [e for e in out.iterdir() if not e.name.startswith(".")]
    if entries and not overwrite:
        raise DataError(f"{out} is not empty; choose a new --out or pass --overwrite")
    if overwrite:
        for name in (MANIFEST_NAME, STAMP_NAME):
            (out / name).unlink(missing_ok=True)
        for e in out.iterdir():
            if e.is_file() and (e.name.startswith("shard_") or e.name.endswith(".tmp")):
                e.unlink()
        if any(not e.name.startswith(".") for e in out.iterdir()):
            raise DataError(f"{out} holds files that are not a prepared dataset; not overwriting")
    return out
