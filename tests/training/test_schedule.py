"""The learning-rate schedule every client computes from the step number (training.schedule)."""

from __future__ import annotations

import math

import pytest
import torch

from psyche_client.runspec import TrainingSpec
from psyche_client.training.model import LlamaConfig, build_model
from psyche_client.training.optimizer import DeMo, DeMoConfig
from psyche_client.training.recompute import verify_result
from psyche_client.training.schedule import _cos_half_turn, lr_at
from psyche_client.training.trainer import compute_gradients


def reference(step: int, peak: float, warmup: int, total: int, final: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / (total - warmup))
    return peak * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t)))


def test_cosine_matches_libm_within_a_few_ulps() -> None:
    for i in range(1001):
        t = i / 1000
        assert _cos_half_turn(t) == pytest.approx(math.cos(math.pi * t), abs=1e-15)


def test_warmup_then_cosine_to_the_final_fraction() -> None:
    peak, warm, total = 2e-3, 30, 300
    got = [lr_at(s, peak, warm, total, 0.1) for s in range(400)]
    for s, v in enumerate(got):
        assert v == pytest.approx(reference(s, peak, warm, total, 0.1), rel=1e-14)
    assert got[0] == peak / warm and got[warm - 1] == peak and got[warm] == peak
    assert all(a >= b for a, b in zip(got[warm:], got[warm + 1 :], strict=False))
    assert got[299] > 0.1 * peak and got[300] == got[399] == pytest.approx(0.1 * peak)


def test_constant_without_total_and_errors() -> None:
    assert [lr_at(s, 1e-3) for s in (0, 5, 10_000)] == [1e-3] * 3
    assert lr_at(1, 1e-3, warmup=4) == 0.5e-3 and lr_at(9, 1e-3, warmup=4) == 1e-3
    with pytest.raises(ValueError):
        lr_at(-1, 1e-3)
    with pytest.raises(ValueError):
        DeMoConfig(final_lr=1.5)
    with pytest.raises(ValueError):
        DeMoConfig(warmup_steps=-1)


def test_schedule_travels_in_psyche_json() -> None:
    spec = TrainingSpec(demo=DeMoConfig(lr=3e-3, warmup_steps=7, total_steps=90, final_lr=0.2))
    back = TrainingSpec.from_json(spec.to_json())
    assert back == spec
    assert [back.demo.lr_at(s) for s in range(100)] == [spec.demo.lr_at(s) for s in range(100)]
    # A psyche.json written before the schedule existed: constant lr (its old behaviour).
    old = spec.to_json()
    for key in ("warmup_steps", "total_steps", "final_lr"):
        del old["demo"][key]
    assert TrainingSpec.from_json(old).demo.lr_at(50) == 3e-3


def test_verifier_needs_the_steps_lr() -> None:
    """With lr-weighted momentum the step's lr shapes the result: a verifier recomputing with
    the scheduled lr reproduces it exactly, one using the base lr does not."""
    torch.manual_seed(0)
    cfg = DeMoConfig(lr=1e-2, warmup_steps=4, total_steps=8, lr_weighted=True)
    shape = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
    )
    model = build_model(shape)
    demo = DeMo(model.named_parameters(), cfg)
    for step in range(3):
        batch = torch.randint(0, 64, (2, 17))
        momentum = {n: m.clone() for n, m in demo.momentum.items()}
        start = build_model(shape, init=False)
        start.load_state_dict(model.state_dict())
        grads, _ = compute_gradients(model, batch)
        res = demo.compress(grads, lr=cfg.lr_at(step))
        demo.apply([res], lr=cfg.lr_at(step))
    right = verify_result(start, batch, momentum, res, cfg, lr=cfg.lr_at(2))
    wrong = verify_result(start, batch, momentum, res, cfg)
    assert right.score == 1.0
    assert wrong.score < 0.99
