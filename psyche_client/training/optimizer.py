"""DeMo: decoupled momentum optimisation (Peng, Quesnelle & Kingma 2024, arXiv:2411.19870).

Each client keeps a private fp32 momentum per parameter. A step has two halves:

* `compress` (client side, after backward): m ← β·m + lr·g (lr: the step's scheduled learning
  rate, `DeMoConfig.lr_at`; m ← β·m + g with `lr_weighted=False`); take the per-chunk DCT of
  m; keep the k largest-magnitude coefficients of each chunk; remove them from m (what was
  shared is no longer "owed"; the rest keeps accumulating — error feedback); return the kept
  coefficients as a `DeMoResult` to broadcast. The momentum is held as DCT coefficients, so
  this is one fused matmul per chunk shape and no inverse transform (`training.compress`).
* `apply_results` (everyone, on the agreed set): for every coefficient, the sum of the peers'
  values over the number of results (`aggregate="sum"`; "mean": over the peers that picked
  it); inverse DCT; sign; p ← p·(1 − lr·wd) − lr·sign. Summed in coefficient space and decoded
  once per chunk shape with an integer basis, so the direction is exact, and identical on every
  machine (`training.aggregate`).

Splitting the two is what lets the client loop train on round h, broadcast, and only later apply
the agreed results of round h − 2 (the overlapped schedule of the reference system): `compress`
never touches parameters and `apply_results` never touches momentum.

Precision: momentum and the DCT basis are fp32 even for bf16 models (β = 0.999 rounds to 1.0 in
bf16); the update itself is elementwise with exactly representable operands (lr·sign), so it
rounds the same everywhere (IEEE-754).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from psyche_client.training import dct, schedule
from psyche_client.training.aggregate import ApplyScratch, apply_layout
from psyche_client.training.compress import (
    compress_layout,
    load_momentum,
    momentum_views,
    quantize,
)
from psyche_client.training.result import DeMoResult, ValueMode, check_matches
from psyche_client.training.tiles import TileLayout

__all__ = ["DeMo", "DeMoConfig", "apply_results", "compress_step", "param_layout", "quantize"]


@dataclass(frozen=True)
class DeMoConfig:
    """Hyper-parameters every client of a run must share (they shape the results)."""

    lr: float = 1e-3  # size of the sign step
    momentum_decay: float = 0.999  # β
    chunk_size: int = 16  # largest chunk side; actual side = largest divisor ≤ this
    topk: int = 4  # coefficients kept per chunk
    weight_decay: float = 0.0  # decoupled, as in AdamW: p ← p·(1 − lr·wd)
    value_mode: ValueMode = ValueMode.SIGN
    # m ← β·m + lr·g (the DeMo paper's algorithm) instead of m ← β·m + g. Only changes anything
    # under a learning-rate schedule: top-k and sign do not see a constant scale.
    lr_weighted: bool = True
    # "mean": each coefficient averaged over the peers that picked it; "sum": over all peers
    # (a coefficient several peers agree on weighs more). docs/decisions/0003.
    aggregate: str = "sum"
    # The learning-rate schedule (`training.schedule`): linear warmup over `warmup_steps`, then
    # cosine decay to `final_lr`·lr at step `total_steps` (0: constant lr after the warmup).
    warmup_steps: int = 0
    total_steps: int = 0
    final_lr: float = 0.1
    # Clip each step's gradient to this global L2 norm before it enters the momentum (0: off; the
    # reference uses 1.0 too). Under sign steps only the gradients' relative weights over time
    # matter, so this keeps a few large early gradients from dominating the slowly decaying
    # momentum. Better or equal at 300 and 600 steps on both seeds measured (docs/decisions/0003,
    # fourth sweep). A psyche.json without the field gets this default.
    grad_clip: float = 1.0
    # The step size of the input token embedding as a multiple of lr (`input_embedding_names`;
    # a tied embedding counts as input). A sign step gives every entry of every tensor the same
    # ±lr; twice that on the input embedding was better at 300 steps on all 4 seeds measured
    # (1.4–3.5%) and even at 600 (docs/decisions/0003, sixth sweep), as muP also has the input
    # embedding step larger than the hidden matrices'. A psyche.json without it gets this default.
    embedding_lr_scale: float = 2.0

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.topk < 1:
            raise ValueError("chunk_size and topk must be positive")
        if not 0.0 <= self.momentum_decay < 1.0:
            raise ValueError("momentum_decay must be in [0, 1)")
        if self.aggregate not in ("mean", "sum"):
            raise ValueError("aggregate must be 'mean' or 'sum'")
        if self.warmup_steps < 0 or self.total_steps < 0:
            raise ValueError("warmup_steps and total_steps must be non-negative")
        if not 0.0 <= self.final_lr <= 1.0:
            raise ValueError("final_lr must be in [0, 1] (a fraction of lr)")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0.0):
            raise ValueError("grad_clip must be a non-negative number (0: no clipping)")
        if not (math.isfinite(self.embedding_lr_scale) and self.embedding_lr_scale > 0.0):
            raise ValueError("embedding_lr_scale must be a positive number (1: the plain lr)")

    def lr_scales(self, embeddings: Iterable[str]) -> dict[str, float]:
        """name → step-size multiplier for the parameters not stepped at the plain lr."""
        if self.embedding_lr_scale == 1.0:
            return {}
        return {name: self.embedding_lr_scale for name in embeddings}

    def lr_at(self, step: int) -> float:
        """The learning rate of training step `step` (the round's step number): every client
        computes the same value from the step and these settings alone (`training.schedule`)."""
        return schedule.lr_at(step, self.lr, self.warmup_steps, self.total_steps, self.final_lr)

    def grad_weight(
        self, lr: float | None, grads: Mapping[str, torch.Tensor | None] | None = None
    ) -> float:
        """The factor on the gradient added to the momentum at a step with learning rate lr:
        the lr (with `lr_weighted`) times the clip factor of `grads` (with `grad_clip`).
        Trainers, verifiers and the momentum chain all fold with this one factor."""
        weight = (self.lr if lr is None else lr) if self.lr_weighted else 1.0
        if self.grad_clip > 0.0 and grads is not None:
            weight *= clip_factor(grads, self.grad_clip)
        return weight


def clip_factor(grads: Mapping[str, torch.Tensor | None], max_norm: float) -> float:
    """min(1, max_norm / ‖grads‖₂) over all parameters (fp32 norms in the mapping's order, so
    every client computing it from the same gradients gets the same float)."""
    norms = [torch.linalg.vector_norm(g.detach().float()) for g in grads.values() if g is not None]
    if not norms:
        return 1.0
    total = float(torch.linalg.vector_norm(torch.stack(norms)))
    return min(1.0, max_norm / (total + 1e-6))


def param_layout(
    params: Mapping[str, torch.Tensor], chunk_size: int
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """name → (shape, chunk) for every parameter: what a valid result must look like."""
    return {
        n: (tuple(p.shape), dct.chunk_shape(tuple(p.shape), chunk_size)) for n, p in params.items()
    }


def compress_step(
    momentum: dict[str, torch.Tensor],
    grads: Mapping[str, torch.Tensor | None],
    cfg: DeMoConfig,
    update_momentum: bool = True,
    lr: float | None = None,
) -> DeMoResult:
    """Folds `grads` into `momentum` and extracts the top-k DCT components to share.

    `momentum` holds an fp32 tensor per parameter name (in model order, shaped like the
    parameter) with that parameter's momentum as DCT coefficients, chunk after chunk (as
    `DeMo.momentum` and a decoded momentum disclosure hold it); a missing gradient counts as
    zero. With update_momentum=False the momentum dict is left untouched (verifiers use this to
    recompute a peer's result without disturbing their own state). `lr` is the step's learning
    rate (default cfg.lr; it only matters with cfg.lr_weighted). Computes exactly what
    `DeMo.compress` computes, bit for bit.
    """
    layout = TileLayout({n: tuple(m.shape) for n, m in momentum.items()}, cfg.chunk_size)
    device = next(iter(momentum.values())).device
    bufs = layout.buffers(device)
    load_momentum(layout, momentum, bufs)
    out = compress_layout(
        layout,
        bufs,
        grads,
        layout.buffers(device),
        cfg.momentum_decay,
        cfg.topk,
        cfg.value_mode,
        cfg.grad_weight(lr, grads),
    )
    if update_momentum:
        for name, view in momentum_views(layout, bufs).items():
            momentum[name].copy_(view)
    return out


def _check_all(
    params: Mapping[str, torch.Tensor], results: Sequence[DeMoResult], cfg: DeMoConfig
) -> None:
    layout = param_layout(params, cfg.chunk_size)
    for res in results:
        check_matches(res, layout, k=cfg.topk, mode=cfg.value_mode)


@torch.no_grad()
def apply_results(
    params: Mapping[str, torch.Tensor],
    results: Sequence[DeMoResult],
    cfg: DeMoConfig,
    lr: float | None = None,
    layout: TileLayout | None = None,
    scratch: ApplyScratch | None = None,
    lr_scales: Mapping[str, float] | None = None,
) -> None:
    """Applies the agreed results to `params` in place.

    Every result is first checked against the local parameter layout (names, order, shapes,
    chunking, k, value mode), so a malformed peer result raises ResultFormatError before any
    parameter changes. With no results the parameters are left untouched (no weight decay
    either: an empty round is not a step). In 1-bit mode the order of `results` does not matter;
    in fp32/bf16 modes values are summed in the given order (the coordinator's). `lr_scales`:
    name → multiplier of the step for that parameter (`DeMoConfig.lr_scales`); weight decay
    stays at the plain lr.
    """
    if not results:
        return
    _check_all(params, results, cfg)
    if layout is None:
        layout = TileLayout({n: tuple(p.shape) for n, p in params.items()}, cfg.chunk_size)
    step = cfg.lr if lr is None else lr
    apply_layout(
        params,
        layout,
        results,
        cfg.value_mode,
        step,
        cfg.weight_decay,
        scratch if scratch is not None else ApplyScratch(),
        cfg.aggregate,
        lr_scales,
    )


class DeMo:
    """Holds one client's momentum and the run's DeMo settings for a fixed set of parameters.

    The momentum and all scratch space are allocated once, grouped by chunk shape
    (`training.tiles`), so a step allocates nothing of the model's size.
    """

    def __init__(
        self,
        named_params: Iterable[tuple[str, torch.nn.Parameter]],
        cfg: DeMoConfig,
        embeddings: Iterable[str] = (),
    ):
        """`embeddings`: the names of the input embedding's parameters
        (`model.input_embedding_names`), stepped at `cfg.embedding_lr_scale`·lr."""
        self.cfg = cfg
        self.params: dict[str, torch.nn.Parameter] = {
            n: p for n, p in named_params if p.requires_grad
        }
        self.lr_scales = cfg.lr_scales(embeddings)
        self.tiles = TileLayout({n: tuple(p.shape) for n, p in self.params.items()}, cfg.chunk_size)
        device = next(iter(self.params.values())).device if self.params else "cpu"
        self._momentum = self.tiles.buffers(device)
        self._scratch: list[torch.Tensor] | None = None
        self._apply_scratch = ApplyScratch()
        # name → view of the group buffers, shaped like the parameter (coefficient rows).
        self.momentum: dict[str, torch.Tensor] = momentum_views(self.tiles, self._momentum)

    def layout(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        return param_layout(self.params, self.cfg.chunk_size)

    def compress(
        self, grads: Mapping[str, torch.Tensor | None] | None = None, lr: float | None = None
    ) -> DeMoResult:
        """Client side: fold the gradients (default: each parameter's .grad) into momentum and
        return what to broadcast. `lr`: this step's learning rate (used with cfg.lr_weighted)."""
        if grads is None:
            grads = {n: p.grad for n, p in self.params.items()}
        if self._scratch is None:
            self._scratch = [torch.empty_like(m) for m in self._momentum]
        cfg = self.cfg
        return compress_layout(
            self.tiles,
            self._momentum,
            grads,
            self._scratch,
            cfg.momentum_decay,
            cfg.topk,
            cfg.value_mode,
            cfg.grad_weight(lr, grads),
        )

    def apply(self, results: Sequence[DeMoResult], lr: float | None = None) -> None:
        """Everyone: apply the agreed results to the parameters."""
        apply_results(
            self.params,
            results,
            self.cfg,
            lr=lr,
            layout=self.tiles,
            scratch=self._apply_scratch,
            lr_scales=self.lr_scales,
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"momentum.{n}": m.clone() for n, m in self.momentum.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for n, m in self.momentum.items():
            m.copy_(state[f"momentum.{n}"])
