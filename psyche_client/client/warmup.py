"""Warmup: get the model (from peers that already hold this epoch's start, else the checkpoint
the run names), serve it to joiners (sharing.py), and tell the coordinator this client is
ready."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from psyche_client import _core
from psyche_client.checkpoint.io import load_checkpoint
from psyche_client.client.context import ROUND_PHASES, ClientContext
from psyche_client.client.duties import Duty
from psyche_client.client.epoch_end import settle_ended_epoch
from psyche_client.client.sharing import (
    MAX_META_BYTES,
    parse_point,
    share_model,
    tensors_from_bytes,
)
from psyche_client.data.mixture import MixtureProvider
from psyche_client.errors import UserError
from psyche_client.p2p.errors import ModelUnavailable, P2PError
from psyche_client.p2p.manifest import Manifest
from psyche_client.p2p.model import agreed_by
from psyche_client.p2p.transfer import FetchFailed
from psyche_client.runspec import TrainingSpec, load_spec
from psyche_client.training.hashing import param_hash
from psyche_client.training.model import (
    CausalLM,
    ModelConfig,
    build_model,
    config_from_dict,
    state_sizes,
)
from psyche_client.training.trainer import Trainer

log = logging.getLogger("psyche.client")


async def warmup(ctx: ClientContext, state: _core.Coordinator) -> None:
    if not ctx.duties.once(Duty.WARMUP, state.epoch, 0):
        return
    await settle_ended_epoch(ctx, state)  # a model that missed the last apply is reloaded
    if ctx.trainer is None or ctx.behind is not None or ctx.absent:
        # (A client still behind when its epoch ended, or one that sat out rounds, e.g. dropped
        # and back as a joiner, starts this one from the peers' model: its own is stale.)
        await load_model(ctx, state)
        ctx.behind, ctx.resync_failures, ctx.status.desynced = None, 0, False
        ctx.absent = False
    assert ctx.trainer is not None
    share_model(ctx, state.epoch, -1, -1)
    ctx.applied[state.epoch] = -1
    if await ctx.send("warmup_witness", ctx.backend.warmup_witness()) is None:
        ctx.duties.retry(Duty.WARMUP, state.epoch, 0)


def note_absence(ctx: ClientContext, state: _core.Coordinator) -> None:
    """This client is not a healthy member while the run is in its rounds or cooldown: the
    others apply steps it does not, so a model it holds is stale from here on."""
    if ctx.trainer is not None and state.phase in (*ROUND_PHASES, _core.Phase.Cooldown):
        ctx.absent = True


async def load_model(ctx: ClientContext, state: _core.Coordinator) -> None:
    ref = state.model
    peers = [
        c.node_key
        for c in state.clients()
        if c.state == _core.ClientState.Healthy
        and c.node_key != ctx.key.public
        and c.joined_epoch < state.epoch
    ]
    model: CausalLM | None = None
    if peers and ctx.node is not None:
        try:
            until = state.phase_started_at + state.config.warmup_secs
            model, spec = await _model_from_peers(ctx, peers, state.epoch, until)
            digest = param_hash(model)
            # Equal to the run's checkpoint hash: the coordinator vouches for it. Different: the
            # peers' majority does (an epoch may end without a checkpoint).
            ctx.event("model", source="peers", hash=digest, pinned=digest == ref.content_hash)
        except Exception as e:  # noqa: BLE001 - fall back to the checkpoint below
            log.warning("model from peers failed (%r); using the checkpoint", e)
    if model is None:
        if ref.kind == _core.ModelKind.Peers:
            raise RuntimeError("the run's model lives with its peers and none could serve it")
        location = ref.location
        pinned = ref.content_hash  # checked against the weights by load_checkpoint
        revision = None if pinned else (ref.revision or None)
        model = await asyncio.to_thread(load_checkpoint, location, revision, content_hash=pinned)
        spec = load_spec(location) if ref.kind == _core.ModelKind.LocalPath else TrainingSpec()
        ctx.event("model", source=ref.kind.name, hash=param_hash(model))
    ctx.spec = spec
    ctx.model_config = model.config
    ctx.data = ctx.options.data(spec.seq_len)
    if isinstance(ctx.data, MixtureProvider):  # seeded by the run too: the same on every client
        ctx.data = ctx.data.for_run(ctx.backend.state().run_id)
    if ctx.data is not None:  # (in-process tests run without data)
        ctx.data.require_vocab(model.config.vocab_size)  # a one-line DataError, not mid-step
    ctx.trainer = Trainer(model, spec.demo, ctx.data, spec.micro_batch)


def _peer_config(raw: bytes) -> tuple[ModelConfig, TrainingSpec]:
    """The model config and training spec a peer's config blob names (untrusted: bounded and
    checked; ValueError when invalid)."""
    if len(raw) > MAX_META_BYTES:
        raise ValueError(f"config blob of {len(raw):,} bytes")
    meta = json.loads(raw)
    if not isinstance(meta, dict):
        raise ValueError("config blob is not a JSON object")
    try:
        spec = TrainingSpec.from_json(meta.get("spec"), "peer model")
    except UserError as e:
        raise ValueError(str(e)) from None
    return config_from_dict(meta.get("model")), spec


def _check_peer_model(manifest: Manifest, raw: bytes) -> None:
    """Before any tensor is downloaded: the config is valid and within bounds, and the
    manifest lists exactly the tensors (names and fp32 sizes) that config implies."""
    cfg, _ = _peer_config(raw)
    want = state_sizes(cfg)
    got = {t.name: t.size for t in manifest.tensors}
    if got != want:
        odd = sorted(set(got.items()) ^ set(want.items()))[:3]
        raise ValueError(f"its tensors are not what its config implies ({odd})")


POLL_S = 0.5
"""Between attempts while the peers' votes are split (some have not re-shared yet)."""
MIN_WAIT_S = 5.0
"""Floor of the wait for an agreed model, for a joiner that starts late in the warmup."""


async def _model_from_peers(
    ctx: ClientContext, peers: list[bytes], epoch: int, until: float
) -> tuple[CausalLM, TrainingSpec]:
    """The model a strict majority of `peers` (the members that held the previous epoch) serve
    with identical signed content, at this epoch's start (or the previous epoch's end, which is
    the same parameters before a peer re-shares it). One member cannot pick the joiner's model:
    it is outvoted, and the pieces come only from the peers that signed the agreed content.

    Peers re-share their model as the warmup begins, so votes can be split for a moment; the
    download is retried every `POLL_S` until `until` (the warmup's end, at least `MIN_WAIT_S`
    from now). ModelUnavailable when no agreed model was found by then."""
    assert ctx.node is not None
    select = agreed_by(len(peers) // 2 + 1, lambda m: m.config_size <= MAX_META_BYTES)
    loop = asyncio.get_running_loop()
    stop = loop.time() + max(MIN_WAIT_S, until - ctx.clock())
    why = "no peers"
    while True:
        left = stop - loop.time()
        try:
            snap = await ctx.node.fetch_model(
                peers, select=select, check=_check_peer_model, timeout=max(0.1, left)
            )
            point = parse_point(bytes(snap.config))
            if point.epoch in (epoch, epoch - 1):
                return _build_peer_model(snap.config, snap.tensors, point.hash)
            why = f"peers agree on a model of epoch {point.epoch}"
        except (P2PError, FetchFailed, ValueError, TimeoutError) as e:
            why = str(e) or repr(e)
        log.info("model from peers: %s", why)
        if loop.time() + POLL_S >= stop:
            raise ModelUnavailable(f"no model a majority of {len(peers)} peers agree on: {why}")
        await asyncio.sleep(POLL_S)


def _build_peer_model(
    config: bytes | memoryview, pieces: dict[str, Any], want_hash: str
) -> tuple[CausalLM, TrainingSpec]:
    """Build the agreed model from its config blob and tensors; its parameter hash must be the
    one the agreed content names (ValueError otherwise)."""
    cfg, spec = _peer_config(bytes(config))
    model = build_model(cfg, init=False)
    model.load_state_dict(tensors_from_bytes(pieces, model.state_dict()), strict=True)
    if param_hash(model) != want_hash:
        raise ValueError("the agreed model's tensors do not match its parameter hash")
    return model, spec
