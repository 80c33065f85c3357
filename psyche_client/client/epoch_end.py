"""Between epochs: make sure this client's model holds every round the ended epoch applied.

The last rounds of an epoch are applied as it ends (round h-2 at the start of round h, the last
data round in the cooldown), and two things can leave a client without them while it believes
itself in sync:

- its apply was still under way in the background (`apply_in_turn`: waiting for a result from
  a slow peer) when the epoch ended, and
- it never reacted to the states that carried the last decisions (it reads only the newest
  state, and a cooldown of a few seconds can pass while it is busy).

Its model would then be one step short of everyone else's: saved as the run's final model, or
trained on and served to joiners in the next epoch. So at warmup and at the end of the run the
client first waits for the pending apply, then compares the rounds it applied with the ended
epoch's last applied round (the core's `last_applied_of_ended_epoch`). Missing rounds are applied
from the last state of that epoch the backend kept (`last_epoch_state`), when it has their
decisions, catching up from the peers' model if a result cannot be had (with a fresh budget of
attempts). When that fails too, the model is marked stale (`ctx.absent`): warmup then loads the
peers' model, and `finish` says the model is not the run's final one. So that catching up at the
run's end is possible at all, a client that finished in sync keeps serving for a few seconds
while peers still download from it (`serve_stragglers`).
"""

from __future__ import annotations

import asyncio
import logging

from psyche_client import _core
from psyche_client.client.apply import apply_ready
from psyche_client.client.context import ClientContext, ClientDesynced

log = logging.getLogger("psyche.client")


async def settle_ended_epoch(ctx: ClientContext, state: _core.Coordinator) -> None:
    """Finish the apply of the epoch before `state.epoch` (see the module docstring)."""
    await _await_pending_apply(ctx)
    ended = state.epoch - 1
    if ctx.trainer is None or ctx.absent or not ctx.applied:
        return
    last: int | None = None
    if ctx.behind is None:
        last = state.last_applied_of_ended_epoch() if ended >= 0 else None
        if last is None:  # no round of it was applied (or none is still known): nothing to miss
            return
        done = ctx.applied.get(ended)
        if done is None:  # it was a member before, and took no part in that epoch's rounds
            _stale(ctx, ended, f"it took no part in epoch {ended}")
            return
        if done >= last:
            return
    seen = ctx.backend.last_epoch_state()
    if seen is not None and seen.epoch == ended:
        await _apply_the_end(ctx, seen)
    if ctx.behind is not None:
        _stale(ctx, ended, f"it could not catch up ({ctx.behind_why})")
    elif last is not None and ctx.applied.get(ended, -1) < last:
        _stale(ctx, ended, f"its model lacks round {last}, the last the run applied")


async def _apply_the_end(ctx: ClientContext, seen: _core.Coordinator) -> None:
    """Apply what is left of `seen`'s epoch; when a result cannot be had, catch up from the
    peers' model, which they still serve for a moment after the run's end (`serve_stragglers`).
    A fresh budget of attempts: the ones spent during the epoch were bounded by its rounds."""
    log.info("applying the end of epoch %d after it ended", seen.epoch)
    ctx.resync_failures = 0
    while True:
        try:
            await apply_ready(ctx, seen)
        except ClientDesynced as e:
            log.warning("the end of epoch %d could not be applied: %s", seen.epoch, e)
            return
        if ctx.behind is None:  # applied (or caught up); else catch_up counts a failure
            return


LINGER_QUIET_S = 6.0
"""After the run's end, a client keeps serving until no upload started for this long..."""
LINGER_MAX_S = 20.0
"""...or for this long at most."""


async def serve_stragglers(ctx: ClientContext) -> None:
    """After the run's end: keep serving results and the final model while peers download
    them, so a member still applying the last round (a slow or lossy link) can fetch what it
    lacks, or catch up from the model, instead of ending with a model that is not the run's.
    Returns once no upload started for `LINGER_QUIET_S` and none is under way, or after
    `LINGER_MAX_S`."""
    node = ctx.node
    if node is None:
        return
    loop = asyncio.get_running_loop()
    start = quiet_since = loop.time()
    served = node.uploads_served
    log.info("run finished: serving peers that are still catching up (up to %.0f s)", LINGER_MAX_S)
    while loop.time() - start < LINGER_MAX_S:
        await asyncio.sleep(0.5)
        if node.uploads_served != served or node.uploads_active:
            served, quiet_since = node.uploads_served, loop.time()
        elif loop.time() - quiet_since >= LINGER_QUIET_S:
            return


async def _await_pending_apply(ctx: ClientContext) -> None:
    """Wait for an apply still running in the background (each of its waits is bounded)."""
    task, ctx.applying = ctx.applying, None
    if task is None:
        return
    try:
        await task
    except ClientDesynced as e:  # it could not catch up: ctx.behind stays set, the model stale
        log.warning("%s", e)


def _stale(ctx: ClientContext, epoch: int, why: str) -> None:
    ctx.absent = True
    log.warning("epoch %d ended and %s: this model is not the run's", epoch, why)
    ctx.event("missed_apply", epoch=epoch, applied=ctx.applied.get(epoch, -1), why=why)
