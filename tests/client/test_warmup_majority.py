"""A late joiner takes the model a majority of its peers serve, not the first member-signed one.

Before, warmup downloaded the first trusted manifest it was served: one member listed first
(state order) chose every joiner's weights and config. Real p2p nodes on loopback: two honest
members serve the epoch's model, a third member serves other (well-formed) weights; the joiner
must load the honest model, and refuse when no strict majority agrees.
"""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from psyche_client.client import warmup as warmup_mod
from psyche_client.p2p import NodeKey, P2PNode
from psyche_client.p2p.errors import ModelUnavailable
from psyche_client.runspec import TrainingSpec
from psyche_client.training.hashing import param_hash
from psyche_client.training.model import LlamaConfig, build_model

CFG = LlamaConfig(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=16,
)


def served(model: torch.nn.Module, epoch: int) -> tuple[bytes, dict[str, bytes]]:
    """What a member serves at an epoch's start (client/sharing.py's config blob)."""
    doc = {
        "model": CFG.to_hf_dict(),
        "spec": TrainingSpec().to_json(),
        "epoch": epoch,
        "height": -1,
        "step": -1,
        "hash": param_hash(model),
    }
    config = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    tensors = {n: t.detach().contiguous().numpy().tobytes() for n, t in model.state_dict().items()}
    return config, tensors


def test_a_late_joiner_loads_the_majority_model_not_the_first_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(warmup_mod, "MIN_WAIT_S", 1.0)
    honest_model = build_model(CFG, seed=0)
    liar_model = build_model(CFG, seed=1)  # valid, same shapes, other weights
    assert param_hash(liar_model) != param_hash(honest_model)

    async def main() -> None:
        keys = [NodeKey.generate() for _ in range(4)]
        members = {k.node_id for k in keys}
        nodes = [P2PNode(k, "run", is_member=members.__contains__) for k in keys]
        try:
            for n in nodes:
                await n.start()
            joiner, liar, honest_a, honest_b = nodes
            for p in nodes[1:]:
                await joiner.connect(p.p2p_addr)
            liar.share_model(*served(liar_model, 1))
            honest_a.share_model(*served(honest_model, 1))
            honest_b.share_model(*served(honest_model, 1))
            ctx: Any = SimpleNamespace(node=joiner, clock=time.time)
            peers = [liar.node_id, honest_a.node_id, honest_b.node_id]  # the liar first

            model, _spec = await warmup_mod._model_from_peers(ctx, peers, 1, time.time())
            assert param_hash(model) == param_hash(honest_model)

            await honest_b.stop()  # one honest vote against the liar's: no majority of three
            with pytest.raises(ModelUnavailable, match="majority"):
                await warmup_mod._model_from_peers(ctx, peers, 1, time.time())
        finally:
            for n in nodes:
                await n.stop()

    asyncio.run(main())
