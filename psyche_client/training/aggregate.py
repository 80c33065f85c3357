"""Applying the agreed results: all peers summed in coefficient space, then one exact inverse
transform per chunk shape, batched across parameters.

The DCT is linear, so the mean of the peers' sparse components can be formed in coefficient space
and decoded once, instead of decoding every peer separately. For each chunk shape (a `tiles`
group: every chunk of every parameter that has that shape), the step is:

1. counts and sums: every peer's (rows, k) indices and values are scatter-added into one dense
   (rows, chunk_numel) buffer; the totals are read back at the peers' positions only;
2. quantised mean: each picked coefficient's mean over the peers that picked it, as an integer
   q in [-Q, Q] (1-bit mode: round(Q·total/count) in integer arithmetic, with Q = 240 so the means
   of up to 6 peers are exact; fp32/bf16 modes: scaled by the chunk's largest |mean|);
3. one matmul of the dense integer coefficients with `dct.integer_basis` (integers in [-b, b]);
4. the sign of each entry is the step direction.

Why this is bit-identical everywhere: in (3) every product is an integer and Q·b·(nonzeros per
chunk) ≤ 2²⁴, so every partial sum is an integer that fp32 represents exactly: any summation
order, BLAS kernel, thread count or GPU (TF32 or bf16 passes included: |q|, |b| ≤ 256 are exact
there too) yields the same value, and its sign. (1) adds integers (1-bit mode) or adds each
peer's values in the caller's order with unique indices per row (no two adds race); (2) is
integer arithmetic or single IEEE-754 operations. In 1-bit mode nothing depends on the order of
the results at all. Tiles of more than 1024 coefficients use the separable product in float64
(the integer bound needs its 53 bits there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from psyche_client.training import dct
from psyche_client.training.result import DeMoResult, ValueMode
from psyche_client.training.tiles import Group, TileLayout, add_rows

EXACT_FP32 = 1 << 24  # every integer of magnitude ≤ 2²⁴ is exact in fp32
MEAN_LEVELS = 240  # divisible by 1..6, 8, 10, 12, 15, 16: those peer counts average exactly
BASIS_LEVELS = 255  # ≤ 256: exact in bf16/TF32 matmul inputs as well
FP32_MAX_NNZ = 1024  # above this many nonzeros per chunk, fp32 leaves too few levels
SEPARABLE_ABOVE = 1024  # tiles with more coefficients use the separable float64 path


def levels(nnz: int) -> tuple[int, int]:
    """(mean levels Q, basis levels b) for chunks with at most `nnz` nonzero coefficients:
    as fine as possible with Q·b·nnz ≤ 2²⁴ (the exactness bound of fp32)."""
    b = min(BASIS_LEVELS, math.isqrt(EXACT_FP32 // nnz))
    return min(MEAN_LEVELS, EXACT_FP32 // (b * nnz)), b


class ApplyScratch:
    """Reusable dense buffers, one per group, so a step allocates (and page-faults) nothing."""

    def __init__(self) -> None:
        self._bufs: dict[tuple[int, tuple[int, ...], str], torch.Tensor] = {}

    def get(self, slot: int, group: Group, device: torch.device) -> torch.Tensor:
        key = (slot, group.chunk, str(device))
        buf = self._bufs.get(key)
        if buf is None or buf.shape[0] != group.rows:
            buf = torch.empty(group.rows, group.numel, dtype=torch.int32, device=device)
            self._bufs[key] = buf
        return buf


def _stack(results: Sequence[DeMoResult], group: Group, device: torch.device, values: bool):
    out = []
    for res in results:
        parts = [
            (res.params[s.name].values if values else res.params[s.name].indices)
            for s in group.slots
        ]
        t = parts[0] if len(parts) == 1 else torch.cat(parts)
        out.append(t.to(device=device, dtype=torch.int64 if not values else None))
    return out


def quantised_mean(
    buf: torch.Tensor,
    idx: list[torch.Tensor],
    vals: list[torch.Tensor],
    mode: ValueMode,
    q_levels: int,
    aggregate: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(all peers' indices side by side, the integer mean q at each of them), both
    (rows, P·k). `buf` is a dense int32 scratch of (rows, chunk_numel); on return it is zero
    except at those positions (which the caller overwrites)."""
    every = torch.cat(idx, dim=1)
    peers = len(idx)
    buf.zero_()
    if mode is ValueMode.SIGN:
        # Count and total in one pass: each peer adds K + v (v ∈ {-1, 0, 1}, K = 4P), so a slot
        # holds K·count + total with |total| ≤ count ≤ P = K/4, and both come back exactly.
        k_pack = 4 * peers
        for i, v in zip(idx, vals, strict=True):
            buf.scatter_add_(1, i, v.to(torch.int32) + k_pack)
        packed = buf.gather(1, every)
        count = torch.div(packed + k_pack // 2, k_pack, rounding_mode="floor")
        total = packed - k_pack * count
        if aggregate == "sum":  # the mean over all peers: every count is the number of results
            count = torch.full_like(count, peers)
        # round(Q·|total| / count), half up, in integers; then the sign back.
        mag = torch.div(2 * q_levels * total.abs() + count, 2 * count, rounding_mode="floor")
        return every, (torch.sign(total) * mag).to(torch.float32)
    ones = torch.ones_like(idx[0], dtype=torch.int32)
    for i in idx:
        buf.scatter_add_(1, i, ones)
    count = buf.gather(1, every)
    buf.scatter_(1, every, 0)
    if aggregate == "sum":
        count = torch.full_like(count, peers)
    fbuf = buf.view(torch.float32)  # int 0 and float 0.0 share their bits
    for i, v in zip(idx, vals, strict=True):
        fbuf.scatter_add_(1, i, v.to(torch.float32))  # in the caller's order
    total = fbuf.gather(1, every)
    mean = total / count.to(torch.float32)
    scale = mean.abs().amax(dim=1, keepdim=True)
    q = torch.where(scale > 0, torch.round(mean / scale.clamp(min=1e-38) * q_levels), 0.0)
    return every, q


def direction_rows(
    group: Group,
    results: Sequence[DeMoResult],
    mode: ValueMode,
    device: torch.device,
    scratch: ApplyScratch,
    aggregate: str = "mean",
) -> torch.Tensor:
    """The {-1, 0, 1} step direction of every chunk of the group, (rows, chunk_numel) fp32."""
    idx = _stack(results, group, device, values=False)
    vals = _stack(results, group, device, values=True)
    nnz = min(group.numel, len(results) * idx[0].shape[1])
    separable = group.numel > SEPARABLE_ABOVE or nnz > FP32_MAX_NNZ
    q_levels, b_levels = (MEAN_LEVELS, BASIS_LEVELS) if separable else levels(nnz)
    buf = scratch.get(0, group, device)
    every, q = quantised_mean(buf, idx, vals, mode, q_levels, aggregate)
    out = scratch.get(1, group, device).view(torch.float32)
    if not separable:
        dense = buf.view(torch.float32)
        dense.scatter_(1, every, q)
        torch.mm(dense, dct.integer_basis(group.chunk, b_levels, torch.float32, device), out=out)
    else:
        dense = torch.zeros(group.rows, group.numel, dtype=torch.float64, device=device)
        dense.scatter_(1, every, q.to(torch.float64))
        out.copy_(_decode_separable(dense, group.chunk, b_levels))
    return torch.sign(out, out=out)


def _decode_separable(dense: torch.Tensor, chunk: tuple[int, ...], b: int) -> torch.Tensor:
    """Exact integer inverse transform in float64 (|value| ≤ Q·b²·numel ≪ 2⁵³)."""
    dev = dense.device
    if len(chunk) == 1:
        return dense @ dct.integer_side_basis(chunk[0], b, torch.float64, dev)
    r, c = chunk
    t = dense.view(-1, r, c)
    br = dct.integer_side_basis(r, b, torch.float64, dev)
    bc = dct.integer_side_basis(c, b, torch.float64, dev)
    return (br.T @ t @ bc).reshape(-1, r * c)


@torch.no_grad()
def apply_layout(
    params: Mapping[str, torch.Tensor],
    layout: TileLayout,
    results: Sequence[DeMoResult],
    mode: ValueMode,
    lr: float,
    weight_decay: float,
    scratch: ApplyScratch,
    aggregate: str = "mean",
    lr_scales: Mapping[str, float] | None = None,
) -> None:
    """p ← p·(1 − lr·wd) − s·lr·direction for every parameter (s: its `lr_scales` entry, default
    1); results already validated. s·lr·(±1) is one float, so the update rounds the same
    everywhere."""
    if weight_decay:
        for p in params.values():
            p.mul_(1.0 - lr * weight_decay)
    for group in layout:
        device = params[group.slots[0].name].device
        rows = direction_rows(group, results, mode, device, scratch, aggregate)
        add_rows(group, params, rows, -lr, lr_scales)
