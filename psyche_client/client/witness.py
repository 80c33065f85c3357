"""Witness duty: attest which results of the previous round this client holds; and the health
checks that act on what the witnesses of a final round attested.

A witness of round h waits (without polling: `RoundResults.wait_all`) until it holds a result
for every assignment of round h-1, or until half the round's train time has passed, then sends
the filters the core builds from the (commitment, trainer slot) pairs it holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from psyche_client import _core
from psyche_client.client.context import ROUND_PHASES, ClientContext, node_key_of, round_deadline
from psyche_client.client.duties import Duty

log = logging.getLogger("psyche.client")


async def witness(ctx: ClientContext, state: _core.Coordinator, slot: int, h: int) -> None:
    """As a witness of round h, start attesting the results of round h-1 (once per round)."""
    if not state.roles(h, slot) & _core.ROLE_WITNESS:
        return
    epoch = state.epoch
    if ctx.duties.done(Duty.WITNESS, epoch, h):
        return
    if state.round(h).kind == _core.RoundKind.Data and not ctx.duties.done(Duty.TRAIN, epoch, h):
        return
    position = state.position_of(h, slot)
    if position is None:
        return
    ctx.duties.mark(Duty.WITNESS, epoch, h)
    ctx.spawn(attest(ctx, state, h, position))


async def attest(
    ctx: ClientContext, state: _core.Coordinator, h: int, position: int
) -> bool | None:
    """Wait for round h-1's results (or the deadline) and send this witness's filters; returns
    what `send` returned (None: may not have arrived, so the next reaction sends again)."""
    epoch = state.epoch
    expected = state.assignments(h - 1) if h >= 1 else []
    prev_step = state.round(h - 1).step if h >= 1 else -1
    assigned = {(node_key_of(state, s), start): s for s, start, _ in expected}
    wait_s = round_deadline(state, h) - ctx.clock()
    if not ctx.results.holds_all(prev_step, assigned) and wait_s > 0:
        if ctx.node is not None and ctx.duties.once(Duty.PULL, epoch, h):
            ctx.spawn(ctx.node.pull(prev_step))
        await _results_or_quorum(ctx, state, h, ctx.results.wait_all(prev_step, assigned, wait_s))
    commitments, slots = ctx.results.witness_inputs(prev_step, assigned)
    results, trainers = state.witness_filters(h, position, commitments, slots)
    loss = int((ctx.last_loss or 0.0) * 1000)
    ok = await ctx.send(
        "witness",
        ctx.backend.witness(
            position,
            results,
            trainers,
            max(0, min(loss, 2**32 - 1)),
            int(ctx.tokens_per_s),
            0,
        ),
    )
    if ok is None:
        ctx.duties.retry(Duty.WITNESS, epoch, h)
    ctx.event(
        "witnessed", epoch=epoch, height=h, results=len(commitments), expected=len(expected), ok=ok
    )
    return ok


async def _results_or_quorum(
    ctx: ClientContext, state: _core.Coordinator, h: int, held: Awaitable[bool]
) -> None:
    """Await `held` (every result in, or the deadline), but no longer once the other witnesses
    of round h reached quorum: the round then ends after its short grace, and a witness still
    waiting for a result would miss its window and be dropped (MissedWitness)."""
    epoch = state.epoch

    def others_reached_quorum(s: _core.Coordinator) -> bool:
        if s.epoch != epoch or s.height != h or s.phase not in ROUND_PHASES:
            return True
        return len(s.round(h).submissions) >= s.quorum(h)

    waits: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(held),
        asyncio.ensure_future(ctx.backend.wait_state(others_reached_quorum, None)),
    ]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def health_checks(ctx: ClientContext, state: _core.Coordinator) -> None:
    """Ask the coordinator to drop members the witnesses of a final round found missing."""
    r = state.height - 2
    if r < 0 or state.round(r).kind != _core.RoundKind.Data:
        return
    if not ctx.duties.once(Duty.HEALTH, state.epoch, r):
        return
    for target in state.round(r).members:
        try:
            verdict = state.health_verdict(r, target)
        except _core.CoordinatorError:
            return
        if verdict is not None:
            sent = await ctx.send("health_check", ctx.backend.health_check(target, r))
            ctx.event("health_check", height=r, target=target, reason=verdict.name, ok=sent)
