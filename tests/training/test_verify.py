"""Verification: honest results score 1.0 (and survive cross-hardware-sized noise); tampered
results fail."""

from __future__ import annotations

import copy

import pytest
import torch

from psyche_client.data.local import LocalTokenProvider
from psyche_client.training.model import LlamaConfig, build_model
from psyche_client.training.optimizer import DeMoConfig, compress_step
from psyche_client.training.recompute import PASS_THRESHOLD, score_results, verify_result
from psyche_client.training.result import ValueMode
from psyche_client.training.trainer import Trainer, compute_gradients


@pytest.fixture
def setup(tiny_config: LlamaConfig, corpus_files):
    """A peer that has trained 3 steps (non-trivial momentum) and its 4th-step claim."""
    data = LocalTokenProvider(corpus_files, seq_len=32)
    cfg = DeMoConfig(lr=1e-2, chunk_size=16, topk=4, value_mode=ValueMode.SIGN)
    peer = Trainer(build_model(tiny_config, seed=0), cfg, data)
    for s in range(3):
        peer.apply([peer.train_step([s * 4 + i for i in range(4)]).result])
    momentum_before = {n: m.clone() for n, m in peer.demo.momentum.items()}
    params_before = copy.deepcopy(peer.model)
    batch_idx = [40, 41, 42, 43]
    claim = peer.train_step(batch_idx).result
    return params_before, data.get_batch(batch_idx), momentum_before, claim, cfg, data


def test_honest_result_reproduces_exactly(setup) -> None:
    model, batch, momentum, claim, cfg, _ = setup
    report = verify_result(model, batch, momentum, claim, cfg)
    assert report.passed and report.score == 1.0
    # The verifier's own copy of the momentum is untouched.
    assert all(torch.equal(momentum[n], m) for n, m in setup[2].items())


def test_cross_hardware_sized_noise_still_passes(setup) -> None:
    model, batch, momentum, claim, cfg, _ = setup
    grads, _ = compute_gradients(model, batch)
    g = torch.Generator().manual_seed(0)
    noisy = {n: x * (1 + 1e-4 * torch.randn(x.shape, generator=g)) for n, x in grads.items()}
    ref = compress_step(momentum, noisy, cfg, update_momentum=False)
    assert score_results(claim, ref) > 0.99 > PASS_THRESHOLD


def test_flipped_signs_fail(setup) -> None:
    model, batch, momentum, claim, cfg, _ = setup
    tampered = copy.deepcopy(claim)
    g = torch.Generator().manual_seed(1)
    for comp in tampered.params.values():
        flip = torch.rand(comp.values.shape, generator=g) < 0.1
        comp.values = torch.where(flip, -comp.values, comp.values)
    report = verify_result(model, batch, momentum, tampered, cfg)
    assert not report.passed and 0.85 < report.score < PASS_THRESHOLD


def test_random_indices_fail(setup) -> None:
    model, batch, momentum, claim, cfg, _ = setup
    tampered = copy.deepcopy(claim)
    g = torch.Generator().manual_seed(2)
    for comp in tampered.params.values():
        rows, k = comp.indices.shape
        cn = comp.chunk_numel
        perm = torch.stack([torch.randperm(cn, generator=g)[:k] for _ in range(rows)])
        comp.indices = torch.sort(perm, dim=1).values.to(comp.indices.dtype)
    report = verify_result(model, batch, momentum, tampered, cfg)
    assert not report.passed and report.score < 0.2


def test_result_from_another_batch_fails(setup) -> None:
    model, _, momentum, claim, cfg, data = setup
    other = data.get_batch([100, 101, 102, 103])
    report = verify_result(model, other, momentum, claim, cfg)
    assert not report.passed and report.score < 0.9


def test_malformed_claim_scores_zero(setup) -> None:
    model, batch, momentum, claim, cfg, _ = setup
    broken = copy.deepcopy(claim)
    broken.params.pop(next(iter(broken.params)))
    report = verify_result(model, batch, momentum, broken, cfg)
    assert report.score == 0.0 and not report.passed and "malformed" in report.detail


def test_lazy_peer_that_skipped_the_backward_pass_fails(setup) -> None:
    model, batch, momentum, _, cfg, _ = setup
    lazy = compress_step(momentum, {}, cfg, update_momentum=False)  # momentum only, no gradient
    report = verify_result(model, batch, momentum, lazy, cfg)
    assert not report.passed and report.score < 0.8
