"""DeMo: top-k selection, error feedback, 1-bit zeros, aggregation, the sign step, training."""

from __future__ import annotations

import math

import pytest
import torch

from psyche_client.training import dct
from psyche_client.training.model import LlamaConfig, build_model
from psyche_client.training.optimizer import (
    DeMo,
    DeMoConfig,
    apply_results,
    compress_step,
)
from psyche_client.training.result import DeMoResult, ParamComponent, ValueMode


def _one_param_result(
    idx: list[list[int]], vals: list[list[float]], shape=(16,), chunk=(16,)
) -> DeMoResult:
    comp = ParamComponent(
        shape=shape,
        chunk=chunk,
        indices=torch.tensor(idx, dtype=torch.uint8),
        values=torch.tensor(vals, dtype=torch.float32),
    )
    return DeMoResult(ValueMode.FP32, {"w": comp})


def test_topk_keeps_the_largest_coefficients_of_every_chunk() -> None:
    cfg = DeMoConfig(
        chunk_size=8,
        topk=2,
        momentum_decay=0.0,
        value_mode=ValueMode.FP32,
        lr_weighted=False,
        grad_clip=0.0,  # the exact coefficient values are checked: no clip factor on them
    )
    coeffs = torch.zeros(2, 8)
    coeffs[0, [1, 5]] = torch.tensor([3.0, -4.0])
    coeffs[0, 2] = 0.5
    coeffs[1, [0, 7]] = torch.tensor([-2.0, 1.0])
    grad = dct.decode(coeffs, (16,), (8,))
    mom = {"w": torch.zeros(16)}
    res = compress_step(mom, {"w": grad}, cfg)
    comp = res.params["w"]
    assert comp.indices.dtype == torch.uint8
    assert comp.indices.tolist() == [[1, 5], [0, 7]]  # sorted within each chunk
    assert torch.allclose(comp.values, torch.tensor([[3.0, -4.0], [-2.0, 1.0]]), atol=1e-5)
    # Error feedback: what was sent left the momentum (held as DCT coefficients) exactly; the
    # unsent 0.5 stays.
    left = mom["w"].view(2, 8)
    assert left[0, [1, 5]].tolist() == [0.0, 0.0] and left[1, [0, 7]].tolist() == [0.0, 0.0]
    assert abs(float(left[0, 2]) - 0.5) < 1e-5
    assert float(left.abs().sum()) == pytest.approx(0.5, abs=1e-4)


def test_momentum_is_fp32_for_bf16_models_so_decay_is_not_lost() -> None:
    model = build_model(
        LlamaConfig(
            hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=2
        ),
        dtype=torch.bfloat16,
    )
    demo = DeMo(model.named_parameters(), DeMoConfig(momentum_decay=0.999))
    assert all(m.dtype == torch.float32 for m in demo.momentum.values())
    assert torch.tensor(0.999, dtype=torch.bfloat16).item() == 1.0  # why fp32 is needed
    # Momentum is held as DCT coefficients. k = chunk numel sends everything, leaving 0;
    # k = 1 of 3 leaves the decayed, unsent coefficients.
    m = {"x": torch.ones(3)}
    compress_step(m, {}, DeMoConfig(momentum_decay=0.999, topk=3, chunk_size=3))
    assert float(m["x"].abs().max()) == 0.0
    m = {"x": torch.tensor([1.0, 0.25, -0.5])}
    compress_step(m, {}, DeMoConfig(momentum_decay=0.5, topk=1, chunk_size=3))
    assert m["x"].tolist() == [0.0, 0.125, -0.25]
    m = {"x": torch.tensor([1.0, -1.0, 0.0])}
    res = compress_step(
        m, {}, DeMoConfig(momentum_decay=0.5, topk=3, chunk_size=3, value_mode=ValueMode.FP32)
    )
    energy = float((res.params["x"].values.float() ** 2).sum())
    assert energy == pytest.approx(0.5**2 * 2, rel=1e-5)  # decayed by β before the DCT


def test_index_dtype_is_the_smallest_that_fits() -> None:
    big = DeMoConfig(chunk_size=64, topk=2)
    res = compress_step({"w": torch.zeros(64, 64)}, {"w": torch.randn(64, 64)}, big)
    assert res.params["w"].indices.dtype == torch.int16  # 4096 coefficients per chunk
    small = DeMoConfig(chunk_size=16, topk=2)
    res = compress_step({"w": torch.zeros(64, 64)}, {"w": torch.randn(64, 64)}, small)
    assert res.params["w"].indices.dtype == torch.uint8  # 256 coefficients per chunk


def test_one_bit_mode_keeps_exact_zeros_as_zero() -> None:
    cfg = DeMoConfig(chunk_size=16, topk=4, value_mode=ValueMode.SIGN)
    mom = {"w": torch.zeros(32), "b": torch.zeros(16)}
    res = compress_step(mom, {"w": torch.randn(32)}, cfg)  # "b" got no gradient
    assert res.params["b"].values.dtype == torch.int8
    assert set(res.params["b"].values.unique().tolist()) == {0}
    assert set(res.params["w"].values.unique().tolist()) <= {-1, 1}
    params = {"w": torch.zeros(32), "b": torch.full((16,), 2.0)}
    apply_results(params, [res], cfg)
    assert torch.equal(params["b"], torch.full((16,), 2.0))  # zero never became a +1 step
    assert float(params["w"].abs().max()) == pytest.approx(cfg.lr)


def _direction(results: list[DeMoResult], n: int = 16) -> torch.Tensor:
    """The applied step direction: −Δp for lr = 1 from zero parameters."""
    k = results[0].params["w"].k
    cfg = DeMoConfig(lr=1.0, chunk_size=n, topk=k, value_mode=ValueMode.FP32, aggregate="mean")
    p = {"w": torch.zeros(n)}
    apply_results(p, results, cfg)
    return -p["w"]


def test_aggregation_is_the_mean_over_peers_that_picked_each_coefficient() -> None:
    a = _one_param_result([[0, 3]], [[2.0, 1.0]])
    b = _one_param_result([[0, 5]], [[4.0, -1.0]])
    # Coefficient 0: mean(2, 4) = 3; coefficient 3: 1 (only a); 5: -1 (only b).
    expected = torch.zeros(1, 16, dtype=torch.float64)
    expected[0, 0], expected[0, 3], expected[0, 5] = 3.0, 1.0, -1.0
    exact = dct.decode(expected, (16,), (16,))
    direction = _direction([a, b])
    # The apply path decodes with an integer basis (exact, identical everywhere); it matches
    # the exact inverse DCT's sign wherever that is not within rounding of the basis from 0.
    clear = exact.abs() > 0.02 * exact.abs().max()
    assert clear.sum() >= 12
    assert torch.equal(direction[clear], torch.sign(exact[clear]).float())
    # A peer that did not pick a coefficient does not dilute it: b alone on coefficient 0 with
    # 3 gives the same direction as a and b with mean 3.
    c = _one_param_result([[0, 3]], [[3.0, 1.0]])
    d = _one_param_result([[5, 15]], [[-1.0, 0.0]])
    assert torch.equal(_direction([c, d]), direction)


def test_apply_is_sign_step_with_decoupled_weight_decay() -> None:
    cfg = DeMoConfig(lr=0.1, weight_decay=0.5, chunk_size=16, topk=2, value_mode=ValueMode.FP32)
    res = _one_param_result([[0, 3]], [[2.0, 1.0]])
    p = {"w": torch.full((16,), 1.0)}
    apply_results(p, [res], cfg)
    direction = _direction([res])
    assert set(direction.tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal(p["w"], torch.full((16,), 1.0) * (1 - 0.1 * 0.5) - 0.1 * direction)
    before = p["w"].clone()
    apply_results(p, [], cfg)  # an empty round is not a step
    assert torch.equal(p["w"], before)


def test_apply_rejects_results_that_do_not_match_the_model() -> None:
    from psyche_client.training.result import ResultFormatError

    cfg = DeMoConfig(chunk_size=16, topk=2, value_mode=ValueMode.FP32)
    wrong = _one_param_result([[0, 3]], [[2.0, 1.0]])
    with pytest.raises(ResultFormatError):
        apply_results({"w": torch.zeros(32)}, [wrong], cfg)  # shape differs
    with pytest.raises(ResultFormatError):
        apply_results({"v": torch.zeros(16)}, [wrong], cfg)  # name differs


def _train(steps: int, clients: int, cfg: DeMoConfig, seed: int = 0) -> tuple[float, float]:
    torch.manual_seed(seed)
    mcfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    model = build_model(mcfg, seed=seed)
    # A learnable toy task: the sequence repeats with period 4.
    base = torch.randint(0, 256, (64, 4))
    data = base.repeat(1, 5)[:, :17]
    demos = [DeMo(model.named_parameters(), cfg) for _ in range(clients)]
    first = last = 0.0
    for step in range(steps):
        results = []
        for c, d in enumerate(demos):
            batch = data[(step * clients + c) * 8 % 64 :][:8]
            _, loss = model(batch[:, :-1], batch[:, 1:])
            assert loss is not None
            model.zero_grad()
            loss.backward()
            results.append(d.compress())
            if step == 0 and c == 0:
                first = float(loss.detach())
            last = float(loss.detach())
        demos[0].apply(results)
    return first, last


def test_demo_training_reduces_loss_single_and_multi_client() -> None:
    for clients in (1, 3):
        first, last = _train(40, clients, DeMoConfig(lr=1e-2, chunk_size=16, topk=8))
        assert last < first - 1.0, (clients, first, last)
    assert math.isfinite(last)


def test_keeping_every_coefficient_reduces_to_sign_sgd() -> None:
    """With k = chunk size nothing is compressed away: one client's DeMo step is p − lr·sign(g)
    (the DCT, top-k, aggregation and inverse DCT cancel out), up to the integer basis of the
    apply step, which can only flip entries that are tiny next to their chunk's largest."""
    cfg = DeMoConfig(lr=0.01, chunk_size=8, topk=64, value_mode=ValueMode.FP32)
    g = torch.Generator().manual_seed(3)
    grads = {"w": torch.randn(16, 24, generator=g), "b": torch.randn(24, generator=g)}
    params = {n: torch.randn(t.shape, generator=g) for n, t in grads.items()}
    expected = {n: p - cfg.lr * torch.sign(grads[n]) for n, p in params.items()}
    mom = {n: torch.zeros(t.shape) for n, t in grads.items()}
    res = compress_step(mom, grads, cfg)
    assert all(float(m.abs().max()) == 0.0 for m in mom.values())  # everything was sent
    apply_results(params, [res], cfg)
    for n in params:
        same = params[n] == expected[n]
        assert bool(same[grads[n].abs() > 0.05 * grads[n].abs().max()].all()), n
        assert float(same.float().mean()) > 0.97, n


def test_lr_weighted_momentum_is_scale_free_under_a_constant_lr() -> None:
    """m ← β·m + lr·g: with one lr for every step, top-k and sign see only a scale, so the
    results equal the unweighted ones; under a schedule they differ."""
    g = torch.Generator().manual_seed(4)
    grads = [{"w": torch.randn(32, 32, generator=g)} for _ in range(4)]
    plain, weighted = DeMoConfig(lr_weighted=False), DeMoConfig(lr_weighted=True)
    mp, mw = {"w": torch.zeros(32, 32)}, {"w": torch.zeros(32, 32)}
    for gr in grads:
        rp, rw = compress_step(mp, gr, plain), compress_step(mw, gr, weighted, lr=0.5)
        assert torch.equal(rp.params["w"].indices, rw.params["w"].indices)
        assert torch.equal(rp.params["w"].values, rw.params["w"].values)
    assert torch.allclose(mw["w"], 0.5 * mp["w"])
    ms = {"w": torch.zeros(32, 32)}
    picks = [
        compress_step(ms, gr, weighted, lr=lr).params["w"].indices
        for gr, lr in zip(grads, [1e-4, 1e-3, 1e-2, 1e-1], strict=True)
    ]
    assert not torch.equal(picks[-1], rp.params["w"].indices)


def test_sum_aggregation_weighs_agreement() -> None:
    a = _one_param_result([[0, 3]], [[1.0, 1.0]])
    b = _one_param_result([[0, 5]], [[1.0, -1.0]])
    cfg = DeMoConfig(lr=1.0, chunk_size=16, topk=2, value_mode=ValueMode.FP32, aggregate="sum")
    p = {"w": torch.zeros(16)}
    apply_results(p, [a, b], cfg)
    expected = torch.zeros(1, 16, dtype=torch.float64)
    expected[0, 0], expected[0, 3], expected[0, 5] = 1.0, 0.5, -0.5  # the mean over both peers
    exact = dct.decode(expected, (16,), (16,))
    clear = exact.abs() > 0.02 * exact.abs().max()
    assert torch.equal(-p["w"][clear], torch.sign(exact[clear]).float())
    assert not torch.equal(-p["w"], _direction([a, b]))  # differs from the mean over pickers
