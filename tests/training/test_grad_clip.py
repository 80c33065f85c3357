"""Gradient clipping before the momentum (`DeMoConfig.grad_clip`): a huge gradient counts no
more than a clipped one, and the trainer, the verifier's recomputation and the momentum chain
all fold with the same clipped weight."""

from __future__ import annotations

import pytest
import torch

from psyche_client.training.model import LlamaConfig, build_model
from psyche_client.training.momentum_codec import successor
from psyche_client.training.optimizer import DeMo, DeMoConfig, clip_factor, compress_step
from psyche_client.training.recompute import verify_result
from psyche_client.training.trainer import compute_gradients

SHAPE = LlamaConfig(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=16,
)


def test_clip_factor_is_the_global_norm_bound() -> None:
    grads = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[0.0], [4.0]]), "c": None}
    assert clip_factor(grads, 10.0) == 1.0
    assert clip_factor(grads, 1.0) == pytest.approx(0.2, rel=1e-6)  # ‖g‖ = 5
    assert clip_factor({}, 1.0) == 1.0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="grad_clip"):
            DeMoConfig(grad_clip=bad)


def _momentum_after(scale_first: float, cfg: DeMoConfig) -> dict[str, torch.Tensor]:
    model = build_model(SHAPE, seed=0)
    demo = DeMo(model.named_parameters(), cfg)
    torch.manual_seed(1)
    for scale in (scale_first, 1.0):
        grads, _ = compute_gradients(model, torch.randint(0, 64, (2, 17)))
        demo.compress({n: g * scale for n, g in grads.items()})
    return {n: m.clone() for n, m in demo.momentum.items()}


def test_a_huge_early_gradient_weighs_no_more_than_a_clipped_one() -> None:
    clipped = DeMoConfig(grad_clip=0.5)
    a, b = _momentum_after(100.0, clipped), _momentum_after(1000.0, clipped)
    assert all(torch.allclose(a[n], b[n], rtol=1e-4, atol=1e-7) for n in a)
    off = DeMoConfig(grad_clip=0.0)
    a, b = _momentum_after(100.0, off), _momentum_after(1000.0, off)
    assert not all(torch.allclose(a[n], b[n], rtol=1e-2) for n in a)


def test_trainer_verifier_and_chain_fold_the_same_clipped_gradient() -> None:
    cfg = DeMoConfig(grad_clip=0.05)
    model = build_model(SHAPE, seed=0)
    demo = DeMo(model.named_parameters(), cfg)
    torch.manual_seed(2)
    batch = torch.randint(0, 64, (2, 17))
    start = {n: m.clone() for n, m in demo.momentum.items()}
    grads, _ = compute_gradients(model, batch)
    assert clip_factor(grads, cfg.grad_clip) < 1.0  # the clip is active
    sent = demo.compress(grads)
    assert compress_step(dict(start), grads, cfg, update_momentum=False).to_bytes() == (
        sent.to_bytes()
    )
    assert verify_result(model, batch, start, sent, cfg).score == 1.0
    after = successor(start, grads, cfg, sent)
    assert all(torch.equal(after[n], demo.momentum[n]) for n in after)
