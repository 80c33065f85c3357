"""Tiny configs of every supported architecture (all built locally, nothing downloaded)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from psyche_client.training.hf import SUPPORTED_TYPES, arch_config

# The CPUs are shared with other work; one thread also makes kernels trivially deterministic.
torch.set_num_threads(1)

ARCHS = tuple(SUPPORTED_TYPES)
"""llama, mistral, qwen2, qwen3, qwen3_moe, mixtral."""


def _tiny(arch: str, **changes: Any) -> dict[str, Any]:
    """A ~40k-parameter config.json dict: GQA (4 query heads, 2 K/V), untied, 4 experts for a
    MoE; matrices big enough for 16×16 DCT tiles."""
    shape: dict[str, Any] = {
        "vocab_size": 320,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        "tie_word_embeddings": False,
    }
    return {**arch_config(arch, **shape), **changes}


@pytest.fixture(params=ARCHS)
def arch(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tiny() -> Callable[..., dict[str, Any]]:
    """`tiny(arch, **changes)`: the config.json dict of a tiny model of `arch`."""
    return _tiny


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(directory, base URL) of a local static HTTP server over it, stopped afterwards."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
