"""`psyche-client data prepare` and `data verify`: text → token shards with a manifest, and the
full checksum check of a prepared directory.

Everything heavy (datasets, tokenizers, numpy, rich's progress) is imported inside the commands,
so `--help` and the one-line error path stay fast.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer


def data_prepare(
    inputs: Annotated[
        list[Path],
        typer.Argument(help="Text (.txt/.md), .jsonl or .parquet files, or directories of them."),
    ],
    tokenizer: Annotated[
        Path, typer.Option(help="A tokenizer.json, or a HF tokenizer/model directory.")
    ],
    out: Annotated[Path, typer.Option(help="Directory for the shards and manifest.json.")],
    seq_len: Annotated[
        int | None,
        typer.Option(help="The run's sample length: shards hold k·seq_len + 1 tokens (no waste)."),
    ] = None,
    shard_tokens: Annotated[int, typer.Option(help="Tokens per shard (at most).")] = 1 << 27,
    text_field: Annotated[str, typer.Option(help="The text column of jsonl/parquet.")] = "text",
    text_split: Annotated[
        str, typer.Option(help="Documents of a text file: paragraph, line or document (file).")
    ] = "paragraph",
    separator: Annotated[
        str | None,
        typer.Option(help="Token (or id) after each document; default the EOS; 'none' for none."),
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="u16 or u32; default the smallest the vocabulary fits.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a dataset already in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Tokenize text into shards that `join --data DIR` trains on."""
    from psyche_client.data.prepare import prepare

    with _bars(quiet) as bars:
        manifest = prepare(
            inputs,
            tokenizer,
            out,
            seq_len=seq_len,
            shard_tokens=shard_tokens,
            text_field=text_field,
            text_split=text_split,
            separator=separator,
            dtype=dtype,
            overwrite=overwrite,
            progress=bars.progress() if bars else None,
        )
    print(
        f"{out}: {manifest.tokens} {manifest.dtype} tokens in {len(manifest.shards)} shard(s), "
        f"{manifest.documents} documents, vocab {manifest.vocab_size}, "
        f"separator {manifest.separator_id}"
    )


def data_verify(
    directory: Annotated[Path, typer.Argument(help="A directory written by `data prepare`.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Check every shard's size and sha256 against the manifest (join then skips the hashing)."""
    from psyche_client.data.manifest import load_manifest, verify

    manifest = load_manifest(directory)
    with _bars(quiet) as bars:
        on_bytes = bars.hashing(manifest.tokens * manifest.itemsize) if bars else None
        verify(directory, manifest, on_bytes)
    print(f"{directory}: {len(manifest.shards)} shard(s), {manifest.tokens} tokens: ok")


class _Bars:
    """rich progress bars for prepare (files, documents/tokens) and verify (bytes hashed)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )

    def progress(self) -> Any:
        from psyche_client.data.prepare import Progress

        files = self.bar.add_task("files", total=None, info="")
        totals: dict[str, Any] = {"docs": 0, "tokens": 0, "files": 0, "shards": 0, "name": ""}

        def on_files(paths: list[Path]) -> None:
            self.bar.update(files, total=len(paths))

        def on_file(path: Path) -> None:
            totals["name"] = path.name
            self.bar.update(files, completed=totals["files"], info=self._info(totals))
            totals["files"] += 1

        def on_batch(docs: int, tokens: int) -> None:
            totals["docs"] += docs
            totals["tokens"] += tokens
            self.bar.update(files, info=self._info(totals))

        def on_shard(_shard: object) -> None:
            totals["shards"] += 1

        def on_done() -> None:
            self.bar.update(files, completed=totals["files"], info=self._info(totals))

        return Progress(on_files, on_file, on_batch, on_shard, on_done)

    @staticmethod
    def _info(t: dict[str, Any]) -> str:
        return f"{t['name']}: {t['docs']:,} docs, {t['tokens']:,} tokens, {t['shards']} shards"

    def hashing(self, total: int) -> Any:
        task = self.bar.add_task("sha256", total=total, info="")
        return lambda n: self.bar.advance(task, n)

    def __enter__(self) -> _Bars:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


def _bars(quiet: bool) -> AbstractContextManager[_Bars | None]:
    """Bars only for a person watching: off with --quiet or when stderr is not a terminal."""
    if quiet or not sys.stderr.isatty():
        return nullcontext(None)
    return _Bars()
