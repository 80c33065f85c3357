"""A client must not carry a model that missed the end of an epoch into the next one, or out
of the run as its final model (client/epoch_end.py).

The real core in memory (tests/client/test_duties_inprocess.py's `Run`): three clients train
and witness one epoch of four rounds; one of them does not react to the cooldown (it was busy
while it came and went), or its last apply is still waiting for a slow peer when the epoch
ends.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from psyche_client import _core
from psyche_client.client import ClientDesynced, epoch_end
from psyche_client.client import apply as apply_mod
from psyche_client.client import checkpoint as checkpoint_mod
from psyche_client.client import resync as resync_mod
from psyche_client.client import warmup as warmup_mod
from psyche_client.client.apply import apply_in_turn, apply_ready
from psyche_client.client.checkpoint import finish
from psyche_client.client.context import ClientContext
from psyche_client.client.results import Received
from psyche_client.client.warmup import warmup
from tests.client.test_duties_inprocess import PullFeeds, Run, commitment_of

ROUNDS = (_core.Phase.RoundTrain, _core.Phase.RoundWitness)


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apply_mod, "FETCH_WAIT_S", 0.02)
    monkeypatch.setattr(apply_mod, "FETCH_BUDGET_S", 0.5)
    monkeypatch.setattr(resync_mod, "MIN_WAIT_S", 0.05)
    monkeypatch.setattr(resync_mod, "POLL_S", 0.01)
    monkeypatch.setattr(epoch_end, "LINGER_QUIET_S", 0.6)
    # (FakeTrainer's model is not a CausalLM: the final save is not what is tested here.)
    monkeypatch.setattr(checkpoint_mod, "save_checkpoint", lambda *_a, **_k: None)


async def epoch_to_cooldown(run: Run, late: ClientContext, skip_last: bool = False) -> int:
    """Train and witness every round of the epoch; every client applies as it goes. Returns the
    last data round. With `skip_last`, `late` lacks one result of that round."""
    last = -1
    while run.state().phase in ROUNDS:
        state = run.state()
        h = state.height
        for ctx in run.ctxs:
            await apply_ready(ctx, ctx.backend.state())
        if state.round(h).kind == _core.RoundKind.Data:
            last = h
            skip = None
            if skip_last and h == state.epoch_rounds - 1:
                other = next(s for s, _a, _b in state.assignments(h) if s != run.slot(late))
                skip = {(run.slot(late), other)}
            run.train(h, skip=skip)
        await run.witness_all()
        run.next_round()
    assert run.state().phase == _core.Phase.Cooldown
    return last


def finished_hashes(run: Run) -> list[str]:
    return [e["hash"] for ctx in run.ctxs for e in run.events(ctx, "finished")]


def test_a_client_that_never_saw_the_cooldown_applies_the_last_round_at_the_end(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        run = Run(tmp_path, total_steps=4)
        await run.start()
        late = run.ctxs[0]
        last = await epoch_to_cooldown(run, late)
        for ctx in run.ctxs[1:]:  # `late` does not react to the cooldown
            await apply_ready(ctx, ctx.backend.state())
        run.advance_until(lambda s: s.phase == _core.Phase.Finished)
        assert run.state().last_applied_of_ended_epoch() == last
        for ctx in run.ctxs:
            await finish(ctx, ctx.backend.state())
        assert len(run.trainers[0].applied) == last + 1
        assert run.trainers[0].applied == run.trainers[1].applied
        hashes = finished_hashes(run)
        assert len(hashes) == 3 and len(set(hashes)) == 1, hashes

    asyncio.run(go())


def test_the_end_of_the_run_waits_for_an_apply_still_under_way(tmp_path: Path) -> None:
    async def go() -> None:
        run = Run(tmp_path, total_steps=4)
        await run.start()
        late = run.ctxs[0]
        await epoch_to_cooldown(run, late, skip_last=True)
        state = run.state()
        h = state.epoch_rounds - 1
        step = state.round(h).step
        other = next(s for s, _a, _b in state.assignments(h) if s != run.slot(late))
        key, start = state.client(other).node_key, state.assignment(h, other)[0]
        rec = Received(key, start, commitment_of(step, key, start), ("result", step, other), 1)

        def deliver() -> None:  # the slow peer's result lands a moment later
            asyncio.get_running_loop().call_later(0.2, late.store, step, rec)

        late.node = PullFeeds(deliver)  # type: ignore[assignment]
        for ctx in run.ctxs:
            await apply_in_turn(ctx, ctx.backend.state())
        assert late.applying is not None and not late.applying.done(), "its apply waits"
        run.advance_until(lambda s: s.phase == _core.Phase.Finished)
        for ctx in run.ctxs:
            await finish(ctx, ctx.backend.state())
        assert run.trainers[0].applied == run.trainers[1].applied
        hashes = finished_hashes(run)
        assert len(hashes) == 3 and len(set(hashes)) == 1, hashes

    asyncio.run(go())


def test_a_model_that_cannot_get_the_last_round_is_not_called_the_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the last decisions (the backend kept no state of that epoch's end), the model is
    stale: the run's end says so (and exits with ClientDesynced), and the next epoch's warmup
    reloads the peers' model instead of training on it."""
    reloaded: list[ClientContext] = []

    async def load_model(ctx: ClientContext, state: Any) -> None:
        reloaded.append(ctx)

    monkeypatch.setattr(warmup_mod, "load_model", load_model)

    async def go(total_steps: int) -> None:
        run = Run(tmp_path / str(total_steps), total_steps=total_steps)
        await run.start()
        late = run.ctxs[0]
        await epoch_to_cooldown(run, late)
        for ctx in run.ctxs[1:]:
            await apply_ready(ctx, ctx.backend.state())
        ended = (_core.Phase.Finished, _core.Phase.Warmup)
        run.advance_until(lambda s: s.phase in ended)
        run.hub.epoch_state = None  # as after a reconnect: that epoch's last state is gone
        if total_steps == 4:
            with pytest.raises(ClientDesynced, match="behind"):
                await finish(late, late.backend.state())
            assert [e.get("in_sync") for e in run.events(late, "finished")] == [False]
        else:
            for ctx in run.ctxs:
                await warmup(ctx, ctx.backend.state())
            assert reloaded == [late], "only the client that missed the last round reloads"
        missed = run.events(late, "missed_apply")
        assert [(e["epoch"], e["applied"]) for e in missed] == [(0, 2)]

    (tmp_path / "4").mkdir()
    (tmp_path / "8").mkdir()
    asyncio.run(go(4))
    reloaded.clear()
    asyncio.run(go(8))


def test_a_finished_client_serves_until_its_peers_stop_downloading(tmp_path: Path) -> None:
    """`serve_stragglers`: it stays while uploads go on, and leaves once they stopped."""

    class Uploading:
        uploads_served = 0
        uploads_active = 0

    async def go() -> None:
        ctx = Run(tmp_path).ctxs[0]
        node = Uploading()
        ctx.node = node  # type: ignore[assignment]
        loop = asyncio.get_running_loop()

        async def downloads(n: int) -> None:  # a straggler fetching, one piece every 0.4 s
            for _ in range(n):
                await asyncio.sleep(0.4)
                node.uploads_served += 1

        t0 = loop.time()
        await asyncio.gather(epoch_end.serve_stragglers(ctx), downloads(5))
        busy = loop.time() - t0
        assert busy >= 2.0 + 0.6, "it served the whole download, then the quiet time"
        t0 = loop.time()
        await epoch_end.serve_stragglers(ctx)
        assert loop.time() - t0 < 1.5, "nobody downloading: it leaves after the quiet time"

    asyncio.run(go())
