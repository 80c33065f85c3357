"""Resync without restart: a client that cannot obtain an agreed result catches up from the
model its peers agree on, mid-epoch, and ends bit-identical to them; a lying peer's model is
never loaded.

Four clients share the real core in memory (`MemoryCoordinator`); results are put straight into
each client's store (as in test_duties_inprocess.py), and the model download runs the real
`p2p.model.fetch_model` (manifest majority, per-piece hashes) over `MemoryNet`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from psyche_client import _core
from psyche_client.client import ClientDesynced, ClientOptions
from psyche_client.client import apply as apply_mod
from psyche_client.client import resync as resync_mod
from psyche_client.client.apply import apply_in_turn, apply_ready, gather_previous
from psyche_client.client.context import ClientContext, round_deadline
from psyche_client.client.duties import Duty
from psyche_client.client.results import Received
from psyche_client.client.sharing import parse_point
from psyche_client.client.warmup import warmup
from psyche_client.client.witness import attest, witness
from psyche_client.identity import NodeKey
from psyche_client.training.hashing import param_hash
from tests.client.memory_backend import MemoryCoordinator
from tests.client.memory_p2p import MemoryNet, MemoryNode
from tests.client.test_duties_inprocess import config

T0 = 1_000_000
N = 4


class ContentTrainer:
    """A model whose update depends on which results are applied and in what order, so any
    missed or reordered result shows in the parameter hash."""

    def __init__(self) -> None:
        self.model = torch.nn.Linear(3, 2)
        with torch.no_grad():
            for p in self.model.parameters():
                p.fill_(0.5)

    def apply(self, results: list[Any], lr: float | None = None) -> None:
        with torch.no_grad():
            for i, (_tag, step, slot) in enumerate(results):
                for p in self.model.parameters():
                    p.mul_(0.9).add_(0.01 * (step + 1) * (slot + 1) * (i + 1))


def commitment_of(step: int, key: bytes, batch: int) -> bytes:
    return bytes([step % 256, batch % 256]) + key[:30]


class Run:
    def __init__(self, tmp: Path) -> None:
        cfg = config(min_clients=N, witnesses_per_round=N)  # the in-process duties' run
        core = _core.Coordinator(b"\x07" * 32, cfg, _core.ModelRef.peers(), T0)
        core.resume(T0)
        self.hub = MemoryCoordinator(core, T0)
        self.net = MemoryNet()
        self.ctxs: list[ClientContext] = []
        for i in range(N):
            key = NodeKey.generate()
            options = ClientOptions(
                data=lambda _n: None,  # type: ignore[arg-type,return-value]
                checkpoint_dir=tmp / f"c{i}",
                events_path=tmp / f"c{i}.events.jsonl",
            )
            ctx = ClientContext(
                self.hub.backend(key.public), key, options, clock=lambda: float(self.hub.now)
            )
            ctx.trainer = ContentTrainer()  # type: ignore[assignment]
            ctx.node = MemoryNode(self.net, key)  # type: ignore[assignment]
            self.ctxs.append(ctx)

    def state(self) -> _core.Coordinator:
        return self.hub.core

    def slot(self, ctx: ClientContext) -> int:
        slot = self.state().find_client(ctx.key.public)
        assert slot is not None
        return slot

    def node(self, ctx: ClientContext) -> MemoryNode:
        assert isinstance(ctx.node, MemoryNode)
        return ctx.node

    def events(self, ctx: ClientContext, kind: str) -> list[dict[str, Any]]:
        path = ctx.options.events_path
        assert path is not None
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [r for r in rows if r["event"] == kind]

    def advance_until(self, done: Callable[[_core.Coordinator], bool]) -> None:
        for _ in range(200):
            if done(self.state()):
                return
            self.hub.advance(1)
        raise AssertionError(f"stuck in {self.state().phase}")

    async def start(self) -> None:
        for ctx in self.ctxs:
            await ctx.backend.join()
        self.advance_until(lambda s: s.phase == _core.Phase.Warmup)
        for ctx in self.ctxs:
            await warmup(ctx, ctx.backend.state())
        self.hub.tick()
        assert self.state().phase == _core.Phase.RoundTrain and self.state().height == 0

    def train(self, h: int, skip: set[tuple[int, int]] | None = None) -> None:
        """Round h's trainers' results land in every store except the (receiver, trainer)
        slot pairs in `skip`."""
        state = self.state()
        step = state.round(h).step
        for ctx in self.ctxs:
            self.node(ctx).set_step(step)
        for slot, start, _end in state.assignments(h):
            key = state.client(slot).node_key
            fake: Any = ("r", step, slot)
            rec = Received(key, start, commitment_of(step, key, start), fake, 100)
            for ctx in self.ctxs:
                if (self.slot(ctx), slot) not in (skip or set()):
                    ctx.store(step, rec)
        for ctx in self.ctxs:
            ctx.duties.mark(Duty.TRAIN, state.epoch, h)

    async def witness_all(self) -> None:
        h = self.state().height
        for ctx in self.ctxs:
            await witness(ctx, ctx.backend.state(), self.slot(ctx), h)
        await asyncio.gather(*[t for ctx in self.ctxs for t in list(ctx.tasks)])

    def next_round(self) -> None:
        h = self.state().height
        rounds = (_core.Phase.RoundTrain, _core.Phase.RoundWitness)
        self.advance_until(lambda s: s.height != h or s.phase not in rounds)

    async def apply_all(self, ctxs: list[ClientContext] | None = None) -> None:
        for ctx in ctxs if ctxs is not None else self.ctxs:
            await apply_ready(ctx, ctx.backend.state())

    async def miss_round_zero(self, lacking: ClientContext, trainer: ClientContext) -> None:
        """`lacking` never gets `trainer`'s round-0 result; run to round 2, where the others
        apply round 0 (and then serve the model at round 0)."""
        run_skip = {(self.slot(lacking), self.slot(trainer))}
        self.train(0, skip=run_skip)
        await self.witness_all()
        self.next_round()
        self.train(1)
        lacking.clock = lambda: float(self.hub.now + 10_000)  # its witness sends what it has
        await self.witness_all()
        self.next_round()
        state = self.state()
        assert state.height == 2
        span = state.assignment(0, self.slot(trainer))
        assert span is not None and (self.slot(trainer), span[0]) in state.attested_trainers(0)
        await self.apply_all([c for c in self.ctxs if c is not lacking])

    async def finish_epoch(self) -> None:
        rounds = (_core.Phase.RoundTrain, _core.Phase.RoundWitness)
        while self.state().phase in rounds:
            h = self.state().height
            await self.apply_all()
            if self.state().round(h).kind == _core.RoundKind.Data:
                self.train(h)
            await self.witness_all()
            self.next_round()
        await self.apply_all()


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apply_mod, "FETCH_WAIT_S", 0.02)
    monkeypatch.setattr(apply_mod, "FETCH_BUDGET_S", 0.2)
    monkeypatch.setattr(resync_mod, "MIN_WAIT_S", 0.3)
    monkeypatch.setattr(resync_mod, "POLL_S", 0.02)


def params(ctx: ClientContext) -> str:
    assert ctx.trainer is not None
    return param_hash(ctx.trainer.model)


def hashes(run: Run) -> set[str]:
    return {params(c) for c in run.ctxs}


def test_client_missing_a_result_resyncs_from_peers_and_ends_identical(tmp_path: Path) -> None:
    async def go() -> None:
        run = Run(tmp_path)
        await run.start()
        lacking, trainer = run.ctxs[0], run.ctxs[1]
        run.net.block(lacking.key.public, trainer.key.public)  # cut off for the whole test
        await run.miss_round_zero(lacking, trainer)
        step0 = run.state().round(0).step
        others = {params(c) for c in run.ctxs[1:]}
        assert len(others) == 1 and params(lacking) not in others

        await apply_ready(lacking, lacking.backend.state())
        assert hashes(run) == others, "caught up to exactly the others' parameters"
        assert lacking.applied[run.state().epoch] == 0 and lacking.behind is None
        assert lacking.status.resyncs == 1 and not lacking.status.desynced
        (ev,) = run.events(lacking, "resynced")
        assert (ev["from_height"], ev["to_height"]) == (0, 0)
        assert (ev["from_step"], ev["to_step"]) == (step0, step0)
        assert ev["peers"] == 2 and ev["hash"] in others
        assert run.events(lacking, "desynced")[0]["height"] == 0
        # It serves the caught-up model as being at round 0 like the others.
        served = run.node(lacking).manifest
        assert served is not None
        point = parse_point(run.node(lacking).blobs[served.config_sha256])
        assert (point.height, point.hash) == (0, ev["hash"])

        # It follows the run by applying again: every later round, still identical.
        await run.finish_epoch()
        assert run.state().phase == _core.Phase.Cooldown
        final = [e["hash"] for e in run.events(lacking, "applied")]
        assert len(final) == 3, "rounds 1-3 applied normally after the resync"
        assert len(hashes(run)) == 1
        for ctx in run.ctxs[1:]:
            assert [e["hash"] for e in run.events(ctx, "applied")][1:] == final

    asyncio.run(go())


def test_a_lying_model_source_is_rejected(tmp_path: Path) -> None:
    """A peer serving another model is outvoted (and with no honest majority reachable nothing
    is loaded); a peer serving bytes that do not match the agreed hashes is caught."""

    async def go() -> None:
        run = Run(tmp_path)
        await run.start()
        lacking, trainer, liar, honest = run.ctxs
        run.net.block(lacking.key.public, trainer.key.public)
        await run.miss_round_zero(lacking, trainer)
        good = params(honest)
        before = params(lacking)

        # The liar serves a model of its own making, correctly signed and hashed.
        assert liar.trainer is not None
        with torch.no_grad():
            for p in liar.trainer.model.parameters():
                p.add_(1.0)
        resync_mod.share_model(liar, run.state().epoch, 0, run.state().round(0).step)
        # Only the liar and one honest peer are reachable: no model has a majority (2 of 3).
        await apply_ready(lacking, lacking.backend.state())
        assert params(lacking) == before, "nothing is loaded"
        assert lacking.status.desynced and lacking.status.resyncs == 0
        assert [e["attempts"] for e in run.events(lacking, "resync_failed")] == [1]

        # The trainer is reachable again: the honest two outvote the liar.
        run.net.unblock(lacking.key.public, trainer.key.public)
        await apply_ready(lacking, lacking.backend.state())
        assert params(lacking) == good
        assert run.events(lacking, "resynced")[0]["peers"] == 2
        assert lacking.status.resyncs == 1 and not lacking.status.desynced

        # Now the liar signs the honest content but serves other bytes: the pieces it sends
        # fail their hashes, it is marked, and the model still comes out right.
        with torch.no_grad():
            for p in liar.trainer.model.parameters():
                p.sub_(1.0)
        resync_mod.share_model(liar, run.state().epoch, 0, run.state().round(0).step)
        run.node(liar).lie_bytes = True
        run.net.first = liar.key.public  # every piece is tried from the liar first
        with torch.no_grad():
            assert lacking.trainer is not None
            for p in lacking.trainer.model.parameters():
                p.zero_()
        got = await resync_mod.resync(lacking, lacking.backend.state(), 0)
        assert got is not None and got[0].hash == good
        assert params(lacking) == good
        assert run.node(lacking).liars == {liar.key.public}

    asyncio.run(go())


def test_resync_gives_up_after_bounded_attempts(tmp_path: Path) -> None:
    """With no peer reachable, each attempt ends at its bound and the client finally stops with
    one clear error (the pre-resync behaviour, now the last resort)."""

    async def go() -> None:
        run = Run(tmp_path)
        await run.start()
        lacking, trainer = run.ctxs[0], run.ctxs[1]
        for other in run.ctxs[1:]:
            run.net.block(lacking.key.public, other.key.public)
        await run.miss_round_zero(lacking, trainer)
        for _ in range(resync_mod.MAX_FAILED_ATTEMPTS - 1):
            await apply_ready(lacking, lacking.backend.state())
        with pytest.raises(ClientDesynced, match="majority of peers"):
            await apply_ready(lacking, lacking.backend.state())

    asyncio.run(go())


def test_a_client_lacking_a_result_keeps_its_witness_duty(tmp_path: Path) -> None:
    """Missing a result must not get a client dropped before it can catch up: its witness
    sends once the others reached quorum (rather than at its own deadline, after the round
    ended), and its apply waits for peers in the background (`apply_in_turn`)."""

    async def go() -> None:
        run = Run(tmp_path)
        await run.start()
        lacking, trainer = run.ctxs[0], run.ctxs[1]
        run.net.block(lacking.key.public, trainer.key.public)
        run.train(0, skip={(run.slot(lacking), run.slot(trainer))})
        await run.witness_all()
        run.next_round()
        run.train(1)
        state = run.state()
        assert run.hub.now < round_deadline(state, 1), "the lacking witness's deadline is ahead"

        def position(ctx: ClientContext) -> int:
            pos = state.position_of(1, run.slot(ctx))
            assert pos is not None
            return pos

        mine = asyncio.ensure_future(attest(lacking, lacking.backend.state(), 1, position(lacking)))
        await asyncio.sleep(0.05)
        assert not mine.done(), "it waits for the missing result while the round is open"
        for ctx in run.ctxs[1:]:
            await attest(ctx, ctx.backend.state(), 1, position(ctx))
        assert len(run.state().round(1).submissions) >= run.state().quorum(1)
        assert await asyncio.wait_for(mine, 2) is True, "sent as soon as the others had quorum"
        ev = run.events(lacking, "witnessed")[-1]
        assert ev["results"] == ev["expected"] - 1
        run.next_round()
        assert run.state().height == 2
        await run.apply_all(run.ctxs[1:])

        # The apply that has to wait on peers returns at once and goes on in the background.
        await apply_in_turn(lacking, lacking.backend.state())
        task = lacking.applying
        assert task is not None and not task.done()
        await apply_in_turn(lacking, lacking.backend.state())  # still under way: no second one
        assert lacking.applying is task
        await asyncio.wait_for(task, 10)
        await apply_in_turn(lacking, lacking.backend.state())  # collects it
        assert lacking.applying is None and lacking.status.resyncs == 1
        assert hashes(run) == {params(run.ctxs[1])}

    asyncio.run(go())


def test_every_client_gathers_the_previous_rounds_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only witnesses: a client missing a result of round h-1 pulls announcements and HAVEs
    from peers (after giving gossip a moment) until it holds every result, then stops."""
    monkeypatch.setattr(apply_mod, "GATHER_RETRY_S", 0.02)

    async def go() -> None:
        run = Run(tmp_path)
        await run.start()
        lacking, trainer = run.ctxs[0], run.ctxs[1]
        run.train(0, skip={(run.slot(lacking), run.slot(trainer))})
        run.next_round()
        state = run.state()
        await gather_previous(run.ctxs[2], state, 1)  # holds all: returns without pulling
        assert run.node(run.ctxs[2]).pulls == 0

        task = asyncio.ensure_future(gather_previous(lacking, state, 1))
        await asyncio.sleep(0.15)
        assert not task.done() and run.node(lacking).pulls >= 2, "pulls while one is missing"
        step0 = state.round(0).step
        key, span = trainer.key.public, state.assignment(0, run.slot(trainer))
        assert span is not None
        fake: Any = ("r", step0, run.slot(trainer))
        lacking.store(step0, Received(key, span[0], commitment_of(step0, key, span[0]), fake, 1))
        await asyncio.wait_for(task, 2)  # stops the moment the last result is held

    asyncio.run(go())
