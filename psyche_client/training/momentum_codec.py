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
"""

from __future__ import annotations

import numpy as np
import torch


def encode_momentum(momentum: dict[str, torch.Tensor]) -> bytes:
    """fp32 little-endian tensors concatenated in parameter order (shapes come from the model)."""
    return b"".join(
        t.detach().to(torch.float32).contiguous().cpu().numpy().astype("<f4").tobytes()
        for t in momentum.values()
    )


def decode_momentum(data: bytes, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The inverse of `encode_momentum`; ValueError if the size does not fit the model."""
    want = sum(int(np.prod(s)) for s in shapes.values()) * 4
    if len(data) != want:
        raise ValueError(f"momentum is {len(data)} bytes, the model needs {want}")
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        arr = np.frombuffer(data, dtype="<f4", count=n, offset=offset).astype(np.float32)
        out[name] = torch.from_numpy(arr.copy()).view(shape)
        offset += 4 * n
    return out
