"""DeMo: decoupled momentum optimisation (Peng, Quesnelle & Kingma 2024, arXiv:2411.19870).

Each client keeps a private fp32 momentum per parameter. A step has two halves:

* `compress` (client side, after backward): m ← β·m + g; take the per-chunk DCT of m; keep the
  k largest-magnitude coefficients of each chunk; subtract their inverse DCT from m (what was
  shared is no longer "owed"; the rest keeps accumulating — error feedback); return the kept
  coefficients as a `DeMoResult` to broadcast.
* `apply_results` (everyone, on the agreed set in the agreed order): for every coefficient, the
  mean of the values of the peers that picked it; inverse DCT; sign; p ← p·(1 − lr·wd) − lr·sign.

Splitting the two is what lets the client loop train on round h, broadcast, and only later apply
the agreed results of round h − 2 (the overlapped schedule of the reference system): `compress`
never touches parameters and `apply_results` never touches momentum.

Precision and determinism (the property every honest client relies on):
* momentum and the DCT basis are fp32 even for bf16 models (β = 0.999 rounds to 1.0 in bf16);
* aggregation sums peers in the caller's order (the order the coordinator agreed, never arrival
  order) in fp32, with each peer's indices unique per chunk, so no two adds race;
* the inverse DCT runs in float64 and values within 1e-9 of the chunk's coefficient mass are
  treated as 0 before the sign: rounding differences between BLAS kernels or machines (~1e-16
  relative) can then never flip a sign, so every machine derives the same {-1, 0, 1} step;
* the update itself is elementwise with exactly representable operands (lr·sign), so it rounds
  the same everywhere (IEEE-754).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from psyche_client.training import dct
from psyche_client.training.result import (
    DeMoResult,
    ParamComponent,
    ValueMode,
    check_matches,
    index_dtype,
)

# Relative dead zone before the sign (see module docstring).
SIGN_DEAD_ZONE = 1e-9


@dataclass(frozen=True)
class DeMoConfig:
    """Hyper-parameters every client of a run must share (they shape the results)."""

    lr: float = 1e-3  # size of the sign step
    momentum_decay: float = 0.999  # β
    chunk_size: int = 16  # largest chunk side; actual side = largest divisor ≤ this
    topk: int = 4  # coefficients kept per chunk
    weight_decay: float = 0.0  # decoupled, as in AdamW: p ← p·(1 − lr·wd)
    value_mode: ValueMode = ValueMode.SIGN

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.topk < 1:
            raise ValueError("chunk_size and topk must be positive")
        if not 0.0 <= self.momentum_decay < 1.0:
            raise ValueError("momentum_decay must be in [0, 1)")


def param_layout(
    params: Mapping[str, torch.Tensor], chunk_size: int
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """name → (shape, chunk) for every parameter: what a valid result must look like."""
    return {
        n: (tuple(p.shape), dct.chunk_shape(tuple(p.shape), chunk_size)) for n, p in params.items()
    }


def _quantize(values: torch.Tensor, mode: ValueMode) -> torch.Tensor:
    if mode is ValueMode.FP32:
        return values.to(torch.float32)
    if mode is ValueMode.BF16:
        return values.to(torch.bfloat16)
    return torch.sign(values).to(torch.int8)  # sign(0) == 0: an exact zero stays zero


def compress_step(
    momentum: dict[str, torch.Tensor],
    grads: Mapping[str, torch.Tensor | None],
    cfg: DeMoConfig,
    update_momentum: bool = True,
) -> DeMoResult:
    """Folds `grads` into `momentum` and extracts the top-k DCT components to share.

    `momentum` must hold an fp32 tensor per parameter name (in model order); a missing gradient
    counts as zero. With update_momentum=False the momentum dict is left untouched (verifiers use
    this to recompute a peer's result without disturbing their own state).
    """
    out = DeMoResult(value_mode=cfg.value_mode)
    for name, m_old in momentum.items():
        g = grads.get(name)
        m = m_old.mul(cfg.momentum_decay)
        if g is not None:
            m.add_(g.detach().to(torch.float32))
        shape = tuple(m.shape)
        chunk = dct.chunk_shape(shape, cfg.chunk_size)
        mc = dct.to_chunks(m, chunk)
        coeffs = dct.encode_chunks(mc, chunk)
        k = min(cfg.topk, coeffs.shape[1])
        _, idx = torch.topk(coeffs.abs(), k, dim=1, sorted=False)
        idx, _ = torch.sort(idx, dim=1)  # canonical order: the same result encodes identically
        vals = torch.gather(coeffs, 1, idx)
        # Error feedback: remove exactly what was sent (in full precision) from the momentum.
        mc = mc - dct.decode_sparse_chunks(idx, vals, chunk)
        if update_momentum:
            m_old.copy_(dct.from_chunks(mc, shape, chunk))
        out.params[name] = ParamComponent(
            shape=shape,
            chunk=chunk,
            # Results leave the device: they are encoded and sent over the network.
            indices=idx.to(index_dtype(math.prod(chunk))).cpu(),
            values=_quantize(vals, cfg.value_mode).cpu(),
        )
    return out


def aggregate_direction(
    name: str,
    shape: tuple[int, ...],
    chunk: tuple[int, ...],
    results: Sequence[DeMoResult],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The {-1, 0, 1} float32 step direction for one parameter from the peers' components.

    Each coefficient is the mean over the peers that sent it (peers that did not pick it do not
    dilute it), summed in the given order.
    """
    rows = dct.num_chunks(shape, chunk)
    cnumel = math.prod(chunk)
    total = torch.zeros(rows, cnumel, dtype=torch.float32, device=device)
    count = torch.zeros(rows, cnumel, dtype=torch.float32, device=device)
    indices = [res.params[name].indices.to(device=device, dtype=torch.int64) for res in results]
    for res, idx in zip(results, indices, strict=True):
        # Indices are unique within a row, so no two adds of one call hit the same slot:
        # deterministic on CPU and GPU alike (no atomics racing on one address).
        total.scatter_add_(1, idx, res.params[name].values.to(device=device, dtype=torch.float32))
        count.scatter_add_(1, idx, torch.ones(idx.shape, dtype=torch.float32, device=device))
    mean = (total / count.clamp(min=1.0)).to(torch.float64)
    if len(results) * results[0].params[name].k * 8 <= cnumel:
        # Few kept coefficients per chunk: sum each peer's sparse inverse DCT, weighted by
        # 1/count so a coefficient picked by several peers contributes its mean once.
        dense = torch.zeros(rows, cnumel, dtype=torch.float64, device=device)
        weight = mean / count.clamp(min=1.0).double()
        for idx in indices:
            dense += dct.decode_sparse_chunks(idx, torch.gather(weight, 1, idx), chunk)
    else:
        dense = dct.decode_chunks(mean, chunk)  # still one row per chunk
    # Dead zone scaled by each chunk's coefficient mass (see module docstring).
    thresh = SIGN_DEAD_ZONE * mean.abs().sum(dim=1, keepdim=True)
    direction = torch.where(dense.abs() > thresh, torch.sign(dense), 0.0).to(torch.float32)
    return dct.from_chunks(direction, shape, chunk)


@torch.no_grad()
def apply_results(
    params: Mapping[str, torch.Tensor],
    results: Sequence[DeMoResult],
    cfg: DeMoConfig,
    lr: float | None = None,
) -> None:
    """Applies the agreed results, in the given order, to `params` in place.

    Every result is first checked against the local parameter layout (names, order, shapes,
    chunking, k, value mode), so a malformed peer result raises ResultFormatError before any
    parameter changes. With no results the parameters are left untouched (no weight decay
    either: an empty round is not a step).
    """
    if not results:
        return
    layout = param_layout(params, cfg.chunk_size)
    for res in results:
        check_matches(res, layout, k=cfg.topk, mode=cfg.value_mode)
    step = cfg.lr if lr is None else lr
    for name, p in params.items():
        shape, chunk = layout[name]
        direction = aggregate_direction(name, shape, chunk, results, p.device)
        if cfg.weight_decay:
            p.mul_(1.0 - step * cfg.weight_decay)
        p.add_(direction.to(p.dtype), alpha=-step)


class DeMo:
    """Holds one client's momentum and the run's DeMo settings for a fixed set of parameters."""

    def __init__(self, named_params: Iterable[tuple[str, torch.nn.Parameter]], cfg: DeMoConfig):
        self.cfg = cfg
        self.params: dict[str, torch.nn.Parameter] = {
            n: p for n, p in named_params if p.requires_grad
        }
        self.momentum: dict[str, torch.Tensor] = {
            n: torch.zeros(p.shape, dtype=torch.float32, device=p.device)
            for n, p in self.params.items()
        }

    def layout(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        return param_layout(self.params, self.cfg.chunk_size)

    def compress(self, grads: Mapping[str, torch.Tensor | None] | None = None) -> DeMoResult:
        """Client side: fold the gradients (default: each parameter's .grad) into momentum and
        return what to broadcast."""
        if grads is None:
            grads = {n: p.grad for n, p in self.params.items()}
        return compress_step(self.momentum, grads, self.cfg)

    def apply(self, results: Sequence[DeMoResult], lr: float | None = None) -> None:
        """Everyone: apply the agreed results (in the agreed order) to the parameters."""
        apply_results(self.params, results, self.cfg, lr=lr)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"momentum.{n}": m.clone() for n, m in self.momentum.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for n, m in self.momentum.items():
            m.copy_(state[f"momentum.{n}"])
