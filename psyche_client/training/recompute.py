"""Recompute a peer's result and score how well the claimed one matches.

What can be recomputed: a DeMo result is a deterministic function of (parameters at the start of
the step, the assigned batch, the peer's momentum before the step, the run's DeMo settings). The
verifier runs the same forward/backward and `compress_step` without touching its own state and
compares, per parameter, chunk by chunk and slot by slot.

Score: the fraction of the claimed (chunk, coefficient) slots that the recomputation also picked
with a matching value — the same sign in 1-bit mode; |Δ| ≤ 2⁻⁷·|v| + 1e-6·max|v| for bf16/fp32.

Tolerance (PASS_THRESHOLD = 0.95), justified:
* same hardware, same library versions and thread count: kernels are deterministic, so an
  honest result reproduces bit for bit and scores 1.0 (tested);
* different hardware: reductions in matmuls run in a different order, so gradients differ by
  about 1e-6 relative in fp32. That can only change a top-k choice where two coefficients of a
  chunk tie to within that gap at the k-th place, or a sign where a coefficient is ~0; the test
  suite perturbs gradients by 1e-4 relative (100× the cross-hardware gap) and still scores
  above 0.99. bf16 training (≈4e-3 relative) is looser: run it with the same threshold but expect
  lower honest scores; measure before tightening.
* tampering: random indices match k / chunk_numel of slots (1.6% at 16×16, k=4); flipping 10% of
  the signs scores 0.9; a result computed on a different batch scores ≈ 0.84 (the shared
  momentum history keeps it from 0); skipping the backward pass scores ≈ 0.5–0.6 (all tested).
  So 0.95 leaves a wide margin for honest noise and still rejects any material change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from psyche_client.training.model import CausalLM
from psyche_client.training.optimizer import DeMoConfig, compress_step, param_layout
from psyche_client.training.result import DeMoResult, ResultFormatError, ValueMode, check_matches
from psyche_client.training.trainer import compute_gradients

PASS_THRESHOLD = 0.95


@dataclass
class VerifyReport:
    score: float  # in [0, 1]; 1.0 = identical
    passed: bool
    detail: str


def recompute_result(
    model: CausalLM,
    batch: torch.Tensor,
    momentum: dict[str, torch.Tensor],
    cfg: DeMoConfig,
    micro_batch: int | None = None,
    lr: float | None = None,
) -> DeMoResult:
    """The result an honest peer with this momentum would have sent for this batch (at a step
    with learning rate `lr`, default cfg.lr)."""
    grads, _ = compute_gradients(model, batch, micro_batch)
    return compress_step(momentum, grads, cfg, update_momentum=False, lr=lr)


def _slot_matches(a: torch.Tensor, b: torch.Tensor, mode: ValueMode) -> torch.Tensor:
    if mode is ValueMode.SIGN:
        return a == b
    af, bf = a.float(), b.float()
    scale = bf.abs().max().clamp(min=1e-30)
    return (af - bf).abs() <= 2.0**-7 * bf.abs() + 1e-6 * scale


def score_results(claimed: DeMoResult, reference: DeMoResult) -> float:
    """Fraction of claimed slots that the reference also has, with a matching value."""
    if claimed.value_mode != reference.value_mode:
        return 0.0
    matched = 0
    total = 0
    for name, ref in reference.params.items():
        got = claimed.params.get(name)
        if got is None or got.indices.shape != ref.indices.shape:
            return 0.0
        ci, ri = got.indices.to(torch.int64), ref.indices.to(torch.int64)
        # For each claimed slot: position of the same index among the reference's slots.
        eq = ci.unsqueeze(2) == ri.unsqueeze(1)  # (rows, k, k)
        present = eq.any(dim=2)
        pos = eq.to(torch.int64).argmax(dim=2)
        ref_vals = torch.gather(ref.values, 1, pos)
        ok = present & _slot_matches(got.values, ref_vals, claimed.value_mode)
        matched += int(ok.sum())
        total += ok.numel()
    return matched / total if total else 0.0


def verify_result(
    model: CausalLM,
    batch: torch.Tensor,
    momentum: dict[str, torch.Tensor],
    claimed: DeMoResult,
    cfg: DeMoConfig,
    threshold: float = PASS_THRESHOLD,
    micro_batch: int | None = None,
    lr: float | None = None,
) -> VerifyReport:
    """Recomputes the peer's result and scores the claim; a malformed claim scores 0."""
    try:
        layout = param_layout(dict(model.named_parameters()), cfg.chunk_size)
        check_matches(claimed, layout, k=cfg.topk, mode=cfg.value_mode)
    except ResultFormatError as e:
        return VerifyReport(0.0, False, f"malformed: {e}")
    ref = recompute_result(model, batch, momentum, cfg, micro_batch, lr)
    score = score_results(claimed, ref)
    ok = score >= threshold
    return VerifyReport(score, ok, f"score {score:.4f} vs threshold {threshold}")
