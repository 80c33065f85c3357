"""A checkpoint from a peer or a URL is untrusted: its config is bounded before anything is
allocated, its size must match what the config implies, downloads are capped, failed downloads
leave nothing behind, and a run's content hash pins what may be loaded."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from psyche_client.checkpoint.io import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    weights_limit,
)
from psyche_client.training.hashing import param_hash
from psyche_client.training.model import LlamaConfig, build_model


def _saved(tmp_path: Path, cfg: LlamaConfig, name: str = "ckpt") -> Path:
    d = tmp_path / name
    save_checkpoint(build_model(cfg, seed=1), d)
    return d


def _with_config(d: Path, **changes: object) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vocab_size": 10**12}, "vocab_size must be an integer"),
        ({"num_hidden_layers": 20_000}, "num_hidden_layers must be an integer"),
        ({"num_attention_heads": 0}, "num_attention_heads must be an integer"),
        ({"hidden_size": 48.0}, "hidden_size must be an integer"),
        ({"intermediate_size": True}, "intermediate_size must be an integer"),
        ({"rope_theta": -1}, "rope_theta must be a positive"),
    ],
)
def test_a_hostile_config_is_refused_before_building(
    tmp_path: Path, tiny_config: LlamaConfig, changes: dict[str, object], message: str
) -> None:
    d = _saved(tmp_path, tiny_config)
    _with_config(d, **changes)
    t0 = time.monotonic()
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(d)
    assert time.monotonic() - t0 < 30  # generous: a built 20,000-layer model takes minutes


def test_weights_must_hold_what_the_config_implies(
    tmp_path: Path, tiny_config: LlamaConfig
) -> None:
    d = _saved(tmp_path, tiny_config)
    _with_config(d, num_hidden_layers=tiny_config.num_hidden_layers + 1)
    with pytest.raises(CheckpointError, match="holds .* parameters, its config implies"):
        load_checkpoint(d)


def test_the_content_hash_pins_the_weights(tmp_path: Path, tiny_config: LlamaConfig) -> None:
    d = _saved(tmp_path, tiny_config)
    good = param_hash(load_checkpoint(d))
    assert param_hash(load_checkpoint(d, content_hash=good)) == good
    other = tmp_path / "other"
    save_checkpoint(build_model(tiny_config, seed=2), other)
    with pytest.raises(CheckpointError, match="not the run's checkpoint hash"):
        load_checkpoint(other, content_hash=good)


def test_http_downloads_are_capped_and_cleaned_up(
    http_root: tuple[Path, str], tiny_config: LlamaConfig
) -> None:
    root, base = http_root
    d = _saved(root, tiny_config, name="big")
    # A weights file larger than any the config allows (a hostile server filling the disk).
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes() + b"\0" * (weights_limit(tiny_config) + 1 - w.stat().st_size))
    before = set(Path(tempfile.gettempdir()).glob("psyche-ckpt-*"))
    with pytest.raises(CheckpointError, match="allowed"):
        load_checkpoint(f"{base}/big")
    assert set(Path(tempfile.gettempdir()).glob("psyche-ckpt-*")) == before
    shutil.rmtree(d)
