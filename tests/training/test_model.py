"""The Llama-style model and its checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from psyche_client.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from psyche_client.training.hashing import param_hash
from psyche_client.training.model import LlamaConfig, build_model


def test_forward_shapes_and_causality(tiny_config: LlamaConfig) -> None:
    model = build_model(tiny_config)
    x = torch.randint(0, 256, (2, 16))
    logits, loss = model(x, x)
    assert logits.shape == (2, 16, 256) and loss is not None and torch.isfinite(loss)
    # Changing a later token must not change earlier logits (causal mask).
    y = x.clone()
    y[:, 10] = (y[:, 10] + 1) % 256
    assert torch.allclose(model(y)[0][:, :10], logits[:, :10], atol=1e-6)
    assert not torch.allclose(model(y)[0][:, 10:], logits[:, 10:], atol=1e-6)


def test_tied_and_untied_embeddings(tiny_config: LlamaConfig) -> None:
    tied = build_model(tiny_config)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    untied_cfg = LlamaConfig(**{**tiny_config.__dict__, "tie_word_embeddings": False})
    untied = build_model(untied_cfg)
    assert untied.num_parameters() == tied.num_parameters() + 256 * tiny_config.hidden_size


def test_same_seed_same_weights_and_rng_untouched(tiny_config: LlamaConfig) -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(tiny_config, seed=4)
    assert torch.equal(torch.rand(1), before)  # building a model does not consume global RNG
    assert param_hash(a) == param_hash(build_model(tiny_config, seed=4))
    assert param_hash(a) != param_hash(build_model(tiny_config, seed=5))


def test_adamw_learns_a_repeating_pattern(tiny_config: LlamaConfig) -> None:
    model = build_model(tiny_config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = torch.randint(0, 256, (8, 4)).repeat(1, 9)
    losses = []
    for _ in range(30):
        _, loss = model(data[:, :-1], data[:, 1:])
        assert loss is not None
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="multiple"):
        LlamaConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="num_key_value_heads"):
        LlamaConfig(num_attention_heads=4, num_key_value_heads=3)
    cfg = LlamaConfig.from_hf_dict(
        {"hidden_size": 64, "num_attention_heads": 4, "torch_dtype": "x"}
    )
    assert cfg.num_key_value_heads == 4 and cfg.hidden_size == 64


@pytest.mark.parametrize("tied", [True, False])
def test_checkpoint_round_trip(tmp_path: Path, tiny_config: LlamaConfig, tied: bool) -> None:
    cfg = LlamaConfig(**{**tiny_config.__dict__, "tie_word_embeddings": tied})
    model = build_model(cfg, seed=9)
    save_checkpoint(model, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["model_type"] == "llama" and meta["tie_word_embeddings"] is tied
    loaded = load_checkpoint(tmp_path)
    assert param_hash(loaded) == param_hash(model)
    assert loaded.config == cfg
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) is tied


def test_checkpoint_over_http(http_root, tiny_config: LlamaConfig, tmp_path: Path) -> None:
    root, base = http_root
    model = build_model(tiny_config, seed=3)
    save_checkpoint(model, root / "ckpt")
    loaded = load_checkpoint(f"{base}/ckpt", cache_dir=tmp_path / "dl")
    assert param_hash(loaded) == param_hash(model)
    with pytest.raises(CheckpointError, match="404"):
        load_checkpoint(f"{base}/nothing", cache_dir=tmp_path / "dl2")


def test_bad_checkpoints_give_clear_errors(tmp_path: Path, tiny_config: LlamaConfig) -> None:
    model = build_model(tiny_config)
    good = tmp_path / "good"
    save_checkpoint(model, good)

    def variant(name: str) -> Path:
        d = tmp_path / name
        shutil.copytree(good, d)
        return d

    d = variant("truncated")
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(d)

    d = variant("garbage")
    (d / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(d)

    d = variant("noweights")
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="weights file missing"):
        load_checkpoint(d)

    d = variant("badjson")
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable config"):
        load_checkpoint(d)

    d = variant("wrongshape")
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 64
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(d)

    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "does" / "not" / "exist")
