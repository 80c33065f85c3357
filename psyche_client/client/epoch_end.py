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
decisions. When they cannot be, the model is marked stale (`ctx.absent`): warmup then loads the
peers' model, and `finish` says the model is not the run's final one.
"""

from __future__ import annotations

import logging

from psyche_client import _core
from psyche_client.client.apply import apply_ready
from psyche_client.client.context import ClientContext, ClientDesynced

log = logging.getLogger("psyche.client")


async def settle_ended_epoch(ctx: ClientContext, state: _core.Coordinator) -> None:
    """Finish the apply of the epoch before `state.epoch` (see the module docstring)."""
    await _await_pending_apply(ctx)
    ended = state.epoch - 1
    if ctx.trainer is None or ctx.absent or ctx.behind is not None or not ctx.applied:
        return
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
        log.info("applying the end of epoch %d (round %d) after it ended", ended, last)
        try:
            await apply_ready(ctx, seen)
        except ClientDesynced as e:
            log.warning("the end of epoch %d could not be applied: %s", ended, e)
    if ctx.behind is not None or ctx.applied.get(ended, -1) < last:
        _stale(ctx, ended, f"its model lacks round {last}, the last the run applied")


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
