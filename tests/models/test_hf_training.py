"""Transformers architectures train through the client's machinery: seeded identical init,
the (logits, loss) interface, DeMo over every parameter shape they have (1-D norms and biases,
2-D projections, 3-D MoE expert stacks), bit-identical apply and an exact verification
recompute."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from psyche_client.training.dct import chunk_shape
from psyche_client.training.hashing import param_hash
from psyche_client.training.hf import HFConfig
from psyche_client.training.model import LlamaConfig, build_model, config_from_dict
from psyche_client.training.optimizer import DeMo, DeMoConfig, compress_step
from psyche_client.training.recompute import verify_result
from psyche_client.training.result import decode_result, encode_result
from psyche_client.training.trainer import compute_gradients

Tiny = Callable[..., dict[str, Any]]


def _batch(seed: int, vocab: int = 320, b: int = 4, t: int = 17) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, t), generator=g)


def test_seeded_init_is_identical_and_leaves_the_global_rng(arch: str, tiny: Tiny) -> None:
    cfg = config_from_dict(tiny(arch))
    assert isinstance(cfg, HFConfig) and cfg.model_type == arch
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(cfg, seed=4)
    assert torch.equal(torch.rand(1), before)
    assert param_hash(a) == param_hash(build_model(cfg, seed=4))
    assert param_hash(a) != param_hash(build_model(cfg, seed=5))
    assert a.num_parameters() == cfg.param_count()
    logits, loss = a(_batch(0)[:, :-1], _batch(0)[:, 1:])
    assert logits.shape == (4, 16, 320) and loss is not None and torch.isfinite(loss)


def test_demo_covers_every_parameter_shape_and_applies_identically(arch: str, tiny: Tiny) -> None:
    cfg = config_from_dict(tiny(arch))
    demo_cfg = DeMoConfig(lr=1e-2, chunk_size=16, topk=4)
    trainers = [build_model(cfg, seed=1) for _ in range(2)]
    results = []
    for i, model in enumerate(trainers):  # two clients, each its own batch
        grads, _ = compute_gradients(model, _batch(i))
        results.append(DeMo(model.named_parameters(), demo_cfg).compress(grads))
    params = dict(trainers[0].named_parameters())
    shapes = {len(p.shape) for p in params.values()}
    assert shapes == ({1, 2, 3} if "moe" in arch or arch == "mixtral" else {1, 2})
    layout = DeMo(params.items(), demo_cfg).layout()
    for res in results:
        assert list(res.params) == list(params)  # every parameter, in model order
        again = decode_result(encode_result(res), expected=layout, k=4, mode=res.value_mode)
        assert list(again.params) == list(res.params)
    for name, p in params.items():
        if p.dim() == 3:  # a tile lies inside one expert's matrix
            assert p.shape[1] % chunk_shape(tuple(p.shape), 16)[0] == 0, name
    before = {n: p.detach().clone() for n, p in params.items()}
    appliers = [build_model(cfg, seed=1) for _ in range(2)]
    for model in appliers:
        DeMo(model.named_parameters(), demo_cfg).apply(results)
    assert param_hash(appliers[0]) == param_hash(appliers[1])
    moved = {n for n, p in appliers[0].named_parameters() if not torch.equal(p, before[n])}
    assert "model.embed_tokens.weight" in moved and "model.norm.weight" in moved
    assert len(moved) >= len(params) - 2 * cfg.num_hidden_layers  # (unrouted experts: none)


def test_the_verification_recompute_is_exact(tiny: Tiny) -> None:
    for arch in ("qwen3", "qwen3_moe"):
        cfg = config_from_dict(tiny(arch))
        model = build_model(cfg, seed=2)
        demo_cfg = DeMoConfig()
        momentum = DeMo(model.named_parameters(), demo_cfg).momentum
        grads, _ = compute_gradients(model, _batch(3))
        claimed = compress_step(momentum, grads, demo_cfg, update_momentum=False)
        report = verify_result(build_model(cfg, seed=2), _batch(3), momentum, claimed, demo_cfg)
        assert report.score == 1.0, (arch, report)


def test_the_own_llama_computes_what_transformers_llama_computes() -> None:
    """Same config, same weights: bit-identical logits (the own model is a fast path, not a
    different model)."""
    native = LlamaConfig(
        vocab_size=320,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    own = build_model(native, seed=7)
    d = native.to_hf_dict()
    del d["psyche_impl"]
    theirs = build_model(config_from_dict(d), init=False)
    theirs.load_state_dict(own.state_dict())
    x = _batch(5)
    with torch.no_grad():
        a, la = own(x[:, :-1], x[:, 1:])
        b, lb = theirs(x[:, :-1], x[:, 1:])
    assert torch.equal(a, b) and la is not None and lb is not None and torch.equal(la, lb)
