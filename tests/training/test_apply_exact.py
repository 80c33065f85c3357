"""The batched apply is exact: same direction whatever the peer order, grouping, thread count or
process, and equal to an independent float64 reference; batched compress matches a per-parameter
reference."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from psyche_client.training import dct
from psyche_client.training.aggregate import EXACT_FP32, MEAN_LEVELS, levels
from psyche_client.training.hashing import param_hash
from psyche_client.training.model import LlamaConfig, build_model
from psyche_client.training.optimizer import DeMo, DeMoConfig, apply_results, compress_step
from psyche_client.training.result import DeMoResult, ValueMode, decode_result

SIGN = DeMoConfig(lr=1e-2, chunk_size=16, topk=4, value_mode=ValueMode.SIGN)


def _peer_results(n_peers: int, cfg: DeMoConfig, seed: int = 0) -> tuple[dict, list[DeMoResult]]:
    """Parameters of a small model and `n_peers` results from random gradients (a few steps
    each, so momenta differ)."""
    model = build_model(
        LlamaConfig(
            hidden_size=48,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
        ),
        seed=seed,
    )
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(seed)
    results = []
    for _ in range(n_peers):
        mom = {n: torch.zeros(p.shape) for n, p in params.items()}
        for _ in range(3):
            res = compress_step(
                mom, {n: torch.randn(p.shape, generator=g) for n, p in params.items()}, cfg
            )
        results.append(res)
    return params, results


def test_levels_keep_every_partial_sum_exact_in_fp32() -> None:
    for nnz in range(1, 1025):
        q, b = levels(nnz)
        assert q * b * nnz <= EXACT_FP32 and q >= 128 and b >= 128 and max(q, b) <= 256
    assert levels(16) == (MEAN_LEVELS, 255)


def test_integer_decode_is_exact_at_the_bound_for_any_thread_count() -> None:
    """Worst case: every one of nnz coefficients at ±Q against the integer basis. fp32 matmul
    (any blocking) must equal the float64 product exactly."""
    g = torch.Generator().manual_seed(0)
    for chunk, nnz in (((16, 16), 16), ((16, 16), 256), ((32, 32), 1024), ((16,), 16)):
        numel = math.prod(chunk)
        q, b = levels(nnz)
        basis = dct.integer_basis(chunk, b)
        coeffs = torch.zeros(512, numel)
        for row in range(512):
            pos = torch.randperm(numel, generator=g)[:nnz]
            coeffs[row, pos] = q * torch.sign(torch.randn(nnz, generator=g))
        exact = coeffs.double() @ basis.double()
        threads = torch.get_num_threads()
        try:
            for t in (1, 2):
                torch.set_num_threads(t)
                assert torch.equal((coeffs @ basis).double(), exact), (chunk, nnz, t)
        finally:
            torch.set_num_threads(threads)


def _reference_direction(
    results: list[DeMoResult], name: str, aggregate: str = "mean"
) -> torch.Tensor:
    """Independent float64 reference for 1-bit mode: per-coefficient mean over the peers that
    picked it (or over all peers: "sum"), quantised, decoded with the integer basis in float64
    (exact)."""
    comp0 = results[0].params[name]
    rows, k, numel = comp0.indices.shape[0], comp0.k, comp0.chunk_numel
    total = torch.zeros(rows, numel, dtype=torch.float64)
    count = torch.zeros(rows, numel, dtype=torch.float64)
    for res in results:
        c = res.params[name]
        for r in range(rows):
            for j in range(k):
                total[r, int(c.indices[r, j])] += float(c.values[r, j])
                count[r, int(c.indices[r, j])] += 1
    q_levels, b = levels(min(numel, len(results) * k))
    if aggregate == "sum":
        count = torch.where(count > 0, float(len(results)), 0.0)
    mean = torch.where(count > 0, total / count.clamp(min=1), 0.0)
    q = torch.sign(mean) * torch.floor(q_levels * mean.abs() + 0.5)
    dense = q @ dct.integer_basis(comp0.chunk, b, torch.float64)
    return dct.from_chunks(torch.sign(dense), comp0.shape, comp0.chunk)


@pytest.mark.parametrize("aggregate", ["mean", "sum"])
def test_apply_equals_an_independent_float64_reference(aggregate: str) -> None:
    cfg = dataclasses.replace(SIGN, aggregate=aggregate)
    params, results = _peer_results(3, cfg)
    after = {n: p.clone() for n, p in params.items()}
    apply_results(after, results, cfg)
    for name in [
        "model.layers.0.self_attn.q_proj.weight",
        "model.norm.weight",
        "model.embed_tokens.weight",
    ]:
        direction = (params[name] - after[name]) / SIGN.lr
        ref = _reference_direction(results, name, aggregate).float()
        assert torch.allclose(direction, ref, atol=1e-3), name
        # The step is exactly ±lr or 0 (the parameters were exactly representable).
        assert torch.equal(after[name], params[name] - SIGN.lr * ref), name


def test_one_bit_apply_does_not_depend_on_peer_order() -> None:
    params, results = _peer_results(4, SIGN, seed=1)
    outs = []
    for perm in list(itertools.permutations(range(4)))[::7]:
        p = {n: t.clone() for n, t in params.items()}
        apply_results(p, [results[i] for i in perm], SIGN)
        outs.append(p)
    for other in outs[1:]:
        assert all(torch.equal(outs[0][n], other[n]) for n in params)
    assert any(not torch.equal(outs[0][n], params[n]) for n in params)


def test_batched_apply_equals_one_parameter_at_a_time() -> None:
    params, results = _peer_results(3, SIGN, seed=2)
    together = {n: t.clone() for n, t in params.items()}
    apply_results(together, results, SIGN)
    for name, t in params.items():
        alone = {name: t.clone()}
        single = [DeMoResult(r.value_mode, {name: r.params[name]}) for r in results]
        apply_results(alone, single, SIGN)
        assert torch.equal(alone[name], together[name]), name


def test_batched_compress_matches_a_per_parameter_reference() -> None:
    """The reference works in parameter space, one parameter at a time, in float64: decay, add,
    DCT, top-k, subtract what was sent. Same picks and signs as the batched fp32 path."""
    # (No clip: the reference below folds the raw gradients, as DeMo does with grad_clip 0.)
    cfg = DeMoConfig(
        lr=1.0,
        chunk_size=16,
        topk=4,
        momentum_decay=0.9,
        value_mode=ValueMode.FP32,
        grad_clip=0.0,
    )
    params, _ = _peer_results(0, cfg)
    demo = DeMo(((n, torch.nn.Parameter(p)) for n, p in params.items()), cfg)
    ref_m = {n: torch.zeros(p.shape, dtype=torch.float64) for n, p in params.items()}
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        grads = {n: torch.randn(p.shape, generator=g) for n, p in params.items()}
        res = demo.compress(grads)
        for n, m in ref_m.items():
            chunk = dct.chunk_shape(tuple(m.shape), cfg.chunk_size)
            m.mul_(cfg.momentum_decay).add_(grads[n].double())
            coeffs = dct.encode(m, chunk)
            comp = res.params[n]
            idx = comp.indices.long()
            picked = torch.gather(coeffs, 1, idx)
            # Top-k: nothing unpicked is larger than the smallest picked (up to fp32 rounding).
            rest = coeffs.abs().scatter(1, idx, 0.0).amax(dim=1)
            assert bool((rest <= picked.abs().amin(dim=1) * (1 + 1e-5) + 1e-6).all()), n
            assert torch.allclose(comp.values.double(), picked, rtol=1e-4, atol=1e-5), n
            m.sub_(dct.decode(torch.zeros_like(coeffs).scatter(1, idx, picked), m.shape, chunk))
            # The batched momentum holds the same state, as coefficients.
            held = demo.momentum[n].reshape(coeffs.shape).double()
            assert torch.allclose(held, dct.encode(m, chunk), rtol=1e-4, atol=1e-4), n


def test_two_processes_with_other_threads_and_orders_apply_identically(tmp_path: Path) -> None:
    params, results = _peer_results(4, SIGN, seed=3)
    for i, r in enumerate(results):
        (tmp_path / f"r{i}.bin").write_bytes(r.to_bytes())
    torch.save(params, tmp_path / "params.pt")
    worker = Path(__file__).with_name("apply_worker.py")
    hashes = []
    for threads, order in ((1, "0123"), (2, "3120")):
        out = subprocess.run(
            [sys.executable, str(worker), str(tmp_path), str(threads), order],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        hashes.append(json.loads(out.stdout)["hash"])
    # And this process, decoding the same bytes.
    local = {n: t.clone() for n, t in params.items()}
    decoded = [decode_result((tmp_path / f"r{i}.bin").read_bytes()) for i in range(4)]
    apply_results(local, decoded, SIGN)
    assert hashes[0] == hashes[1] == param_hash(local)


def test_large_tiles_use_the_exact_separable_path() -> None:
    """64×64 tiles (4096 coefficients) decode separably in float64 with integer side bases."""
    cfg = DeMoConfig(lr=1.0, chunk_size=64, topk=2, value_mode=ValueMode.SIGN, aggregate="mean")
    g = torch.Generator().manual_seed(7)
    results = []
    for _ in range(3):
        mom = {"w": torch.zeros(64, 128)}
        results.append(compress_step(mom, {"w": torch.randn(64, 128, generator=g)}, cfg))
    p = {"w": torch.zeros(64, 128)}
    apply_results(p, results, cfg)
    total = torch.zeros(2, 4096, dtype=torch.float64)
    count = torch.zeros(2, 4096, dtype=torch.float64)
    for res in results:
        c = res.params["w"]
        total.scatter_add_(1, c.indices.long(), c.values.double())
        count.scatter_add_(1, c.indices.long(), torch.ones(2, 2, dtype=torch.float64))
    mean = torch.where(count > 0, total / count.clamp(min=1), 0.0)
    q = torch.sign(mean) * torch.floor(MEAN_LEVELS * mean.abs() + 0.5)
    side = dct.integer_side_basis(64, 255)
    dense = (side.T @ q.view(2, 64, 64) @ side).reshape(2, 4096)
    expected = dct.from_chunks(torch.sign(dense), (64, 128), (64, 64)).float()
    assert torch.equal(-p["w"], expected)
    assert int((expected != 0).sum()) > 8000
