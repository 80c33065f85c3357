"""Training duty: train the assigned batch of a Data round, then announce the result and the
momentum it was trained from (two message kinds; verifiers need both)."""

from __future__ import annotations

import asyncio
import logging

from psyche_client import _core
from psyche_client.client.apply import step_lr
from psyche_client.client.context import ClientContext
from psyche_client.client.peers import publish_momentum
from psyche_client.client.results import Received
from psyche_client.training.momentum_codec import encode_momentum

log = logging.getLogger("psyche.client")


def snapshot(ctx: ClientContext, step: int) -> None:
    """Keep the parameters this round trains from, for verifying its results next round."""
    assert ctx.trainer is not None
    ctx.snapshots[step] = {n: p.detach().clone() for n, p in ctx.trainer.model.named_parameters()}
    for old in [s for s in ctx.snapshots if s < step - 2]:
        del ctx.snapshots[old]


async def train(ctx: ClientContext, state: _core.Coordinator, slot: int, h: int) -> None:
    span = state.assignment(h, slot)
    if span is None or ctx.trainer is None or ctx.node is None:
        return
    applied = ctx.applied.get(state.epoch, -1)
    if h >= 2 and applied < h - 2:
        log.warning("round %d: results of round %d not applied; skipping training", h, h - 2)
        return
    rnd = state.round(h)
    size = len(ctx.trainer.data)
    indices = [i % size for i in range(span[0], span[1])]
    momentum = encode_momentum(ctx.trainer.demo.momentum)
    lr = step_lr(ctx, rnd.step)  # the same on every client (training.schedule)
    out = await asyncio.to_thread(ctx.trainer.train_step, indices, lr)
    payload = out.result.to_bytes()
    ctx.last_loss, ctx.tokens_per_s = out.loss, out.tokens_per_s
    ctx.status.bytes_out += len(payload)
    ann = await ctx.node.publish(rnd.step, span[0], payload)
    await publish_momentum(ctx, rnd.step, span[0], momentum)
    ctx.store(rnd.step, Received(ctx.key.public, span[0], ann.commitment, out.result, len(payload)))
    ctx.event(
        "trained",
        epoch=state.epoch,
        height=h,
        step=rnd.step,
        batch=span[0],
        samples=len(indices),
        loss=out.loss,
        bytes=len(payload),
        seconds=out.seconds,
        tokens_per_s=out.tokens_per_s,
        bytes_in=ctx.status.bytes_in,
        bytes_out=ctx.status.bytes_out,
    )
