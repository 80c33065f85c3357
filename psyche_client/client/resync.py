"""Resync: a client that cannot obtain an agreed result catches up from its peers' model.

Applying a round needs every result its witnesses attested (apply.py). When one cannot be had
(its trainer unreachable from here and no holder left serving it), this client's parameters can
no longer follow the run by applying. Instead of leaving the run, it takes the current model
from its peers mid-epoch:

1. every other healthy member is asked for the manifest of the model it serves (sharing.py:
   parameters at a named epoch, last applied round and step, with their hash);
2. only content that a strict majority of those members signed identically is accepted
   (p2p/model.py `agreed_by`), with the tensor names and sizes this client's model has, and it
   is downloaded only from the peers that signed it, every piece checked against its hash; so a
   lying peer is outvoted, and bytes that do not match are refused (and their source marked);
3. the model must be of this epoch and include the round that could not be applied; its
   parameter hash is checked again after decoding, then loaded in place;
4. the client continues applying from the round after the fetched one (it holds later rounds'
   results as usual) and trains again from the next round (train.py skips a round whose
   predecessors are not applied).

Waiting is bounded by the round timing: one attempt lasts until the current round's train
window (or the cooldown) ends; a failed attempt is retried at the next reaction, and after
`MAX_FAILED_ATTEMPTS` the client stops with `ClientDesynced`. Events: `desynced` when it falls
behind, `resynced` (from/to height and step, hash, agreeing peers) or `resync_failed`.
"""

from __future__ import annotations

import asyncio
import logging

from psyche_client import _core
from psyche_client.client.context import ROUND_PHASES, ClientContext, ClientDesynced
from psyche_client.client.sharing import (
    MAX_META_BYTES,
    ModelPoint,
    parse_point,
    share_model,
    tensors_from_bytes,
)
from psyche_client.p2p.errors import P2PError
from psyche_client.p2p.manifest import Manifest
from psyche_client.p2p.model import ModelSnapshot, agreed_by
from psyche_client.p2p.transfer import FetchFailed
from psyche_client.training.hashing import param_hash

log = logging.getLogger("psyche.client")

POLL_S = 0.5
"""Between attempts while peers have not yet applied the round this client lacks."""
MIN_WAIT_S = 2.0
"""Floor of one attempt's wait, for a client that noticed late in its round."""
MAX_FAILED_ATTEMPTS = 3
"""Attempts (each bounded by a round) before the client gives up on following the run."""


def resync_deadline(state: _core.Coordinator) -> int:
    """When the current attempt stops waiting: the end of this round's train window (the core's
    adaptive choice), or of the cooldown (the clock of the core's round start times)."""
    if state.phase in ROUND_PHASES:
        rnd = state.round(state.height)
        return rnd.started_at + rnd.train_secs
    return state.phase_started_at + state.config.cooldown_secs


def model_peers(ctx: ClientContext, state: _core.Coordinator) -> list[bytes]:
    return [
        c.node_key
        for c in state.clients()
        if c.state == _core.ClientState.Healthy and c.node_key != ctx.key.public
    ]


def _acceptable(ctx: ClientContext) -> dict[str, int]:
    assert ctx.trainer is not None
    return {n: t.numel() * t.element_size() for n, t in ctx.trainer.model.state_dict().items()}


async def catch_up(ctx: ClientContext, state: _core.Coordinator, height: int, why: str) -> bool:
    """Round `height` cannot be applied (`why`): fetch the model peers agree on instead. True
    when the client is in sync again (ctx.applied moved on); False to try again later. Raises
    ClientDesynced after `MAX_FAILED_ATTEMPTS` failed attempts."""
    epoch = state.epoch
    ctx.stalled.set()
    if ctx.behind is None:
        ctx.behind, ctx.behind_why = height, why
        ctx.status.desynced = True
        log.warning("%s; catching up from peers' model", why)
        ctx.event("desynced", epoch=epoch, height=height, step=state.round(height).step, why=why)
    why = ctx.behind_why
    got = await resync(ctx, state, height)
    if got is None:
        ctx.resync_failures += 1
        ctx.event("resync_failed", epoch=epoch, height=height, attempts=ctx.resync_failures)
        if ctx.resync_failures >= MAX_FAILED_ATTEMPTS:
            raise ClientDesynced(
                f"{why}, and no model that a majority of peers agree on could be fetched in "
                f"{ctx.resync_failures} attempts; this client can no longer follow the run "
                "(check that it can reach its peers, then restart it)"
            )
        return False
    point, snap = got
    behind = ctx.behind
    ctx.applied[epoch] = point.height
    ctx.behind, ctx.resync_failures = None, 0
    ctx.status.desynced = False
    ctx.status.resyncs += 1
    share_model(ctx, point.epoch, point.height, point.step)
    log.warning(
        "caught up: step %d -> %d from %d peers",
        state.round(behind).step,
        point.step,
        len(snap.agreeing),
    )
    ctx.event(
        "resynced",
        epoch=epoch,
        from_height=behind,
        to_height=point.height,
        from_step=state.round(behind).step,
        to_step=point.step,
        hash=point.hash,
        peers=len(snap.agreeing),
    )
    return True


async def resync(
    ctx: ClientContext, state: _core.Coordinator, height: int
) -> tuple[ModelPoint, ModelSnapshot] | None:
    """Load the model a strict majority of the other healthy members serve, once it is of this
    epoch and includes round `height`; None if none was found before the round's deadline."""
    if ctx.node is None or ctx.trainer is None:
        return None
    peers = model_peers(ctx, state)
    needed = len(peers) // 2 + 1
    sizes = _acceptable(ctx)

    def acceptable(m: Manifest) -> bool:
        return m.config_size <= MAX_META_BYTES and {t.name: t.size for t in m.tensors} == sizes

    select = agreed_by(needed, acceptable)
    loop = asyncio.get_running_loop()
    stop = loop.time() + max(MIN_WAIT_S, resync_deadline(state) - ctx.clock())
    why = "no peers"
    while peers:
        left = stop - loop.time()
        try:
            t0 = loop.time()
            snap = await ctx.node.fetch_model(peers, select=select, timeout=max(0.1, left))
            log.info("resync: model from %d peers in %.2f s", len(snap.agreeing), loop.time() - t0)
            point = parse_point(bytes(snap.config))
            if point.epoch != state.epoch or point.height < height:
                why = f"peers agree on epoch {point.epoch} round {point.height}"
            else:
                _load(ctx, snap, point)
                return point, snap
        except (P2PError, FetchFailed, ValueError, TimeoutError) as e:
            why = str(e) or repr(e)
        log.info("resync attempt for round %d: %s", height, why)
        if loop.time() + POLL_S >= stop:
            break
        await asyncio.sleep(POLL_S)
    log.warning("no model to catch up from before the round's deadline: %s", why)
    return None


def _load(ctx: ClientContext, snap: ModelSnapshot, point: ModelPoint) -> None:
    """Decode the fetched tensors, check their hash against the agreed one, load in place."""
    assert ctx.trainer is not None
    model = ctx.trainer.model
    tensors = tensors_from_bytes(snap.tensors, model.state_dict())
    params = {n: tensors[n] for n, _ in model.named_parameters()}
    if param_hash(params) != point.hash:
        raise ValueError("the agreed model's tensors do not match its parameter hash")
    model.load_state_dict(tensors, strict=True)
