"""Checkpoints are HF model directories: what the client saves, transformers loads with the
same logits; what transformers saves (sharded, per-expert MoE layout), the client loads; the
config is canonical and bounded; tokenizer files ride along; `model init` makes every
architecture."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from psyche_client.checkpoint.io import (
    INDEX_NAME,
    CheckpointError,
    load_checkpoint,
    load_config,
    save_checkpoint,
)
from psyche_client.cli.model import model_init
from psyche_client.data.corpus import train_tokenizer
from psyche_client.training.hashing import param_hash
from psyche_client.training.hf import HFCausalLM, HFConfig
from psyche_client.training.model import LlamaConfig, build_model, config_from_dict

Tiny = Callable[..., dict[str, Any]]
WIDTHS = ("intermediate_size", "moe_intermediate_size")
X = torch.randint(0, 320, (2, 16), generator=torch.Generator().manual_seed(0))


def _hf_logits(directory: Path, x: torch.Tensor = X) -> torch.Tensor:
    ref = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    with torch.no_grad():
        return ref(input_ids=x).logits


@pytest.mark.parametrize("shard_bytes", [1 << 30, 20_000], ids=["single", "sharded"])
def test_export_loads_in_transformers_with_the_same_logits(
    arch: str, tiny: Tiny, tmp_path: Path, shard_bytes: int
) -> None:
    cfg = config_from_dict(tiny(arch))
    model = build_model(cfg, seed=3)
    save_checkpoint(model, tmp_path, max_shard_bytes=shard_bytes)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "generation_config.json"} <= names
    if shard_bytes < 1 << 30:
        index = json.loads((tmp_path / INDEX_NAME).read_text())
        shards = set(index["weight_map"].values())
        assert len(shards) > 1 and shards <= names and "model.safetensors" not in names
        if arch in ("qwen3_moe", "mixtral"):  # transformers' published layout: one per expert
            assert any(".experts.3." in k for k in index["weight_map"])
    with torch.no_grad():
        ours = model(X)[0]
    assert torch.equal(_hf_logits(tmp_path), ours)
    loaded = load_checkpoint(tmp_path)
    assert isinstance(loaded, HFCausalLM) and loaded.config == cfg
    assert param_hash(loaded) == param_hash(model)
    # Saving again over it (other sharding) leaves no stale shard behind.
    save_checkpoint(loaded, tmp_path)
    assert not (tmp_path / INDEX_NAME).exists()
    assert [p.name for p in tmp_path.glob("*.safetensors")] == ["model.safetensors"]
    assert param_hash(load_checkpoint(tmp_path)) == param_hash(model)


def test_the_own_llama_exports_too(tmp_path: Path) -> None:
    cfg = LlamaConfig(vocab_size=320, hidden_size=32, num_attention_heads=4, intermediate_size=48)
    model = build_model(cfg, seed=1)
    save_checkpoint(model, tmp_path, max_shard_bytes=20_000)
    assert (tmp_path / INDEX_NAME).exists()
    with torch.no_grad():
        assert torch.equal(_hf_logits(tmp_path), model(X)[0])
    loaded = load_checkpoint(tmp_path)
    assert loaded.config == cfg and param_hash(loaded) == param_hash(model)


@pytest.mark.parametrize("arch_name", ["llama", "qwen3_moe"])
def test_loads_what_transformers_saves(arch_name: str, tiny: Tiny, tmp_path: Path) -> None:
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(HFConfig(tiny(arch_name)).pretrained())
    hf.save_pretrained(tmp_path, max_shard_size=30_000)
    assert (tmp_path / INDEX_NAME).exists()
    loaded = load_checkpoint(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(X)[0], hf(input_ids=X).logits)
    # Its full config.json (every default, transformers_version, dtype) has the same canonical
    # form as the one the client writes, so both sources give the same config bytes.
    raw = json.loads((tmp_path / "config.json").read_text())
    assert (
        "transformers_version" in raw and "transformers_version" not in loaded.config.to_hf_dict()
    )
    save_checkpoint(loaded, tmp_path / "again")
    assert load_config(tmp_path / "again") == loaded.config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vocab_size": 10**12}, "vocab_size must be an integer"),
        ({"num_hidden_layers": 100_000}, "num_hidden_layers must be an integer"),
        ({"num_experts": 10**9}, "num_experts must be an integer"),
        ({"hidden_size": "32"}, "hidden_size must be an integer"),
        ({"num_key_value_heads": 3}, "multiple of num_key_value_heads"),
        ({"model_type": "gpt2"}, "model_type 'gpt2' is not supported"),
        ({"model_type": None}, "is not supported"),
        ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quantized"),
        (
            {"hidden_size": 1 << 16, "num_hidden_layers": 8, **dict.fromkeys(WIDTHS, 1 << 18)},
            r"implies .* parameters \(>",
        ),
    ],
)
def test_a_hostile_config_is_a_one_line_error(
    tiny: Tiny, tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    save_checkpoint(build_model(config_from_dict(tiny("qwen3_moe")), seed=0), tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, **changes}))
    t0 = time.monotonic()
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(tmp_path)
    assert "\n" not in str(err.value)
    assert time.monotonic() - t0 < 20  # nothing of the claimed size was built


def test_weights_must_be_what_the_config_implies(tiny: Tiny, tmp_path: Path) -> None:
    good = tmp_path / "good"
    save_checkpoint(
        build_model(config_from_dict(tiny("qwen3")), seed=0), good, max_shard_bytes=20_000
    )

    def variant(name: str) -> Path:
        d = tmp_path / name
        shutil.copytree(good, d)
        return d

    d = variant("layers")
    raw = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**raw, "num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match="holds .* parameters, its config implies"):
        load_checkpoint(d)
    d = variant("truncated")
    shard = sorted(d.glob("model-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(d)
    d = variant("missing")
    sorted(d.glob("model-*.safetensors"))[0].unlink()
    with pytest.raises(CheckpointError, match="weights file missing"):
        load_checkpoint(d)
    d = variant("escape")
    index = json.loads((d / INDEX_NAME).read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../good/model-00001-of-00007.safetensors"
    (d / INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="bad shard names"):
        load_checkpoint(d)


def test_tokenizer_files_ride_along_and_downloads_take_shards(
    tiny: Tiny, tmp_path: Path, http_dir: tuple[Path, str]
) -> None:
    tok = train_tokenizer(["a small text to train on"] * 20, tmp_path / "tok", vocab_size=300)
    model = build_model(config_from_dict(tiny("mistral")), seed=0)
    root, base = http_dir
    save_checkpoint(model, root / "ckpt", tokenizer=tok.parent, max_shard_bytes=20_000)
    assert (root / "ckpt" / "tokenizer.json").read_bytes() == tok.read_bytes()
    loaded = load_checkpoint(f"{base}/ckpt", cache_dir=tmp_path / "dl")
    assert param_hash(loaded) == param_hash(model)
    assert loaded.extra_files["tokenizer.json"] == tok.read_bytes()
    save_checkpoint(loaded, tmp_path / "next")  # an epoch checkpoint keeps the tokenizer
    assert (tmp_path / "next" / "tokenizer_config.json").is_file()


@pytest.mark.parametrize(
    ("arch_name", "extra"),
    [
        ("psyche", {"kv_heads": 2, "tie": False}),
        ("llama", {"kv_heads": 1}),
        ("qwen2", {}),
        ("qwen3", {"kv_heads": 2, "tie": False}),
        ("mixtral", {"experts": 3, "experts_per_tok": 1}),
        ("qwen3_moe", {"kv_heads": 2}),
    ],
)
def test_model_init_makes_every_architecture(
    arch_name: str, extra: dict[str, Any], tmp_path: Path
) -> None:
    model_init(tmp_path, arch=arch_name, dim=32, ffn=32, vocab=300, **extra)
    cfg = load_config(tmp_path)
    d = cfg.to_hf_dict()
    assert d["num_key_value_heads"] == extra.get("kv_heads", 4)
    assert cfg.tie_word_embeddings is extra.get("tie", True)
    assert d["model_type"] == ("llama" if arch_name == "psyche" else arch_name)
    loaded = load_checkpoint(tmp_path)
    x = X % 300
    with torch.no_grad():
        assert torch.equal(_hf_logits(tmp_path, x), loaded(x)[0])
    assert (tmp_path / "psyche.json").is_file()


def test_big_saves_and_downloads_report_progress(
    tiny: Tiny,
    tmp_path: Path,
    http_dir: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import psyche_client.checkpoint.io as cio

    model = build_model(config_from_dict(tiny("qwen2")), seed=0)
    root, base = http_dir
    save_checkpoint(model, root / "small")
    assert capsys.readouterr().err == ""  # a small model: no report
    monkeypatch.setattr(cio, "PROGRESS_MIN_BYTES", 1)
    save_checkpoint(model, root / "ckpt", max_shard_bytes=20_000)
    load_checkpoint(f"{base}/ckpt", cache_dir=tmp_path / "dl")
    err = capsys.readouterr().err
    assert f"saving checkpoint {root / 'ckpt'}: done" in err
    assert re.search(rf"downloading {base}/ckpt/model-00001-of-\d+\.safetensors: done", err)
