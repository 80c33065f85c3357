"""The one run-id, config and model-reference parsers every entry point shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from psyche_client import _core
from psyche_client.errors import UserError
from psyche_client.modelref import (
    ModelRefError,
    model_ref_from_json,
    model_ref_from_kind,
    parse_model_arg,
)
from psyche_client.runconfig import ConfigError, config_from_sets, config_with, parse_sets
from psyche_client.runid import run_id_bytes


def test_run_id_names_and_raw_bytes() -> None:
    assert run_id_bytes("demo") == b"demo".ljust(32, b"\0")
    assert run_id_bytes(b"\x01" * 32) == b"\x01" * 32
    for bad in ("bad name", "", "x" * 33):
        with pytest.raises(UserError, match="1-32 characters"):
            run_id_bytes(bad)
    with pytest.raises(UserError, match="at most 32"):
        run_id_bytes(b"x" * 33)


def test_config_sets() -> None:
    assert parse_sets(["min_clients=3", "total_steps=-1"]) == {"min_clients": 3, "total_steps": -1}
    with pytest.raises(ConfigError, match="name=integer"):
        parse_sets(["min_clients"])
    assert config_from_sets(["min_clients=3"]).to_dict()["min_clients"] == 3
    base = config_with({"total_steps": 7})
    assert config_with({"min_clients": 4}, base).to_dict()["total_steps"] == 7
    with pytest.raises(ConfigError, match="unknown config field") as unknown:
        config_from_sets(["bogus=1"])
    assert unknown.value.name == "InvalidMessage"
    with pytest.raises(ConfigError, match="invalid run config") as invalid:
        config_from_sets(["min_clients=0"])
    assert invalid.value.name != "InvalidMessage"
    with pytest.raises(ConfigError, match="out of range"):
        config_from_sets(["min_clients=-1"])
    with pytest.raises(ConfigError, match="integers"):
        config_with({"min_clients": True})


def test_model_refs(tmp_path: Path) -> None:
    # kinds compared with the core's own (the bindings may name them by string or enum)
    hf_kind = _core.ModelRef.hugging_face("org/m", "").kind
    assert parse_model_arg("peers").kind == _core.ModelRef.peers().kind
    assert parse_model_arg("https://x/y").location == "https://x/y"
    assert parse_model_arg(str(tmp_path)).location == str(tmp_path.resolve())
    hub = parse_model_arg("org/model@main")
    assert (hub.kind, hub.location, hub.revision) == (hf_kind, "org/model", "main")
    with pytest.raises(UserError, match="not a directory"):
        parse_model_arg(str(tmp_path / "missing"))
    assert model_ref_from_kind("hf", "org/m", "v1").kind == hf_kind
    with pytest.raises(UserError, match="--model-kind must be one of"):
        model_ref_from_kind("ftp", "x", "")
    same = model_ref_from_json({"kind": "HuggingFace", "location": "org/m", "revision": "v1"})
    other = model_ref_from_kind("hf", "org/m", "v1")
    assert (same.kind, same.location, same.revision) == (other.kind, other.location, other.revision)
    with pytest.raises(ModelRefError):
        model_ref_from_json({"kind": "Ftp"})
    assert isinstance(model_ref_from_kind("peers", "", ""), _core.ModelRef)
