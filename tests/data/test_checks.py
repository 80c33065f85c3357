"""The checks before training: each damaged or mismatched dataset is a one-line DataError
naming the file, raised when the data is opened (sizes) or verified (sha256), not mid-step."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from psyche_client.cli.data import check_data_sources, open_data
from psyche_client.data import DataError, LocalTokenProvider
from psyche_client.data.manifest import (
    STAMP_NAME,
    load_manifest,
    sha256_file,
    verify,
    verify_once,
)
from psyche_client.errors import UserError


@pytest.fixture
def ds(prepared: tuple[Path, object], tmp_path: Path) -> Path:
    """A private copy of the prepared dataset, free to damage."""
    out = tmp_path / "ds"
    shutil.copytree(prepared[0], out)
    return out


def _one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _edit_manifest(ds: Path, **changes: object) -> None:
    path = ds / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_a_truncated_shard(ds: Path) -> None:
    shard = ds / load_manifest(ds).shards[1].name
    shard.write_bytes(shard.read_bytes()[:-200])
    for check in (lambda: LocalTokenProvider([ds], 16), lambda: verify(ds)):
        with pytest.raises(DataError) as e:
            check()
        assert shard.name in _one_line(e) and "truncated" in str(e.value)


def test_a_missing_shard(ds: Path) -> None:
    name = load_manifest(ds).shards[-1].name
    (ds / name).unlink()
    with pytest.raises(DataError, match=f"{name}: shard listed in the manifest is missing"):
        LocalTokenProvider([ds], 16)


def test_a_manifest_dtype_that_disagrees_with_the_files(ds: Path) -> None:
    _edit_manifest(ds, dtype="u32")
    with pytest.raises(DataError) as e:
        LocalTokenProvider([ds], 16)
    assert "the size of 1985 u16 tokens: wrong dtype" in _one_line(e)


def test_an_odd_sized_shard_is_not_whole_tokens(ds: Path) -> None:
    shard = ds / load_manifest(ds).shards[0].name
    shard.write_bytes(shard.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="not a whole number of u16 tokens"):
        LocalTokenProvider([ds], 16)


def test_a_corrupted_shard_of_the_right_size_fails_sha256(ds: Path) -> None:
    shard = ds / load_manifest(ds).shards[2].name
    raw = bytearray(shard.read_bytes())
    raw[100] ^= 0xFF
    shard.write_bytes(bytes(raw))
    LocalTokenProvider([ds], 16)  # sizes only: opening stays cheap
    with pytest.raises(DataError) as e:
        verify(ds)
    assert shard.name in _one_line(e) and "corrupted" in str(e.value)
    with pytest.raises(DataError, match="corrupted"):
        verify_once(ds)
    with pytest.raises(DataError, match="corrupted"):
        check_data_sources([str(ds)])  # what `join` runs before it joins


def test_sha256_once_then_the_stamp_until_a_file_changes(ds: Path) -> None:
    assert not (ds / STAMP_NAME).exists()
    verify_once(ds)
    assert (ds / STAMP_NAME).exists()
    shard = ds / load_manifest(ds).shards[0].name
    raw = bytearray(shard.read_bytes())
    raw[0] ^= 1
    st = shard.stat()
    shard.write_bytes(bytes(raw))
    # Same size; the stamp must notice the rewrite by mtime (set apart explicitly: coarse clocks).
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(DataError, match="corrupted"):
        verify_once(ds)
    raw[0] ^= 1
    shard.write_bytes(bytes(raw))
    verify_once(ds)  # repaired: hashed again and stamped
    stamp = json.loads((ds / STAMP_NAME).read_text())
    assert set(stamp["files"]) == {s.name for s in load_manifest(ds).shards}


def test_the_stamp_alone_skips_hashing(ds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    verify_once(ds)
    calls: list[Path] = []
    monkeypatch.setattr("psyche_client.data.manifest.sha256_file", lambda p, *a: calls.append(p))
    verify_once(ds)
    assert calls == []


def test_malformed_manifests(ds: Path, tmp_path: Path) -> None:
    for i, (changes, needle) in enumerate(
        [
            ({"format": "other"}, "not a psyche-tokens manifest"),
            ({"version": 99}, "format version 99"),
            ({"dtype": "u8"}, "unknown dtype"),
            ({"vocab_size": 70000}, "does not fit dtype u16"),
            ({"shards": []}, "lists no shards"),
            ({"shards": [{"name": "../x.bin", "tokens": 5, "sha256": ""}]}, "plain file name"),
            ({"shards": [{"name": "x.bin"}]}, "not a valid manifest"),
        ]
    ):
        d = tmp_path / f"m{i}"
        shutil.copytree(ds, d)
        _edit_manifest(d, **changes)
        with pytest.raises(DataError) as e:
            LocalTokenProvider([d], 16)
        assert needle in _one_line(e)
    (ds / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not readable JSON"):
        load_manifest(ds)
    with pytest.raises(DataError, match="no such data file or directory"):
        LocalTokenProvider([tmp_path / "nope"], 16)


def test_vocab_larger_than_the_model_is_refused_before_training(ds: Path) -> None:
    p = LocalTokenProvider([ds], 16)
    with pytest.raises(DataError) as e:
        p.require_vocab(256)
    assert "vocabulary of 400" in _one_line(e) and "vocab_size 256" in str(e.value)
    p.require_vocab(512)  # a larger (padded) model vocabulary is fine
    assert p.get_batch([0, 1]).shape == (2, 17)


def test_flat_files_with_ids_past_the_model_fail_on_the_batch(tmp_path: Path) -> None:
    f = tmp_path / "t.bin"
    np.arange(0, 300, dtype="<u2").tofile(f)
    p = LocalTokenProvider([f], seq_len=8)
    assert p.vocab_size is None
    p.require_vocab(256)  # nothing known up front
    assert p.get_batch([0]).max() < 256
    with pytest.raises(DataError, match="token id 296, the model's vocab_size is 256"):
        p.get_batch([36])


def test_join_sources_accept_prepared_directories(ds: Path, tmp_path: Path) -> None:
    check_data_sources([str(ds)])
    p = open_data([str(ds)], 16, key=None)
    assert isinstance(p, LocalTokenProvider) and p.vocab_size == 400
    flat = tmp_path / "flat.bin"
    np.arange(100, dtype="<u2").tofile(flat)
    check_data_sources([str(ds), str(flat)])  # directories and flat files concatenate
    assert len(open_data([str(flat)], 16, key=None)) == 6
    with pytest.raises(UserError, match="does not exist"):
        check_data_sources([str(tmp_path / "nope")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no manifest.json"):
        check_data_sources([str(empty)])


def test_sha256_file_reports_progress(ds: Path) -> None:
    shard = ds / load_manifest(ds).shards[0].name
    seen: list[int] = []
    assert sha256_file(shard, seen.append) == load_manifest(ds).shards[0].sha256
    assert sum(seen) == shard.stat().st_size


def test_data_serve_checks_its_sources_first(
    ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from psyche_client.cli.app import main

    base = ["data", "serve", "--seq-len=16", "--coordinator=127.0.0.1:9", f"--key={tmp_path / 'k'}"]
    assert main([*base, f"--data={tmp_path / 'nope.bin'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (ds / load_manifest(ds).shards[0].name).unlink()
    assert main([*base, f"--data={ds}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is missing" in err
