"""Verifier duty: recompute the assigned target's previous-round result from the parameters the
round started from, its samples and its disclosed momentum, and report it if the claim fails.

(Named audit, not verify, so it does not read as the p2p payload check or training/recompute.)
A verifier waits (awaitably) for the target's result and its momentum disclosure until half the
round's train time; a result without a disclosure counts as failed ("momentum withheld"), and so
does a disclosure whose committed bytes do not decode (the target signed them). A disclosure
that could not be *fetched* proves nothing about the target (the verifier's own network, a
holder that lied, a timeout): the verifier reports nothing and records "unverifiable", so a
fetch failure can never eject an honest trainer.
See docs/decisions/0002-verification.md for what the recomputation proves.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import torch

from psyche_client import _core
from psyche_client.client.context import ClientContext, round_deadline
from psyche_client.client.duties import Duty
from psyche_client.client.results import Received
from psyche_client.p2p.messages import Announcement
from psyche_client.training.model import build_model
from psyche_client.training.momentum_codec import decode_momentum
from psyche_client.training.recompute import verify_result
from psyche_client.training.result import DeMoResult

log = logging.getLogger("psyche.client")


async def verify(ctx: ClientContext, state: _core.Coordinator, slot: int, h: int) -> None:
    """As a verifier of round h, start checking the assigned target's round h-1 result."""
    if h < 1 or not state.roles(h, slot) & _core.ROLE_VERIFIER:
        return
    if ctx.duties.done(Duty.VERIFY, state.epoch, h) or ctx.trainer is None:
        return
    ctx.duties.mark(Duty.VERIFY, state.epoch, h)
    target = state.verification_target(h, slot)
    span = state.assignment(h - 1, target) if target is not None else None
    if target is None or span is None:
        return
    ctx.spawn(_await_and_check(ctx, state, h, target, span))


async def _await_and_check(
    ctx: ClientContext, state: _core.Coordinator, h: int, target: int, span: tuple[int, int]
) -> None:
    step = state.round(h - 1).step
    target_key = state.client(target).node_key
    deadline = round_deadline(state, h)
    claimed = await ctx.results.wait_claimed(step, target_key, span[0], deadline - ctx.clock())
    if claimed is None:
        return  # no result to judge: the witnesses and health checks handle absence
    disclosure = await ctx.disclosures.wait(target_key, step, deadline - ctx.clock())
    await check(ctx, state.epoch, h, target, step, span, claimed, disclosure)


async def check(
    ctx: ClientContext,
    epoch: int,
    h: int,
    target: int,
    step: int,
    span: tuple[int, int],
    claimed: Received,
    disclosure: Announcement | None,
) -> None:
    """Recompute and score one claim; report the target when it fails."""
    assert ctx.trainer is not None and ctx.node is not None and ctx.spec is not None
    params = ctx.snapshots.get(step)
    if params is None:
        log.info("no parameter snapshot for step %d; cannot verify", step)
        return
    if disclosure is None:
        score, passed, detail = 0.0, False, "momentum withheld"
    else:
        try:
            momentum = await _disclosed_momentum(ctx, disclosure)
        except _Unverifiable as e:
            log.warning(
                "cannot verify slot %d at step %d: its momentum could not be fetched (%s); "
                "not reported",
                target,
                step,
                e,
            )
            why = str(e)
            ctx.event("unverifiable", epoch=epoch, height=h, target=target, step=step, why=why)
            return
        if isinstance(momentum, str):
            score, passed, detail = 0.0, False, momentum
        else:
            size = len(ctx.trainer.data)
            indices = [i % size for i in range(span[0], span[1])]
            report = await asyncio.to_thread(
                _recompute, ctx, params, indices, momentum, claimed.result
            )
            score, passed, detail = report.score, report.passed, report.detail
    ctx.event("verified", epoch=epoch, height=h, target=target, step=step, score=score, ok=passed)
    if not passed:
        log.warning("result of slot %d at step %d failed verification: %s", target, step, detail)
        sent = await ctx.send("report", ctx.backend.report(target))
        ctx.event("reported", epoch=epoch, height=h, target=target, ok=sent)


class _Unverifiable(Exception):
    """The momentum could not be obtained, through no provable fault of the target."""


async def _disclosed_momentum(
    ctx: ClientContext, disclosure: Announcement
) -> dict[str, torch.Tensor] | str:
    """The target's disclosed momentum, or (a str) why what it disclosed is evidence against it:
    bytes it committed to that do not decode, or a copy not matching its commitment that it
    alone served. Raises _Unverifiable when the fetch just failed (timeout, unreachable)."""
    assert ctx.node is not None and ctx.trainer is not None
    try:
        raw = await ctx.node.fetch(disclosure)  # checked against the signed commitment
    except Exception as e:  # noqa: BLE001 - judged here, never raised to the duty
        if disclosure.sender in ctx.node.stats.liars:
            return "momentum served by the target does not match its commitment"
        raise _Unverifiable(repr(e)[:200]) from e
    shapes = {n: tuple(t.shape) for n, t in ctx.trainer.demo.momentum.items()}
    try:
        return await asyncio.to_thread(decode_momentum, raw, shapes)
    except Exception as e:  # noqa: BLE001 - the target committed to undecodable bytes
        return f"momentum malformed ({e!r})"


def _recompute(
    ctx: ClientContext,
    params: dict[str, torch.Tensor],
    indices: list[int],
    momentum: dict[str, torch.Tensor],
    claimed: DeMoResult,
) -> Any:
    assert ctx.trainer is not None and ctx.spec is not None
    if ctx.scratch is None:
        ctx.scratch = build_model(ctx.trainer.model.config, init=False)
    with torch.no_grad():
        for name, p in ctx.scratch.named_parameters():
            p.copy_(params[name])
    batch = ctx.trainer.data.get_batch(indices)
    return verify_result(
        ctx.scratch, batch, momentum, claimed, ctx.spec.demo, micro_batch=ctx.spec.micro_batch
    )
