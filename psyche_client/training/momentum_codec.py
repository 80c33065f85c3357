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
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch


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
