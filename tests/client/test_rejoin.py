"""A client that sat out rounds (dropped, or back as a joiner) must not start the next epoch
from its own, stale model: before, warmup kept it (only a client still catching up reloaded),
so a dropped client rejoined one or more steps behind and diverged from the run for good."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from psyche_client import _core
from psyche_client.client import warmup as warmup_mod
from psyche_client.client.context import ClientContext
from psyche_client.client.warmup import note_absence, warmup
from tests.client.test_duties_inprocess import Run


def test_a_client_absent_from_rounds_reloads_at_the_next_warmup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[ClientContext] = []

    async def fake_load(ctx: ClientContext, state: _core.Coordinator) -> None:
        loaded.append(ctx)

    monkeypatch.setattr(warmup_mod, "load_model", fake_load)

    async def go() -> None:
        run = Run(tmp_path)
        await run.start()  # every client has a model (trainer) and is in round 0
        absent, present = run.ctxs[0], run.ctxs[1]
        note_absence(absent, run.state())  # as the loop does for a non-healthy member
        assert absent.absent and not present.absent
        # The next epoch's warmup (same duty, a later epoch).
        run.advance_until(lambda s: s.phase == _core.Phase.WaitingForMembers, limit=2000)
        run.advance_until(lambda s: s.phase == _core.Phase.Warmup, limit=2000)
        for ctx in (absent, present):
            await warmup(ctx, ctx.backend.state())
        assert loaded == [absent], "only the client that sat out rounds reloads"
        assert not absent.absent

    asyncio.run(go())


def test_absence_outside_rounds_costs_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        run = Run(tmp_path)
        for ctx in run.ctxs:
            await ctx.backend.join()
        ctx = run.ctxs[0]
        assert run.state().phase == _core.Phase.WaitingForMembers
        note_absence(ctx, run.state())  # pending while the run waits: nothing missed
        assert not ctx.absent

    asyncio.run(go())


def test_a_client_behind_at_the_end_does_not_claim_the_final_model(tmp_path: Path) -> None:
    from psyche_client.client import ClientDesynced
    from psyche_client.client.checkpoint import finish

    async def go() -> None:
        run = Run(tmp_path)
        await run.start()
        ctx = run.ctxs[0]
        ctx.absent = True
        with pytest.raises(ClientDesynced, match="not the run's final model"):
            await finish(ctx, run.state())
        assert [e["in_sync"] for e in run.events(ctx, "finished")] == [False]
        assert not (ctx.options.checkpoint_dir / "final").exists()

    asyncio.run(go())
