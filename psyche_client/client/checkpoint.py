"""Checkpoint duty: at cooldown, once every round of the epoch is applied, save the model, serve
it to joiners, and (the core's designated checkpointer) declare it, with its content hash, as the
run's checkpoint; at the end of the run, save the final model."""

from __future__ import annotations

from pathlib import Path

from psyche_client import _core
from psyche_client.checkpoint.io import save_checkpoint
from psyche_client.client.apply import apply_in_turn
from psyche_client.client.context import ClientContext, ClientDesynced
from psyche_client.client.duties import Duty
from psyche_client.client.epoch_end import serve_stragglers, settle_ended_epoch
from psyche_client.client.sharing import share_model
from psyche_client.runspec import save_spec
from psyche_client.training.hashing import param_hash


async def cooldown(ctx: ClientContext, state: _core.Coordinator, slot: int) -> None:
    await apply_in_turn(ctx, state)
    epoch = state.epoch
    if ctx.trainer is None or not ctx.duties.once(Duty.COOLDOWN, epoch, 0):
        return
    if ctx.applied.get(epoch, -1) < state.epoch_rounds - 1:
        ctx.duties.retry(Duty.COOLDOWN, epoch, 0)
        return
    directory = save_epoch(ctx, epoch)
    last = state.epoch_rounds - 1
    share_model(ctx, epoch, last, state.round(last).step)
    if slot == state.checkpointer() and not state.checkpointed:
        # The core accepts only the designated checkpointer, and only with the content hash,
        # which every loader checks (checkpoint.io.load_checkpoint, warmup).
        ref = {
            "kind": "LocalPath",
            "location": str(directory.resolve()),
            "revision": param_hash(ctx.trainer.model),
        }
        if await ctx.send("checkpoint", ctx.backend.checkpoint(ref)) is None:
            ctx.duties.retry(Duty.COOLDOWN, epoch, 0)
    ctx.event("checkpoint", epoch=epoch, path=str(directory))


def save_epoch(ctx: ClientContext, epoch: int) -> Path:
    assert ctx.trainer is not None and ctx.spec is not None
    directory = ctx.options.checkpoint_dir / f"epoch-{epoch:05d}"
    save_checkpoint(ctx.trainer.model, directory)
    save_spec(ctx.spec, directory)
    return directory


async def finish(ctx: ClientContext, state: _core.Coordinator) -> None:
    await settle_ended_epoch(ctx, state)  # the last round may still be applying, or unseen
    if ctx.trainer is not None and (ctx.behind is not None or ctx.absent):
        # Saying "finished" with a model that missed steps would hand the user a wrong model.
        ctx.event("finished", step=state.step, hash=param_hash(ctx.trainer.model), in_sync=False)
        raise ClientDesynced(
            "the run finished while this client's model was behind the run's (it sat out rounds "
            "or could not catch up), so it is not the run's final model: take the final "
            "checkpoint from another member"
        )
    if ctx.trainer is not None and ctx.duties.once(Duty.FINISH, state.epoch, 0):
        directory = ctx.options.checkpoint_dir / "final"
        save_checkpoint(ctx.trainer.model, directory)
        if ctx.spec is not None:
            save_spec(ctx.spec, directory)
        ctx.event("finished", step=state.step, hash=param_hash(ctx.trainer.model))
        await serve_stragglers(ctx)
