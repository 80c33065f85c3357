"""Data providers: local memmapped files, HTTP byte ranges, the authenticated TCP server."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from psyche_client.data import (
    DataError,
    HttpTokenProvider,
    LocalTokenProvider,
    TcpDataProvider,
    generate_text,
    make_corpus,
    serve_data,
    tokenize_bytes,
)


def _all_tokens(files: list[Path]) -> list[np.ndarray]:
    return [np.fromfile(f, dtype="<u2").astype(np.int64) for f in files]


def test_corpus_is_deterministic_byte_level_text(tmp_path: Path) -> None:
    assert generate_text(1000, seed=5) == generate_text(1000, seed=5)
    assert generate_text(1000, seed=5) != generate_text(1000, seed=6)
    a = make_corpus(tmp_path / "a", n_tokens=5000, seed=2, n_files=2)
    b = make_corpus(tmp_path / "b", n_tokens=5000, seed=2, n_files=2)
    assert [f.read_bytes() for f in a] == [f.read_bytes() for f in b]
    toks = np.concatenate(_all_tokens(a))
    assert len(toks) == 5000 and toks.max() < 256
    assert bytes(toks[:20].astype(np.uint8)).decode() == generate_text(5000, seed=2)[:20]
    assert tokenize_bytes("é").tolist() == [0xC3, 0xA9]


def test_local_windows_span_several_files_in_order(corpus_files: list[Path]) -> None:
    seq = 32
    p = LocalTokenProvider(corpus_files, seq_len=seq)
    files = _all_tokens(corpus_files)
    per_file = [(len(t) - 1) // seq for t in files]
    assert len(p) == sum(per_file)
    x = p.get(0)
    assert x.dtype == np.int64 and x.shape == (seq + 1,)
    assert np.array_equal(x, files[0][: seq + 1])
    assert np.array_equal(p.get(1)[0], files[0][seq])  # windows overlap by one token
    assert np.array_equal(p.get(per_file[0]), files[1][: seq + 1])  # first sample of file 2
    batch = p.get_batch([0, per_file[0]])
    assert tuple(batch.shape) == (2, seq + 1)
    with pytest.raises(DataError, match="out of range"):
        p.get(len(p))


def test_seeded_shuffle_is_a_reproducible_permutation(corpus_files: list[Path]) -> None:
    plain = LocalTokenProvider(corpus_files, seq_len=32)
    a = LocalTokenProvider(corpus_files, seq_len=32, shuffle_seed=7)
    b = LocalTokenProvider(corpus_files, seq_len=32, shuffle_seed=7)
    c = LocalTokenProvider(corpus_files, seq_len=32, shuffle_seed=8)
    n = len(plain)
    assert all(np.array_equal(a.get(i), b.get(i)) for i in range(0, n, 37))
    assert not all(np.array_equal(a.get(i), c.get(i)) for i in range(10))
    seen = {a.get(i).tobytes() for i in range(n)}
    assert seen == {plain.get(i).tobytes() for i in range(n)}


def test_u32_tokens(tmp_path: Path) -> None:
    (f,) = make_corpus(tmp_path, n_tokens=1000, dtype="u32")
    p = LocalTokenProvider([f], seq_len=16, dtype="u32")
    assert np.array_equal(p.get(0), np.fromfile(f, "<u4")[:17].astype(np.int64))


def test_missing_or_malformed_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such data file"):
        LocalTokenProvider([tmp_path / "nope.bin"], seq_len=8)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x00\x01\x02")
    with pytest.raises(DataError, match="whole number"):
        LocalTokenProvider([odd], seq_len=8)
    short = tmp_path / "short.bin"
    short.write_bytes(b"\x00\x00" * 4)
    with pytest.raises(DataError, match="no sample"):
        LocalTokenProvider([short], seq_len=8)
    with pytest.raises(DataError, match="dtype"):
        LocalTokenProvider([short], seq_len=1, dtype="u8")


def test_http_provider_matches_local_files(http_root, corpus_files: list[Path]) -> None:
    root, base = http_root
    for f in corpus_files:
        shutil.copy(f, root / f.name)
    local = LocalTokenProvider(corpus_files, seq_len=32, shuffle_seed=1)
    urls = [f"{base}/{f.name}" for f in corpus_files]
    with HttpTokenProvider(urls, seq_len=32, shuffle_seed=1, timeout_s=5) as remote:
        assert len(remote) == len(local)
        for i in (0, 1, len(local) // 2, len(local) - 1):
            assert np.array_equal(remote.get(i), local.get(i))


def test_http_provider_retries_transient_errors(
    http_root, range_handler, corpus_files: list[Path]
) -> None:
    root, base = http_root
    shutil.copy(corpus_files[0], root / "t.bin")
    p = HttpTokenProvider([f"{base}/t.bin"], seq_len=32, retries=2, backoff_s=0.01)
    range_handler.fail_next = 2  # two 503s, then success: within the retry budget
    assert np.array_equal(p.get(5), LocalTokenProvider([corpus_files[0]], seq_len=32).get(5))
    range_handler.fail_next = 5
    with pytest.raises(DataError, match="503"):
        p.get(5)
    range_handler.fail_next = 0


def test_http_missing_file_and_dead_server(http_root) -> None:
    _, base = http_root
    with pytest.raises(DataError, match="404"):
        HttpTokenProvider([f"{base}/missing.bin"], seq_len=8, retries=0)
    with pytest.raises(DataError, match="failed after 2 attempts"):
        HttpTokenProvider(
            ["http://127.0.0.1:9/x.bin"], seq_len=8, retries=1, backoff_s=0.01, timeout_s=1
        )


@pytest.fixture
def data_server(corpus_files: list[Path]) -> Iterator[tuple[int, set[bytes]]]:
    """A TCP data server on a background event loop; yields (port, allowed node keys)."""
    provider = LocalTokenProvider(corpus_files, seq_len=32)
    allowed: set[bytes] = set()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            serve_data(provider, authorize=lambda key: key in allowed, max_samples=8, timeout_s=5)
        )
        holder["server"] = server
        holder["port"] = server.sockets[0].getsockname()[1]
        started.set()
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(10)
    try:
        yield int(holder["port"]), allowed  # type: ignore[call-overload]
    finally:
        server = holder["server"]
        loop.call_soon_threadsafe(server.close)  # type: ignore[attr-defined]
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)


def test_tcp_serves_authorised_clients(data_server, corpus_files: list[Path]) -> None:
    port, allowed = data_server
    key = Ed25519PrivateKey.generate()
    allowed.add(key.public_key().public_bytes_raw())
    local = LocalTokenProvider(corpus_files, seq_len=32)
    with TcpDataProvider("127.0.0.1", port, key, timeout_s=5, max_samples=8) as remote:
        assert len(remote) == len(local) and remote.seq_len == 32
        idx = list(range(0, 20))  # more than max_samples: split into several requests
        assert np.array_equal(remote.get_batch(idx).numpy(), local.get_batch(idx).numpy())
        with pytest.raises(DataError, match="out of range"):
            remote.get(len(local))
        assert np.array_equal(remote.get(3), local.get(3))  # connection still usable


def test_tcp_refuses_keys_outside_the_epoch(data_server) -> None:
    port, _ = data_server
    with pytest.raises(DataError, match="not authorised"):
        TcpDataProvider("127.0.0.1", port, Ed25519PrivateKey.generate(), timeout_s=5)


def test_tcp_rejects_a_bad_signature_and_oversized_frames(data_server) -> None:
    import socket
    import struct

    port, allowed = data_server
    key = Ed25519PrivateKey.generate()
    allowed.add(key.public_key().public_bytes_raw())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        (n,) = struct.unpack("<I", s.recv(4))
        s.recv(n)
        forged = key.sign(b"psyche-data-auth-v1" + b"\x00" * 32)  # not the server's challenge
        body = key.public_key().public_bytes_raw() + forged
        s.sendall(struct.pack("<I", len(body)) + body)
        (n,) = struct.unpack("<I", s.recv(4))
        assert s.recv(n) == b"\x01bad signature"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        (n,) = struct.unpack("<I", s.recv(4))
        s.recv(n)
        s.sendall(struct.pack("<I", 1 << 30))  # claims a 1 GiB auth frame
        assert s.recv(4) == b""  # dropped, nothing allocated
    with pytest.raises(DataError, match="unreachable"):
        TcpDataProvider("127.0.0.1", 9, key, timeout_s=1)
