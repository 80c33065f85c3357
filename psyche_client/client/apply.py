"""Apply duty: fold in, in order, the results the core accepted for every final data round.

The core decides which results count and in what order (`apply_set`, from the witnesses'
filters); this client only supplies the candidates it holds and fetches any accepted result it
missed. Every client applies the same results in the same order, so parameters stay identical.
A client that cannot obtain an attested result catches up from its peers' model instead
(resync.py); after each applied round it serves its own model for such clients (sharing.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from psyche_client import _core
from psyche_client.client.context import (
    ROUND_PHASES,
    ClientContext,
    ClientDesynced,
    node_key_of,
    round_deadline,
    slot_of,
)
from psyche_client.client.duties import Duty
from psyche_client.client.results import Received
from psyche_client.client.resync import catch_up
from psyche_client.client.sharing import share_model
from psyche_client.training.hashing import param_hash
from psyche_client.training.result import DeMoResult

log = logging.getLogger("psyche.client")

GATHER_RETRY_S = 1.0
"""While a previous-round result is missing, pull announcements and HAVEs again this often."""

FETCH_WAIT_S = 0.25
FETCH_BUDGET_S = 5.0
"""An accepted result we lack at the apply: pull announcements from peers, wait up to
`FETCH_WAIT_S` for it to arrive, and try again, for `FETCH_BUDGET_S` in all, or only two waits
when this client never heard of it although `gather_previous` looked for it through the round
before. Peers stop serving a step's results when it is two steps old, which is about now, so
only a download already under way can still succeed; when there is none, catching up promptly
(resync.py) leaves time to still train this round, which the core requires of a trainer
(MissingResult)."""


async def gather_previous(ctx: ClientContext, state: _core.Coordinator, h: int) -> None:
    """In round h, collect every result of round h-1 while peers still serve it.

    Peers serve a step's results (their own and every one they fetched, announced with HAVE)
    until two steps later, while the apply of round h-1 happens at the start of round h+1: a
    result still missing then may have no holder left. So every client, not only witnesses,
    pulls the announcements and HAVEs of round h-1 from its peers while one is still missing
    after `GATHER_RETRY_S` (the node then fetches from whichever holder answers), until half
    the round's train time."""
    if h < 1 or ctx.node is None:
        return
    prev = state.round(h - 1)
    if prev.kind != _core.RoundKind.Data:
        return
    wanted = [(node_key_of(state, s), start) for s, start, _ in state.assignments(h - 1)]
    deadline = round_deadline(state, h)
    while True:
        left = deadline - ctx.clock()
        # Gossip first (most results are on their way at the round's start); pull after that.
        if left <= 0 or await ctx.results.wait_all(prev.step, wanted, min(left, GATHER_RETRY_S)):
            return
        await ctx.node.pull(prev.step)


async def apply_in_turn(ctx: ClientContext, state: _core.Coordinator) -> None:
    """`apply_ready`, without letting a wait on peers hold up the round.

    Returns once the apply is done, or as soon as it has to wait for a missing result or a
    resync (`ctx.stalled`): it then goes on in the background while this client keeps
    witnessing and verifying (a witness that waited here would miss its window and be dropped),
    and training skips rounds whose predecessors are not applied. One apply runs at a time; the
    next call collects a finished one (raising what it raised, e.g. the final ClientDesynced)
    before starting another."""
    task = ctx.applying
    if task is not None:
        if not task.done():
            return
        ctx.applying = None
        task.result()
    ctx.stalled.clear()
    task = ctx.spawn(apply_ready(ctx, state))
    stalled = asyncio.ensure_future(ctx.stalled.wait())
    try:
        await asyncio.wait({task, stalled}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stalled.cancel()
    if task.done():
        task.result()
    else:
        ctx.applying = task


async def apply_ready(ctx: ClientContext, state: _core.Coordinator) -> None:
    """Apply, in order, every data round of this epoch whose witness round is final."""
    if ctx.trainer is None:
        return
    epoch = state.epoch
    applied = ctx.applied.get(epoch)
    if applied is None:
        return
    limit = state.height - 2 if state.phase in ROUND_PHASES else state.epoch_rounds - 1
    for r in range(applied + 1, limit + 1):
        if r <= ctx.applied[epoch]:
            continue  # a resync below moved past it
        rnd = state.round(r)
        if ctx.behind is not None:
            # Still catching up (a previous attempt found no agreed model): no fetch wait.
            if await catch_up(ctx, state, ctx.behind, ctx.behind_why):
                continue
            return
        if rnd.kind != _core.RoundKind.Data:
            ctx.applied[epoch] = r
            continue
        try:
            await fetch_attested(ctx, state, r, rnd.step)
            have = ctx.results.of_step(rnd.step)
            candidates = [
                (rec.batch_start, slot, rec.commitment)
                for rec in have
                if (slot := slot_of(state, rec.sender)) is not None
            ]
            accepted = state.apply_set(r, candidates)
        except _core.RoundNotFinal:
            return
        except ClientDesynced as e:
            if await catch_up(ctx, state, r, str(e)):
                continue
            return
        except (_core.NotEnoughWitnesses, _core.NothingWitnessed) as e:
            # Its witnesses missed quorum, or attested no trainer (no result travelled): the
            # core requeued its data and does not count it as a step; nothing applies.
            ctx.applied[epoch] = r
            ctx.event("skipped", epoch=epoch, height=r, step=rnd.step, reason=e.name)
            if isinstance(e, _core.NothingWitnessed):
                ctx.status.empty_rounds += 1
                log.warning(
                    "round %d (step %d): no result reached a majority of its witnesses; "
                    "its data will be trained again (check that peers can reach each other)",
                    r,
                    rnd.step,
                )
            continue
        trainers = [trainer_slot for _b, trainer_slot, _d, _v in accepted]
        try:
            results = await accepted_results(ctx, state, rnd.step, accepted)
        except ClientDesynced as e:
            if await catch_up(ctx, state, r, str(e)):
                continue
            return
        await asyncio.to_thread(ctx.trainer.apply, results, step_lr(ctx, rnd.step))
        ctx.applied[epoch] = r
        ctx.status.applied_steps += 1
        ctx.event(
            "applied",
            epoch=epoch,
            height=r,
            step=rnd.step,
            results=len(results),
            candidates=len(candidates),
            trainers=trainers,
            hash=param_hash(ctx.trainer.model),
            loss=ctx.last_loss,
            bytes_in=ctx.status.bytes_in,
            bytes_out=ctx.status.bytes_out,
        )
        share_model(ctx, epoch, r, rnd.step)


def step_lr(ctx: ClientContext, step: int) -> float | None:
    """The scheduled learning rate of `step` (`DeMoConfig.lr_at`: a function of the step and the
    run's psyche.json alone, so trainers, appliers and verifiers all use the same value); None
    (the trainer's configured lr) before a training spec is loaded."""
    return ctx.spec.demo.lr_at(step) if ctx.spec is not None else None


async def accepted_results(
    ctx: ClientContext,
    state: _core.Coordinator,
    step: int,
    accepted: list[tuple[int, int, bytes, int]],
) -> list[DeMoResult]:
    """The results `apply_set` accepted, in its order (any not held are fetched)."""
    results = []
    for batch_start, trainer_slot, digest, _votes in accepted:
        sender = state.client(trainer_slot).node_key
        rec = ctx.results.get(step, sender, batch_start, digest)
        if rec is None:
            rec = await fetch_missing(ctx, step, sender, batch_start, digest)
        results.append(rec.result)
    return results


async def fetch_attested(
    ctx: ClientContext, state: _core.Coordinator, height: int, step: int
) -> None:
    """Make sure a result is held from every trainer the witnesses attested.

    `apply_set` judges only the candidates this client offers, so a result it never received
    would simply be left out and its model would silently drift from the others'. The core
    names the attested trainers (`attested_trainers`); any of them with no result held here is
    pulled from peers and awaited, and `ClientDesynced` is raised if it cannot be obtained
    (`apply_ready` then catches up from the peers' model: resync.py).
    Raises the core's `RoundNotFinal`/`NotEnoughWitnesses` as `apply_set` would.
    """
    for slot, batch_start in state.attested_trainers(height):
        sender = state.client(slot).node_key
        if ctx.results.claimed(step, sender, batch_start) is not None:
            continue
        ctx.stalled.set()
        # Never heard of it although `gather_previous` pulled for it through round height+1:
        # only a short last look, so the resync comes while this round still trains. Heard of
        # it (its momentum disclosure came, so its announcement did too): its download may
        # still be under way, so it gets the full budget.
        gathered = ctx.duties.done(Duty.GATHER, state.epoch, height + 1)
        heard = ctx.disclosures.find(sender, step) is not None
        budget = 2 * FETCH_WAIT_S if gathered and not heard else FETCH_BUDGET_S

        async def arrived(wait_s: float, who: bytes = sender, batch: int = batch_start) -> bool:
            return await ctx.results.wait_claimed(step, who, batch, wait_s) is not None

        if not await _pull_until(ctx, step, budget, arrived):
            raise ClientDesynced(
                f"the result of slot {slot} for step {step} (batch {batch_start}) was attested "
                "by the witnesses but could not be fetched from any peer"
            )


async def fetch_missing(
    ctx: ClientContext, step: int, sender: bytes, batch: int, digest: bytes
) -> Received:
    """An accepted result we never received: ask peers for its announcement, then await it."""
    ctx.stalled.set()

    async def arrived(wait_s: float) -> bool:
        return await ctx.results.wait_for(step, sender, batch, digest, wait_s) is not None

    await _pull_until(ctx, step, FETCH_BUDGET_S, arrived)
    rec = ctx.results.get(step, sender, batch, digest)
    if rec is None:
        raise ClientDesynced(
            f"the accepted result of step {step} batch {batch} could not be fetched from any peer"
        )
    return rec


async def _pull_until(
    ctx: ClientContext, step: int, budget_s: float, arrived: Callable[[float], Awaitable[bool]]
) -> bool:
    """Pull `step`'s announcements and HAVEs from peers and await `arrived` (a store lookup
    taking a timeout), again every `FETCH_WAIT_S`, for at most `budget_s` in all (a silent
    peer's pull is cut at the budget too). True if it arrived."""
    loop = asyncio.get_running_loop()
    stop = loop.time() + budget_s
    while True:
        if ctx.node is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.node.pull(step), max(0.01, stop - loop.time()))
        if await arrived(min(FETCH_WAIT_S, max(0.0, stop - loop.time()))):
            return True
        if loop.time() >= stop:
            return False
