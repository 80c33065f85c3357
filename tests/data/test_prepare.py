"""`data prepare`: text, jsonl and parquet → shards whose tokens are exactly the documents'
tokens with a separator after each, a manifest that describes them, u16/u32 by vocabulary."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from psyche_client.cli.app import main
from psyche_client.data import DataError, LocalTokenProvider
from psyche_client.data.manifest import dtype_for_vocab, load_manifest
from psyche_client.data.prepare import Progress, load_tokenizer, prepare

if TYPE_CHECKING:
    from tests.data.conftest import Corpus


def _expected(corpus: Corpus, sep: int | None) -> np.ndarray:
    tok = Tokenizer.from_file(str(corpus.tokenizer / "tokenizer.json"))
    ids: list[int] = []
    for doc in corpus.docs:
        ids += tok.encode(doc, add_special_tokens=False).ids
        if sep is not None:
            ids.append(sep)
    return np.array(ids)


def _read_all(out: Path) -> np.ndarray:
    m = load_manifest(out)
    dt = "<u2" if m.dtype == "u16" else "<u4"
    return np.concatenate([np.fromfile(out / s.name, dtype=dt) for s in m.shards]).astype(np.int64)


def test_three_formats_become_the_documents_tokens_and_separators(
    corpus: Corpus, prepared: tuple[Path, object]
) -> None:
    out, m = prepared
    eos = Tokenizer.from_file(str(corpus.tokenizer / "tokenizer.json")).token_to_id("<|endoftext|>")
    assert m.dtype == "u16" and m.vocab_size == 400 and m.separator_id == eos == 0
    assert m.documents == len(corpus.docs) == 90
    assert np.array_equal(_read_all(out), _expected(corpus, eos))
    on_disk = load_manifest(out)
    assert on_disk.to_json() == m.to_json()
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["format"] == "psyche-tokens" and raw["version"] == 1 and raw["tokens"] == m.tokens
    tok_bytes = (corpus.tokenizer / "tokenizer.json").read_bytes()
    assert m.tokenizer_sha256 == hashlib.sha256(tok_bytes).hexdigest()
    assert m.inputs == ["a.txt", "b.jsonl", "c.parquet"]
    for s in m.shards:
        assert hashlib.sha256((out / s.name).read_bytes()).hexdigest() == s.sha256
    # With --seq-len 16 every shard but the last holds k·16 + 1 tokens: no window is wasted.
    assert len(m.shards) > 3
    assert {s.tokens for s in m.shards[:-1]} == {1985} and m.shards[-1].tokens <= 1985
    names = {p.name for p in out.iterdir()} - {".psyche-verified.json"}  # (other tests verify)
    assert names == {"manifest.json", *(s.name for s in m.shards)}  # and no temp file


def test_a_prepared_directory_is_a_local_data_source(prepared: tuple[Path, object]) -> None:
    out, m = prepared
    p = LocalTokenProvider([out], seq_len=16)
    assert p.vocab_size == 400
    assert len(p) == sum((s.tokens - 1) // 16 for s in load_manifest(out).shards)
    tokens = _read_all(out)
    assert np.array_equal(p.get(0), tokens[:17])
    assert np.array_equal(p.get(124), tokens[1985 : 1985 + 17])  # first sample of shard 2
    with pytest.raises(DataError, match="holds u16 tokens"):
        LocalTokenProvider([out], seq_len=16, dtype="u32")


def test_u32_forced_end_to_end_reads_the_same_tokens(
    corpus: Corpus, prepared: tuple[Path, object], tmp_path: Path
) -> None:
    out16, _ = prepared
    m = prepare(
        corpus.files, corpus.tokenizer, tmp_path / "u32", seq_len=16, shard_tokens=2000, dtype="u32"
    )
    assert m.dtype == "u32" and all(s.name.endswith(".u32.bin") for s in m.shards)
    assert (tmp_path / "u32" / m.shards[0].name).stat().st_size == 4 * m.shards[0].tokens
    a, b = LocalTokenProvider([out16], 16), LocalTokenProvider([tmp_path / "u32"], 16)
    assert len(a) == len(b)
    assert all(np.array_equal(a.get(i), b.get(i)) for i in range(0, len(a), 7))


def test_dtype_follows_the_vocabulary() -> None:
    assert dtype_for_vocab(256) == "u16"
    assert dtype_for_vocab(65536) == "u16"  # ids 0..65535
    assert dtype_for_vocab(65537) == "u32"
    assert dtype_for_vocab(128256) == "u32"  # Llama-3
    with pytest.raises(DataError):
        dtype_for_vocab(1 << 33)


def test_a_llama3_sized_vocabulary_prepares_as_u32(tmp_path: Path) -> None:
    """Ids above 65535 (a sparse word-level vocab whose top id is Llama-3's last, 128255)
    must survive: chosen as u32 by the vocabulary alone, written and read back exactly."""
    vocab = {"[UNK]": 0, "the": 1, "cat": 70000, "sat": 99999, "<|end_of_text|>": 128255}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "big.json"))
    assert load_tokenizer(tmp_path / "big.json").vocab_size == 128256
    (tmp_path / "in.txt").write_text("the cat sat\n\nsat the dog")
    m = prepare([tmp_path / "in.txt"], tmp_path / "big.json", tmp_path / "out")
    assert m.dtype == "u32" and m.vocab_size == 128256 and m.separator_id == 128255
    assert _read_all(tmp_path / "out").tolist() == [1, 70000, 99999, 128255, 99999, 1, 0, 128255]
    with pytest.raises(DataError, match="needs u32"):
        prepare([tmp_path / "in.txt"], tmp_path / "big.json", tmp_path / "o2", dtype="u16")


def test_separator_choices(corpus: Corpus, tmp_path: Path) -> None:
    files = [corpus.jsonl]
    plain = prepare(files, corpus.tokenizer, tmp_path / "none", separator="none")
    assert plain.separator_id is None
    by_id = prepare(files, corpus.tokenizer, tmp_path / "id", separator="5")
    toks = _read_all(tmp_path / "id")
    assert by_id.separator_id == 5 and (toks == 5).sum() >= 30
    assert len(toks) == len(_read_all(tmp_path / "none")) + 30
    with pytest.raises(DataError, match="not a token"):
        prepare(files, corpus.tokenizer, tmp_path / "x", separator="<nope>")
    with pytest.raises(DataError, match="outside the vocabulary"):
        prepare(files, corpus.tokenizer, tmp_path / "x", separator="4000")
    bare = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    bare.save(str(tmp_path / "bare.json"))
    with pytest.raises(DataError, match="no EOS token"):
        prepare(files, tmp_path / "bare.json", tmp_path / "x")


def test_input_errors_are_one_line(corpus: Corpus, tmp_path: Path) -> None:
    tok = corpus.tokenizer
    with pytest.raises(DataError, match="no such input file"):
        prepare([tmp_path / "missing.jsonl"], tok, tmp_path / "o")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unknown input type"):
        prepare([tmp_path / "x.csv"], tok, tmp_path / "o")
    with pytest.raises(DataError, match="no field 'body'.*fields: id, text"):
        prepare([corpus.jsonl], tok, tmp_path / "o", text_field="body")
    with pytest.raises(DataError, match="holds int"):
        prepare([corpus.jsonl], tok, tmp_path / "o", text_field="id")
    with pytest.raises(DataError, match="no field 'body' .fields: text, n."):
        prepare([corpus.parquet], tok, tmp_path / "o", text_field="body")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match="cannot read as parquet"):
        prepare([tmp_path / "bad.parquet"], tok, tmp_path / "o")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match="cannot read as json"):
        prepare([tmp_path / "bad.jsonl"], tok, tmp_path / "o")
    (tmp_path / "tok.json").write_text("{}")
    with pytest.raises(DataError, match="not a HF tokenizers file"):
        prepare([corpus.jsonl], tmp_path / "tok.json", tmp_path / "o")
    with pytest.raises(DataError, match="no tokenizer.json"):
        prepare([corpus.jsonl], tmp_path, tmp_path / "o")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no text"):
        prepare([tmp_path / "empty.txt"], tok, tmp_path / "o")


def test_an_existing_dataset_is_replaced_only_when_asked(corpus: Corpus, tmp_path: Path) -> None:
    out = tmp_path / "o"
    first = prepare([corpus.jsonl], corpus.tokenizer, out, shard_tokens=500)
    with pytest.raises(DataError, match="not empty"):
        prepare([corpus.txt], corpus.tokenizer, out)
    second = prepare([corpus.txt], corpus.tokenizer, out, overwrite=True)
    assert len(first.shards) > len(second.shards) == 1
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", second.shards[0].name]
    (out / "notes.md").write_text("mine")
    with pytest.raises(DataError, match="not a prepared dataset"):
        prepare([corpus.txt], corpus.tokenizer, out, overwrite=True)


def test_an_interrupted_prepare_leaves_no_dataset(corpus: Corpus, tmp_path: Path) -> None:
    """Shards appear only complete (temp + rename) and the manifest only at the end: a crash
    after the first shard leaves that shard, no temp file, and no manifest."""

    def crash(_shard: object) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        prepare(
            corpus.files, corpus.tokenizer, out, shard_tokens=500, progress=Progress(on_shard=crash)
        )
    assert [p.name for p in out.iterdir()] == ["shard_00000.u16.bin"]
    with pytest.raises(DataError, match="no manifest.json"):
        LocalTokenProvider([out], seq_len=16)


def test_cli_prepare_and_verify(
    corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    args = [
        "data",
        "prepare",
        str(corpus.jsonl),
        str(corpus.parquet),
        f"--tokenizer={corpus.tokenizer}",
        f"--out={out}",
        "--seq-len=16",
        "--shard-tokens=1000",
        "--quiet",
    ]
    assert main(args) == 0
    m = load_manifest(out)
    assert m.documents == 60 and m.seq_len == 16
    assert f"{m.tokens} u16 tokens in {len(m.shards)} shard(s)" in capsys.readouterr().out
    assert main(["data", "verify", str(out), "-q"]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err
    assert (
        main(["data", "prepare", str(corpus.jsonl), f"--tokenizer={tmp_path}", f"--out={out}2"])
        == 2
    )
    assert "no tokenizer.json" in capsys.readouterr().err


def test_make_prepared_corpus_gives_a_u32_dataset_and_its_tokenizer(tmp_path: Path) -> None:
    from psyche_client.data.corpus import make_prepared_corpus

    tok_dir, data = make_prepared_corpus(tmp_path, n_docs=40, vocab_size=300, seq_len=8)
    m = load_manifest(data)
    assert m.dtype == "u32" and m.vocab_size == 300 and m.documents == 40 and m.seq_len == 8
    assert load_tokenizer(tok_dir).eos_id == m.separator_id == 0
    p = LocalTokenProvider([data], seq_len=8)
    p.require_vocab(300)
    assert p.get_batch([0, len(p) - 1]).max() < 300


def test_progress_bars_follow_files_documents_and_shards(corpus: Corpus, tmp_path: Path) -> None:
    from psyche_client.cli.prepare import _Bars, _bars

    assert _bars(quiet=False).__enter__() is None  # stderr is not a terminal under pytest
    bars = _Bars()
    with bars:
        m = prepare(corpus.files, corpus.tokenizer, tmp_path / "o", shard_tokens=3000,
                    progress=bars.progress())  # fmt: skip
    (task,) = bars.bar.tasks
    assert task.total == task.completed == 3
    assert task.fields["info"] == f"c.parquet: 90 docs, {m.tokens:,} tokens, {len(m.shards)} shards"


def test_help_and_input_errors_load_no_heavy_module(tmp_path: Path) -> None:
    """`data prepare --help` and a mistake in its arguments answer without importing torch,
    datasets or tokenizers (seconds of imports for a one-line answer)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from psyche_client.cli import main\n"
        "assert main(['data', 'prepare', '--help']) == 0\n"
        f"assert main(['data', 'prepare', {str(tmp_path / 'nope.txt')!r}, '--tokenizer=t', "
        "'--out=o']) == 2\n"
        "heavy = [m for m in ('torch', 'datasets', 'tokenizers') if m in sys.modules]\n"
        "print('heavy:', heavy)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "no such input file" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout.strip().splitlines()[-1] == "heavy: []"
