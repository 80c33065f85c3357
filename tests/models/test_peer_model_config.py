"""A joiner's model from peers: the config blob is checked (bounds, architecture) and the
manifest must list exactly the tensors that config implies, before any tensor is fetched."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from psyche_client.client.warmup import _check_peer_model, _peer_config
from psyche_client.p2p import NodeKey
from psyche_client.p2p.manifest import Manifest
from psyche_client.runspec import TrainingSpec
from psyche_client.training.model import LlamaConfig, state_sizes

Tiny = Callable[..., dict[str, Any]]


def _blob(model: Any) -> bytes:
    doc = {"model": model, "spec": TrainingSpec().to_json(), "epoch": 1, "height": -1}
    return json.dumps(doc).encode()


def _manifest(config: bytes, sizes: dict[str, int]) -> Manifest:
    tensors = {n: b"\0" * s for n, s in sizes.items()}
    return Manifest.build(NodeKey.generate(), "run", config, tensors)


@pytest.mark.parametrize("which", ["qwen3_moe", "native"])
def test_a_served_model_config_carries_its_architecture(tiny: Tiny, which: str) -> None:
    d = tiny("qwen3_moe") if which == "qwen3_moe" else LlamaConfig().to_hf_dict()
    blob = _blob(d)
    cfg, spec = _peer_config(blob)
    assert cfg.to_hf_dict()["model_type"] == d["model_type"] and spec == TrainingSpec()
    sizes = state_sizes(cfg)
    if which == "qwen3_moe":
        assert sizes["model.layers.0.mlp.experts.gate_up_proj"] == 4 * 4 * 2 * 48 * 32
    _check_peer_model(_manifest(blob, sizes), blob)  # what an honest peer serves passes
    name = next(iter(sizes))
    with pytest.raises(ValueError, match="not what its config implies"):
        _check_peer_model(_manifest(blob, {**sizes, name: sizes[name] * 2}), blob)
    with pytest.raises(ValueError, match="not what its config implies"):
        _check_peer_model(_manifest(blob, {**sizes, "extra.weight": 4}), blob)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"model_type": "qwen3", "vocab_size": 10**12}, "vocab_size must be an integer"),
        ({"model_type": "bert"}, "not supported"),
        (None, "JSON object"),
    ],
)
def test_a_hostile_peer_config_is_refused_at_once(model: Any, message: str) -> None:
    blob = _blob(model)
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=message):
        _check_peer_model(_manifest(blob, {"w": 4}), blob)
    assert time.monotonic() - t0 < 10
