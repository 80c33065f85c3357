"""Shared fixtures for the training tests: tiny models, a generated corpus, a Range-capable
HTTP server. Everything is made locally; nothing is downloaded."""

from __future__ import annotations

import http.server
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from psyche_client.data.corpus import make_corpus
from psyche_client.training.model import LlamaConfig

# The CPUs are shared with other work; one thread also makes kernels trivially deterministic.
torch.set_num_threads(1)


@pytest.fixture
def tiny_config() -> LlamaConfig:
    """~60k parameters: big enough for 2-D chunks, small enough for many steps in a second."""
    return LlamaConfig(
        vocab_size=256,
        hidden_size=48,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )


@pytest.fixture(scope="session")
def corpus_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three u16 token files of a seeded toy-grammar corpus (~60k tokens)."""
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_tokens=60_000, seed=1, n_files=3)


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range `Range: bytes=a-b` support (stdlib lacks it)."""

    fail_next = 0  # class-level counter: answer this many requests with 503 first

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if RangeHandler.fail_next > 0:
            RangeHandler.fail_next -= 1
            self.send_error(503)
            return
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if not m or not os.path.isfile(path):
            super().do_GET()
            return
        size = os.path.getsize(path)
        a, b = int(m.group(1)), min(int(m.group(2)), size - 1)
        if a >= size or a > b:
            self.send_error(416)
            return
        with open(path, "rb") as f:
            f.seek(a)
            body = f.read(b - a + 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {a}-{b}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def range_handler() -> type[RangeHandler]:
    """The handler class of `http_root`; set `fail_next` to make it answer 503 that many times."""
    return RangeHandler


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(directory, base URL) of a local HTTP server with Range support, stopped afterwards."""

    def handler(*args: object, **kw: object) -> RangeHandler:
        return RangeHandler(*args, directory=str(tmp_path), **kw)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    RangeHandler.fail_next = 0
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
