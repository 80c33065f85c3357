"""Fixtures for the data-preparation tests: a generated corpus in three formats and a BPE
tokenizer trained on it locally (nothing is downloaded). Session-scoped: training the tokenizer
and the first `datasets` load cost about a second each, once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from psyche_client.data.corpus import generate_documents, train_tokenizer
from psyche_client.data.manifest import Manifest
from psyche_client.data.prepare import prepare


@dataclass
class Corpus:
    docs: list[str]  # in file order: txt docs, then jsonl, then parquet
    txt: Path
    jsonl: Path
    parquet: Path
    tokenizer: Path  # a directory: tokenizer.json + tokenizer_config.json naming the EOS

    @property
    def files(self) -> list[Path]:
        return [self.txt, self.jsonl, self.parquet]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("corpus")
    docs = [d.replace("\n\n", " ") for d in generate_documents(90, doc_bytes=300, seed=3)]
    txt, jsonl, parquet = root / "a.txt", root / "b.jsonl", root / "c.parquet"
    txt.write_text("\n\n".join(docs[:30]))  # one document per paragraph
    jsonl.write_text(
        "".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(docs[30:60]))
    )
    pq.write_table(pa.table({"text": docs[60:], "n": list(range(30))}), parquet)
    tok = train_tokenizer(docs, root / "tok", vocab_size=400).parent
    return Corpus(docs, txt, jsonl, parquet, tok)


@pytest.fixture(scope="session")
def prepared(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    """The corpus prepared once (u16, seq_len 16, small shards); tests that damage a dataset
    copy it first."""
    out = tmp_path_factory.mktemp("prepared") / "ds"
    return out, prepare(corpus.files, corpus.tokenizer, out, seq_len=16, shard_tokens=2000)
