"""Issue 14: the momentum chain. A trainer's momentum must be what its previous step left behind
(`momentum_codec.successor`); a crafted one reproduces its result (so result recomputation alone
passes it) but breaks that link. Real torch on a tiny model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from psyche_client.data.corpus import make_corpus
from psyche_client.data.local import LocalTokenProvider
from psyche_client.training.model import LlamaConfig, build_model
from psyche_client.training.momentum_codec import link_mismatches, successor
from psyche_client.training.optimizer import DeMoConfig
from psyche_client.training.recompute import verify_result
from psyche_client.training.result import ValueMode
from psyche_client.training.trainer import Trainer, compute_gradients
from tests.e2e.liar_client import craft_momentum

torch.set_num_threads(1)

TINY = LlamaConfig(
    vocab_size=256,
    hidden_size=48,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)


def _snap(peer: Trainer) -> dict[str, torch.Tensor]:
    return {n: m.clone() for n, m in peer.demo.momentum.items()}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory):
    """A trainer after 3 steps: its step-3 parameters, batch, momentum and result, and the
    momentum it holds after that step (what it discloses with its next step)."""
    files = make_corpus(Path(tmp_path_factory.mktemp("corpus")), n_tokens=20_000, seed=1)
    data = LocalTokenProvider(files, seq_len=32)
    cfg = DeMoConfig(lr=1e-2, chunk_size=16, topk=4, value_mode=ValueMode.SIGN)
    peer = Trainer(build_model(TINY, seed=0), cfg, data)
    for s in range(3):
        peer.apply([peer.train_step([s * 4 + i for i in range(4)]).result])
    model = copy.deepcopy(peer.model)
    before = _snap(peer)
    batch = data.get_batch([20, 21, 22, 23])
    sent = peer.train_step([20, 21, 22, 23]).result
    return peer, model, batch, before, sent, _snap(peer), cfg


def test_the_successor_is_the_trainers_momentum_bit_for_bit(chain) -> None:
    _peer, model, batch, before, sent, after, cfg = chain
    grads, _ = compute_gradients(model, batch)
    kept = {n: m.clone() for n, m in before.items()}
    got = successor(before, grads, cfg, sent)
    assert all(torch.equal(got[n], after[n]) for n in after)
    assert link_mismatches(got, after) == (0, sum(t.numel() for t in after.values()))
    assert all(torch.equal(before[n], kept[n]) for n in before), "input left untouched"


def test_cross_hardware_sized_gradient_noise_keeps_the_link(chain) -> None:
    _peer, model, batch, before, sent, after, cfg = chain
    grads, _ = compute_gradients(model, batch)
    g = torch.Generator().manual_seed(0)
    noisy = {n: x * (1 + 1e-6 * torch.randn(x.shape, generator=g)) for n, x in grads.items()}
    bad, _total = link_mismatches(successor(before, noisy, cfg, sent), after)
    assert bad == 0


def test_a_crafted_momentum_passes_recomputation_but_breaks_the_link(chain) -> None:
    peer, model, batch, before, sent, after, cfg = chain
    trainer = copy.deepcopy(peer)
    craft_momentum(trainer.demo.momentum, seed=7)  # what the liar discloses with its next step
    crafted = _snap(trainer)
    next_batch = [24, 25, 26, 27]
    next_model = copy.deepcopy(trainer.model)
    claim = trainer.train_step(next_batch).result
    report = verify_result(next_model, trainer.data.get_batch(next_batch), crafted, claim, cfg)
    assert report.passed and report.score == 1.0, "the hole: recomputation alone passes it"
    grads, _ = compute_gradients(model, batch)
    bad, total = link_mismatches(successor(before, grads, cfg, sent), crafted)
    assert bad > 0 and bad < total // 10, "a few planted coefficients are enough to be caught"
    honest_claim = copy.deepcopy(peer).train_step(next_batch).result
    assert honest_claim.to_bytes() != claim.to_bytes(), "the crafted momentum steered the result"
