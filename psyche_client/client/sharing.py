"""What this client serves of its model: its parameters at a known point of the run.

After warmup, after every applied round and at cooldown, a client serves its current model
under a signed manifest (p2p/manifest.py) whose config blob names the point the parameters are
at: the epoch, the last applied round of it (-1: the epoch's start) and that round's step, and
the parameter hash. Honest clients at the same point hold bit-identical parameters, so they sign
manifests with identical content; that is what lets a client catching up mid-epoch (`resync`)
take the model a majority of its peers agree on, rather than the first one offered.

Only the model travels, not optimizer state: DeMo's apply reads nothing but the parameters and
the agreed results, so the shared model continues bit-identically from them. Momentum is each
client's private error feedback for its own training (verifiers get it from the momentum
disclosure, never from here) and stays with the client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from psyche_client.client.context import ClientContext
from psyche_client.training.hashing import param_hash

MAX_META_BYTES = 1 << 20
"""A served model's config blob (model config, training spec and point) is a few KiB; a
manifest announcing more is refused before anything is downloaded."""


@dataclass(frozen=True)
class ModelPoint:
    """Where in the run a served model is."""

    epoch: int
    height: int
    """Last round of `epoch` applied to it; -1 at the epoch's start."""
    step: int
    """The coordinator step of that round (-1 at the epoch's start)."""
    hash: str
    """`param_hash` of the parameters."""


def model_meta(ctx: ClientContext, point: ModelPoint) -> bytes:
    """The config blob served with the tensors: canonical JSON, so identical clients at one
    point produce identical bytes (and so identical manifest content)."""
    model = ctx.trainer.model if ctx.trainer is not None else None
    config = getattr(model, "config", None)
    doc: dict[str, Any] = {
        "model": config.to_hf_dict() if config is not None else None,
        "spec": ctx.spec.to_json() if ctx.spec is not None else None,
        "epoch": point.epoch,
        "height": point.height,
        "step": point.step,
        "hash": point.hash,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def parse_point(raw: bytes) -> ModelPoint:
    """The point a served config blob names; ValueError if it names none."""
    try:
        doc = json.loads(raw)
        return ModelPoint(int(doc["epoch"]), int(doc["height"]), int(doc["step"]), str(doc["hash"]))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"served model names no run position: {e!r}") from None


def tensor_bytes(ctx: ClientContext) -> dict[str, bytes]:
    assert ctx.trainer is not None
    return {
        name: t.detach().contiguous().cpu().numpy().tobytes()
        for name, t in ctx.trainer.model.state_dict().items()
    }


def tensors_from_bytes(
    pieces: Mapping[str, bytes | memoryview], like: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The served pieces of a model (the inverse of `tensor_bytes`) as tensors with the names,
    dtypes and shapes of `like` (the loader's own state dict). Their sizes were checked against
    the manifest before download; the caller checks the parameter hash."""
    return {
        name: torch.frombuffer(bytearray(pieces[name]), dtype=t.dtype).view(t.shape).clone()
        for name, t in like.items()
    }


def share_model(ctx: ClientContext, epoch: int, height: int, step: int) -> ModelPoint | None:
    """Serve the current model as being at (epoch, height, step).

    The previous generation's pieces stay downloadable for two more steps (tagged with the
    current step in the node's store), so a peer whose download spans the next apply can finish
    it instead of starting over."""
    if ctx.node is None or ctx.trainer is None:
        return None
    point = ModelPoint(epoch, height, step, param_hash(ctx.trainer.model))
    tensors = tensor_bytes(ctx)
    config = model_meta(ctx, point)
    previous = ctx.shared
    manifest = ctx.node.share_model(config, tensors)
    ctx.shared = (manifest, config, tensors)
    now = ctx.node.current_step
    if previous is not None and now is not None:
        old_manifest, old_config, old_tensors = previous
        kept = {manifest.config_sha256} | {t.sha256 for t in manifest.tensors}
        if old_manifest.config_sha256 not in kept:
            ctx.node.serve(old_manifest.config_sha256, old_config, now)
        for entry in old_manifest.tensors:
            if entry.sha256 not in kept:
                ctx.node.serve(entry.sha256, old_tensors[entry.name], now)
    return point
