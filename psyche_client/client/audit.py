"""Verifier duty: recompute the assigned target's previous-round result from the parameters the
round started from, its samples and its disclosed momentum, and report it if the claim fails.

(Named audit, not verify, so it does not read as the p2p payload check or training/recompute.)
A verifier waits (awaitably) for the target's result and its momentum disclosure until half the
round's train time; a result without a disclosure counts as failed ("momentum withheld"), and so
does a disclosure whose committed bytes do not decode (the target signed them). A disclosure
that could not be *fetched* proves nothing about the target (the verifier's own network, a
holder that lied, a timeout): the verifier reports nothing and records "unverifiable", so a
fetch failure can never eject an honest trainer.

The momentum chain (issue 14): a disclosure that reproduces the result proves nothing about where
the momentum came from: a trainer could craft it to yield a chosen result. So when the target also
trained in round h-2 (its previous step), the verifier checks that link too: it fetches the
target's disclosure of h-2, recomputes that step's gradient from the h-2 snapshot and the
target's h-2 samples, and requires the h-1 disclosure to equal the momentum that step leaves
behind (`momentum_codec.successor`: exact on the same hardware, `LINK_RTOL` otherwise), and the
h-2 result to follow from the h-2 disclosure as well. A liar now has to break a link somewhere to
inject a crafted momentum, and every verified link catches it. No link is checked at an epoch's
first two rounds, for a target that did not train in h-2 (it was a verifier, joined, or was
behind), or when the verifier lacks the h-2 data (no snapshot, no disclosure announcement seen):
those are `unlinked` events, never reports. A previous disclosure that cannot be fetched is
`unverifiable`, as for the current one.
See docs/decisions/0002-verification.md for what the recomputation proves.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import torch

from psyche_client import _core
from psyche_client.client.context import ClientContext, round_deadline
from psyche_client.client.duties import Duty
from psyche_client.client.results import Received
from psyche_client.p2p.messages import Announcement
from psyche_client.training.model import build_model
from psyche_client.training.momentum_codec import decode_momentum, link_mismatches, successor
from psyche_client.training.optimizer import compress_step
from psyche_client.training.recompute import PASS_THRESHOLD, score_results, verify_result
from psyche_client.training.result import DeMoResult
from psyche_client.training.trainer import compute_gradients

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
    link = previous_link(ctx, state, h, target)
    await check(ctx, state.epoch, h, target, step, span, claimed, disclosure, link)


@dataclass(frozen=True)
class Link:
    """The target's previous step (round h-2), from which its h-1 momentum must follow."""

    step: int
    span: tuple[int, int]
    claimed: Received
    """Its result of that step (what it sent, so what its momentum no longer holds)."""
    disclosure: Announcement | None
    params: dict[str, torch.Tensor] | None
    """The parameters that step trained from (this client's snapshot), if still held."""


def previous_link(ctx: ClientContext, state: _core.Coordinator, h: int, target: int) -> Link | None:
    """The link to check for the target's round h-1 result, or None when it has none: round h-2
    is not in this epoch, or the target had no batch in it or sent no result for it."""
    if h < 2:
        return None
    try:
        prev = state.round(h - 2)
        span = state.assignment(h - 2, target)
        key = state.client(target).node_key
    except Exception:  # noqa: BLE001 - the state no longer holds that round
        return None
    if span is None:
        return None
    claimed = ctx.results.claimed(prev.step, key, span[0])
    if claimed is None:
        return None
    disclosure = ctx.disclosures.find(key, prev.step)
    return Link(prev.step, span, claimed, disclosure, ctx.snapshots.get(prev.step))


async def check(
    ctx: ClientContext,
    epoch: int,
    h: int,
    target: int,
    step: int,
    span: tuple[int, int],
    claimed: Received,
    disclosure: Announcement | None,
    link: Link | None = None,
) -> None:
    """Recompute and score one claim, and the momentum link to the target's previous step when
    `link` is given; report the target when either fails."""
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
                _recompute, ctx, params, indices, momentum, claimed.result, step
            )
            score, passed, detail = report.score, report.passed, report.detail
            if passed:
                verdict = await _check_link(ctx, epoch, h, target, link, momentum)
                if verdict is not None:
                    passed, detail = False, verdict
    ctx.event("verified", epoch=epoch, height=h, target=target, step=step, score=score, ok=passed)
    if not passed:
        log.warning("result of slot %d at step %d failed verification: %s", target, step, detail)
        sent = await ctx.send("report", ctx.backend.report(target))
        ctx.event("reported", epoch=epoch, height=h, target=target, ok=sent)


async def _check_link(
    ctx: ClientContext,
    epoch: int,
    h: int,
    target: int,
    link: Link | None,
    momentum: dict[str, torch.Tensor],
) -> str | None:
    """Why the target's h-1 momentum does not follow from its h-2 step (None: it does, or the
    link cannot be checked, which is recorded as an `unlinked` or `unverifiable` event)."""
    assert ctx.trainer is not None
    why: str | None = None
    if link is None:
        why = "the target has no result of round h-2 in this epoch"
    elif link.params is None:
        why = f"no parameter snapshot for step {link.step}"
    elif link.disclosure is None:
        why = f"no momentum announcement seen for step {link.step}"
    if why is not None or link is None or link.disclosure is None or link.params is None:
        ctx.event("unlinked", epoch=epoch, height=h, target=target, why=why)
        return None
    try:
        previous = await _disclosed_momentum(ctx, link.disclosure)
    except _Unverifiable as e:
        log.warning("cannot check slot %d's momentum link from step %d: %s", target, link.step, e)
        ctx.event("unverifiable", epoch=epoch, height=h, target=target, step=link.step, why=str(e))
        return None
    if isinstance(previous, str):
        return f"previous {previous}"
    size = len(ctx.trainer.data)
    indices = [i % size for i in range(link.span[0], link.span[1])]
    prev_score, bad, total = await asyncio.to_thread(
        _recompute_link, ctx, link, indices, previous, momentum
    )
    ok = prev_score >= PASS_THRESHOLD and bad == 0
    ctx.event(
        "linked",
        epoch=epoch,
        height=h,
        target=target,
        step=link.step,
        score=prev_score,
        mismatched=bad,
        of=total,
        ok=ok,
    )
    if prev_score < PASS_THRESHOLD:
        return f"its step-{link.step} result does not follow from its disclosure ({prev_score:.4f})"
    if bad:
        return (
            f"its momentum does not follow from its step-{link.step} momentum, gradient and result "
            f"({bad:,} of {total:,} coefficients differ)"
        )
    return None


def _recompute_link(
    ctx: ClientContext,
    link: Link,
    indices: list[int],
    previous: dict[str, torch.Tensor],
    momentum: dict[str, torch.Tensor],
) -> tuple[float, int, int]:
    """(score of the previous result against its own disclosure, mismatched coefficients of the
    current disclosure against the successor, coefficients compared)."""
    assert ctx.trainer is not None and ctx.spec is not None and link.params is not None
    model = _load_scratch(ctx, link.params)
    batch = ctx.trainer.data.get_batch(indices)
    cfg = ctx.spec.demo
    grads, _ = compute_gradients(model, batch, ctx.spec.micro_batch)
    lr = cfg.lr_at(link.step)  # the lr that step's trainer weighted its momentum with
    ref = compress_step(previous, grads, cfg, update_momentum=False, lr=lr)
    prev_score = score_results(link.claimed.result, ref)
    after = successor(previous, grads, cfg, link.claimed.result, lr)
    bad, total = link_mismatches(after, momentum)
    return prev_score, bad, total


def _load_scratch(ctx: ClientContext, params: dict[str, torch.Tensor]) -> Any:
    assert ctx.trainer is not None
    if ctx.scratch is None:
        ctx.scratch = build_model(ctx.trainer.model.config, init=False)
    with torch.no_grad():
        for name, p in ctx.scratch.named_parameters():
            p.copy_(params[name])
    return ctx.scratch


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
    step: int,
) -> Any:
    assert ctx.trainer is not None and ctx.spec is not None
    model = _load_scratch(ctx, params)
    batch = ctx.trainer.data.get_batch(indices)
    return verify_result(
        model,
        batch,
        momentum,
        claimed,
        ctx.spec.demo,
        micro_batch=ctx.spec.micro_batch,
        lr=ctx.spec.demo.lr_at(step),
    )
