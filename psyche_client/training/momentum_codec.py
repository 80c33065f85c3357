"""The momentum disclosure: how a trainer publishes the momentum a verifier needs, as bytes.

A DeMo result depends on the trainer's private momentum, so a verifier cannot recompute it from
the parameters and the batch alone. Each trainer therefore also publishes, per step, the
momentum it started that step with (a separate blob, announced as its own signed message kind,
`p2p.messages.KIND_MOMENTUM`, and bound by the same commitment scheme as results; see
`client.peers`). A verifier fetches the target's
momentum, rebuilds the parameters the round started from (it snapshots them every round),
recomputes the result on the target's assigned samples and scores the claim
(`training.recompute`). See docs/decisions/0002-verification.md for what this does and does not
prove: it catches results that do not follow from the trainer's own declared momentum (garbage,
tampering, wrong data), not a trainer that crafts a momentum to fit a chosen result.

The momentum is disclosed as the client holds it: per parameter, its DCT coefficients chunk after
chunk (`training.compress`), as fp32 little-endian, parameters in model order. Encoding copies
the model's momentum to host memory once (straight from the device into the payload buffer);
decoding makes one copy (into tensors that own their memory).

The momentum chain (issue 14): a disclosure alone does not tie the momentum to the trainer's
history, so a trainer could craft one that yields a chosen result. But the momentum a trainer
starts a step with is a deterministic function of the one it started its previous step with:
`successor(m, g, sent) = β·m + w·DCT(g)` with the coefficients its previous result sent zeroed
(error feedback; `training.compress`). `successor` computes exactly that, with the same fold
the optimizer uses, so on the same hardware it equals the trainer's momentum bit for bit;
`link_mismatches` compares a disclosure with it under a float tolerance for other hardware.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping

import numpy as np
import torch

from psyche_client.training.compress import _fold, load_momentum, momentum_views
from psyche_client.training.optimizer import DeMoConfig
from psyche_client.training.result import DeMoResult
from psyche_client.training.tiles import TileLayout, gather_rows

LINK_RTOL = 1e-4
"""Per-coefficient relative tolerance of the chain check. Gradients recomputed on other hardware
differ by about 1e-6 relative (training/recompute.py); the momentum carries that into one fold
only (the previous momentum is the trainer's own bytes), so 1e-4 is 100x the honest gap. A crafted
momentum moves the coefficients it needs into the top-k, by far more than that."""
LINK_ATOL = 1e-6
"""Absolute tolerance, as a fraction of the parameter's largest coefficient (near-zero
coefficients, where a relative bound means nothing)."""


def encode_momentum(momentum: dict[str, torch.Tensor]) -> memoryview:
    """fp32 little-endian tensors concatenated in parameter order (shapes come from the model).

    Returns a read-only view of one buffer that every tensor was copied into directly (one
    device-to-host copy of the model, no intermediate arrays)."""
    total = sum(t.numel() for t in momentum.values())
    out = bytearray(4 * total)
    if total:
        dst = torch.frombuffer(out, dtype=torch.float32)
        offset = 0
        for t in momentum.values():
            n = t.numel()
            dst[offset : offset + n].copy_(t.detach().reshape(-1))
            offset += n
        if sys.byteorder != "little":
            dst.numpy().byteswap(inplace=True)
    return memoryview(out).toreadonly()


def decode_momentum(
    data: bytes | memoryview, shapes: dict[str, tuple[int, ...]]
) -> dict[str, torch.Tensor]:
    """The inverse of `encode_momentum`; ValueError if the size does not fit the model."""
    want = sum(math.prod(s) for s in shapes.values()) * 4
    if len(data) != want:
        raise ValueError(f"momentum is {len(data)} bytes, the model needs {want}")
    flat = torch.from_numpy(np.frombuffer(data, dtype="<f4").astype(np.float32))  # one copy
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        out[name] = flat[offset : offset + n].view(shape)
        offset += n
    return out


def successor(
    momentum: Mapping[str, torch.Tensor],
    grads: Mapping[str, torch.Tensor | None],
    cfg: DeMoConfig,
    sent: DeMoResult,
    lr: float | None = None,
) -> dict[str, torch.Tensor]:
    """The momentum a trainer holds after a step that started from `momentum`, had gradients
    `grads` and sent `sent`: β·m + w·DCT(g) with the sent coefficients zeroed (the claimed
    indices, not recomputed ones, so the result is exact even where a recomputed top-k would
    differ). Same fold as `DeMo.compress`; `momentum` is not modified."""
    layout = TileLayout({n: tuple(m.shape) for n, m in momentum.items()}, cfg.chunk_size)
    device = next(iter(momentum.values())).device
    bufs = layout.buffers(device)
    scratch = layout.buffers(device)
    load_momentum(layout, momentum, bufs)
    weight = cfg.grad_weight(lr, grads)
    for group, m, s in zip(layout, bufs, scratch, strict=True):
        gather_rows(group, grads, s)
        _fold(group, m, s, cfg.momentum_decay, weight)
    views = momentum_views(layout, bufs)
    for name, comp in sent.params.items():
        rows = views[name].view(-1, comp.chunk_numel)
        rows.scatter_(1, comp.indices.to(torch.int64), 0.0)
    return views


def link_mismatches(
    expected: Mapping[str, torch.Tensor], disclosed: Mapping[str, torch.Tensor]
) -> tuple[int, int]:
    """(coefficients of `disclosed` outside the tolerance of `expected`, coefficients compared).
    A parameter missing or of another shape counts as all mismatched."""
    bad = total = 0
    for name, want in expected.items():
        got = disclosed.get(name)
        total += want.numel()
        if got is None or got.shape != want.shape:
            bad += want.numel()
            continue
        w = want.float()
        scale = w.abs().max().clamp(min=1e-30)
        tol = LINK_RTOL * w.abs() + LINK_ATOL * scale
        bad += int(((got.float() - w).abs() > tol).sum())
    return bad, total
