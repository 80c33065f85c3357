"""The input embedding's step size (`DeMoConfig.embedding_lr_scale`): the embedding moves by
exactly scale·lr per entry of the direction, every other parameter by lr, on both model
implementations, and the setting travels in psyche.json. (The multi-rank path is checked against
this one in tests/training/test_distributed.py, which runs with a scale of 2.)"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from psyche_client.runspec import TrainingSpec
from psyche_client.training.hf import HFConfig, arch_config
from psyche_client.training.model import LlamaConfig, build_model, input_embedding_names
from psyche_client.training.optimizer import DeMo, DeMoConfig
from psyche_client.training.trainer import compute_gradients

EMBED = "model.embed_tokens.weight"
LR = 2.0**-8  # a power of two: lr and 2·lr are exact, so the steps compare exactly


def test_the_input_embedding_is_found_in_both_implementations(tiny_config: LlamaConfig) -> None:
    assert input_embedding_names(build_model(tiny_config)) == {EMBED}
    # Tied: the one shared tensor counts as the input embedding (named_parameters names it once).
    tied = replace(tiny_config, tie_word_embeddings=True)
    assert input_embedding_names(build_model(tied)) == {EMBED}
    hf = HFConfig.from_hf_dict(
        arch_config(
            "qwen2",
            vocab_size=64,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=16,
        )
    )
    assert input_embedding_names(build_model(hf)) == {EMBED}
    assert input_embedding_names(torch.nn.Linear(2, 2)) == frozenset()


def _step_from_zero(shape: LlamaConfig, scale: float) -> dict[str, torch.Tensor]:
    """Every parameter after one applied step from all zeros: exactly −s·lr·direction."""
    model = build_model(shape, seed=0)
    cfg = DeMoConfig(lr=LR, embedding_lr_scale=scale)
    torch.manual_seed(3)
    grads, _ = compute_gradients(model, torch.randint(0, shape.vocab_size, (2, 17)))
    result = DeMo(model.named_parameters(), cfg).compress(grads)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    DeMo(model.named_parameters(), cfg, input_embedding_names(model)).apply([result])
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_the_embedding_steps_scale_times_lr_and_the_rest_lr(tiny_config: LlamaConfig) -> None:
    plain, doubled = _step_from_zero(tiny_config, 1.0), _step_from_zero(tiny_config, 2.0)
    assert set(plain[EMBED].abs().unique().tolist()) == {0.0, LR}
    assert (plain[EMBED] != 0).float().mean() > 0.5  # the sign step is dense
    assert torch.equal(doubled[EMBED], 2 * plain[EMBED])
    for name in plain.keys() - {EMBED}:
        assert torch.equal(doubled[name], plain[name]), name


def test_a_demo_without_embedding_names_steps_everything_at_lr(tiny_config: LlamaConfig) -> None:
    model = build_model(tiny_config)
    cfg = DeMoConfig(embedding_lr_scale=3.0)
    assert DeMo(model.named_parameters(), cfg).lr_scales == {}
    assert DeMo(model.named_parameters(), cfg, input_embedding_names(model)).lr_scales == {
        EMBED: 3.0
    }
    plain = DeMoConfig(embedding_lr_scale=1.0)
    assert DeMo(model.named_parameters(), plain, {EMBED}).lr_scales == {}


def test_the_scale_is_checked_and_travels_in_psyche_json() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="embedding_lr_scale"):
            DeMoConfig(embedding_lr_scale=bad)
    spec = TrainingSpec(demo=DeMoConfig(embedding_lr_scale=2.5))
    assert TrainingSpec.from_json(spec.to_json()) == spec
    old = spec.to_json()  # a psyche.json written before the field existed: the default
    del old["demo"]["embedding_lr_scale"]
    assert TrainingSpec.from_json(old).demo.embedding_lr_scale == DeMoConfig.embedding_lr_scale
