"""A parameter hash every client can compare: equal hashes mean bit-identical models."""

from __future__ import annotations

import hashlib
import struct

import torch
from torch import nn


def param_hash(model: nn.Module | dict[str, torch.Tensor]) -> str:
    """Hex SHA-256 over every parameter's name, dtype, shape and raw bytes, in model order.

    Names, dtypes and shapes are length-prefixed into the hash so two models that differ only in
    layout never collide. Tied parameters count once (named_parameters deduplicates them).
    """
    items = model.named_parameters() if isinstance(model, nn.Module) else model.items()
    h = hashlib.sha256()
    for name, p in items:
        t = p.detach().to("cpu").contiguous()
        meta = f"{name}|{t.dtype}|{tuple(t.shape)}".encode()
        h.update(struct.pack("<I", len(meta)) + meta)
        raw = t.view(torch.uint8) if t.numel() else t.new_empty(0, dtype=torch.uint8)
        h.update(raw.numpy().tobytes())
    return h.hexdigest()
