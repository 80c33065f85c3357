"""The client's witness and apply duties against the real core hosted in memory.

Three clients share one `_core.Coordinator` behind `MemoryCoordinator` (the TCP server's own
`CoreStateHost`, without the sockets). Trainers' results are put straight into each client's
`RoundResults` (the p2p layer is tested on its own), then the real duty functions witness them
and apply what the core accepts. Time is the core's virtual clock.
"""

from __future__ import annotations

import asyncio
import hashlib
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
from psyche_client.client.apply import apply_ready, fetch_missing
from psyche_client.client.context import ClientContext
from psyche_client.client.duties import Duty
from psyche_client.client.results import Received
from psyche_client.client.warmup import warmup
from psyche_client.client.witness import attest, witness
from psyche_client.identity import NodeKey
from psyche_client.p2p.errors import ModelUnavailable
from psyche_client.p2p.manifest import Manifest
from tests.client.memory_backend import MemoryBackend, MemoryCoordinator

T0 = 1_000_000
N = 3


class FakeTrainer:
    """Records what it is asked to apply; its model only feeds the parameter hash."""

    def __init__(self) -> None:
        self.model = torch.nn.Linear(2, 2)
        with torch.no_grad():
            for p in self.model.parameters():
                p.zero_()
        self.applied: list[list[Any]] = []

    def apply(self, results: list[Any], lr: float | None = None) -> None:
        self.applied.append(list(results))
        with torch.no_grad():
            for p in self.model.parameters():
                p.add_(len(results))


def config(**kw: int) -> _core.Config:
    base = dict(
        total_steps=8,
        batch_size_start=12,
        batch_size_end=12,
        batch_ramp_steps=0,
        rounds_per_epoch=4,
        waiting_extra_secs=1,
        warmup_secs=30,
        max_round_train_secs=30,
        round_witness_secs=2,
        witness_grace_secs=1,
        cooldown_secs=2,
        min_clients=N,
        max_clients=8,
        witnesses_per_round=N,
        verification_pct=0,
    )
    base.update(kw)
    return _core.Config(**base)


def commitment_of(step: int, key: bytes, batch: int) -> bytes:
    return hashlib.sha256(b"%d" % step + key + b"%d" % batch).digest()


class Run:
    """The shared core, and one context (with its in-memory backend) per client."""

    def __init__(self, tmp: Path, **cfg: int) -> None:
        core = _core.Coordinator(b"\x09" * 32, config(**cfg), _core.ModelRef.peers(), T0)
        core.resume(T0)
        self.hub = MemoryCoordinator(core, T0)
        self.ctxs: list[ClientContext] = []
        self.trainers: list[FakeTrainer] = []
        for i in range(N):
            key = NodeKey.generate()
            options = ClientOptions(
                data=lambda _n: None,  # type: ignore[arg-type,return-value]
                checkpoint_dir=tmp / f"c{i}",
                events_path=tmp / f"c{i}.events.jsonl",
            )
            backend = self.hub.backend(key.public)
            ctx = ClientContext(backend, key, options, clock=lambda: float(self.hub.now))
            trainer = FakeTrainer()
            ctx.trainer = trainer  # type: ignore[assignment]
            self.ctxs.append(ctx)
            self.trainers.append(trainer)

    def state(self) -> _core.Coordinator:
        return self.hub.core

    def slot(self, ctx: ClientContext) -> int:
        slot = self.state().find_client(ctx.key.public)
        assert slot is not None
        return slot

    def ctx_of_slot(self, slot: int) -> ClientContext:
        return next(c for c in self.ctxs if self.slot(c) == slot)

    def events(self, ctx: ClientContext, kind: str) -> list[dict[str, Any]]:
        path = ctx.options.events_path
        assert path is not None
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [r for r in rows if r["event"] == kind]

    def advance_until(self, done: Callable[[_core.Coordinator], bool], limit: int = 200) -> None:
        for _ in range(limit):
            if done(self.state()):
                return
            self.hub.advance(1)
        raise AssertionError(f"no transition within {limit} s: {self.state().phase}")

    async def start(self) -> None:
        """Join all, reach Warmup, run the real warmup duty, reach round 0."""
        for ctx in self.ctxs:
            await ctx.backend.join()
        self.advance_until(lambda s: s.phase == _core.Phase.Warmup)
        for ctx in self.ctxs:
            await warmup(ctx, ctx.backend.state())
        self.hub.tick()
        assert self.state().phase == _core.Phase.RoundTrain and self.state().height == 0

    def train(self, h: int, skip: set[tuple[int, int]] | None = None) -> dict[int, bytes]:
        """Every trainer of round h "trains": its result lands in every client's store (except
        the (receiver slot, trainer slot) pairs in `skip`). Returns trainer slot -> commitment."""
        state = self.state()
        step = state.round(h).step
        out = {}
        for slot, start, _end in state.assignments(h):
            key = state.client(slot).node_key
            digest = commitment_of(step, key, start)
            out[slot] = digest
            fake: Any = ("result", step, slot)
            for ctx in self.ctxs:
                if (self.slot(ctx), slot) not in (skip or set()):
                    ctx.store(step, Received(key, start, digest, fake, 100))
        for ctx in self.ctxs:
            ctx.duties.mark(Duty.TRAIN, state.epoch, h)
        return out

    async def witness_all(self) -> None:
        state = self.state()
        h = state.height
        for ctx in self.ctxs:
            await witness(ctx, ctx.backend.state(), self.slot(ctx), h)
        await asyncio.gather(*[t for ctx in self.ctxs for t in list(ctx.tasks)])

    def next_round(self) -> None:
        h = self.state().height
        rounds = (_core.Phase.RoundTrain, _core.Phase.RoundWitness)
        self.advance_until(lambda s: s.height != h or s.phase not in rounds)


def test_witness_then_apply_follow_the_core(tmp_path: Path) -> None:
    async def go() -> None:
        run = Run(tmp_path)
        await run.start()
        trained: dict[int, dict[int, bytes]] = {}
        rounds = (_core.Phase.RoundTrain, _core.Phase.RoundWitness)
        while run.state().phase in rounds:
            h = run.state().height
            for ctx in run.ctxs:
                await apply_ready(ctx, ctx.backend.state())
            data = run.state().round(h).kind == _core.RoundKind.Data
            trained[h] = run.train(h) if data else {}
            await run.witness_all()
            for ctx in run.ctxs:
                last = run.events(ctx, "witnessed")[-1]
                assert last["height"] == h and last["ok"] is True
                assert last["results"] == last["expected"] == len(trained.get(h - 1, {}))
            run.next_round()
        assert run.state().phase == _core.Phase.Cooldown
        for ctx in run.ctxs:
            await apply_ready(ctx, ctx.backend.state())
        data_rounds = [h for h, t in trained.items() if t]
        assert len(data_rounds) == 4

        # Every client applied every round, each with all its trainers' results, identically.
        first = run.trainers[0].applied
        assert len(first) == len(data_rounds)
        for h, results in zip(data_rounds, first, strict=True):
            assert sorted(r[2] for r in results) == sorted(trained[h])
        for trainer in run.trainers[1:]:
            assert trainer.applied == first, "every client applies the same results in order"
        hashes = {tuple(e["hash"] for e in run.events(c, "applied")) for c in run.ctxs}
        assert len(hashes) == 1
        applied = run.events(run.ctxs[0], "applied")
        assert [e["height"] for e in applied] == data_rounds
        assert all(e["results"] == e["candidates"] for e in applied)

    asyncio.run(go())


def test_witness_waits_for_missing_results_until_they_arrive(tmp_path: Path) -> None:
    async def go() -> None:
        run = Run(tmp_path)
        await run.start()
        late, other = run.ctxs[0], run.ctxs[1]
        # (Round 0's witnesses attest nothing; this test is about round 1's.)
        missing = run.state().assignments(0)[-1][0]
        run.train(0, skip={(run.slot(late), missing), (run.slot(other), missing)})
        await run.witness_all()
        run.next_round()
        state = run.state()
        assert state.height == 1 and run.hub.now < state.round(1).started_at + 15

        # `late` lacks one result of round 0: its witness waits (the deadline is not reached)...
        position = state.position_of(1, run.slot(late))
        pending = asyncio.ensure_future(attest(late, late.backend.state(), 1, position))
        await asyncio.sleep(0.05)
        assert not pending.done(), "a witness missing a result waits (until the deadline)"
        # ...and sends the moment the result lands.
        step0 = state.round(0).step
        key = state.client(missing).node_key
        start = state.assignment(0, missing)[0]
        late.store(step0, Received(key, start, commitment_of(step0, key, start), "r", 1))
        assert await asyncio.wait_for(pending, 2) is True
        ev = run.events(late, "witnessed")[-1]
        assert ev["height"] == 1 and ev["results"] == ev["expected"] == len(state.assignments(0))

        # Past the deadline a witness sends what it has at once.
        other.clock = lambda: float(state.round(1).started_at + 10_000)
        position = state.position_of(1, run.slot(other))
        assert await asyncio.wait_for(attest(other, other.backend.state(), 1, position), 2)
        ev = run.events(other, "witnessed")[-1]
        assert ev["results"] == ev["expected"] - 1

    asyncio.run(go())


class PullFeeds:
    """A stand-in p2p node: a pull makes the missing result arrive (as a fetch would); it
    serves no model, so a client that cannot get the result cannot catch up either."""

    current_step = None
    uploads_served = 0
    uploads_active = 0

    def __init__(self, deliver: Callable[[], None] | None) -> None:
        self.deliver = deliver
        self.pulls = 0
        self.model_fetches = 0

    def share_model(self, config: bytes, tensors: dict[str, bytes]) -> Any:
        return Manifest.build(NodeKey.generate(), "run", config, tensors)

    async def fetch_model(self, peers: list[bytes], **_kw: Any) -> Any:
        self.model_fetches += 1
        raise ModelUnavailable("no peer served a trusted model manifest")

    async def pull(self, step: int) -> int:
        self.pulls += 1
        if self.deliver is not None:
            asyncio.get_running_loop().call_later(0.01, self.deliver)
        return 0


def test_fetch_missing_awaits_a_pulled_result_or_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apply_mod, "FETCH_WAIT_S", 0.02)
    monkeypatch.setattr(apply_mod, "FETCH_BUDGET_S", 0.2)

    async def go() -> None:
        run = Run(tmp_path)
        ctx = run.ctxs[0]
        rec = Received(b"k" * 32, 4, b"c" * 32, "result", 100)
        node = PullFeeds(lambda: ctx.store(7, rec))
        ctx.node = node  # type: ignore[assignment]
        assert await fetch_missing(ctx, 7, rec.sender, 4, rec.commitment) == rec
        assert node.pulls == 1, "the pulled result is awaited, not polled for"

        ctx.node = PullFeeds(None)  # type: ignore[assignment]
        with pytest.raises(ClientDesynced):
            await fetch_missing(ctx, 7, rec.sender, 4, b"x" * 32)
        assert ctx.node.pulls >= 2, "pulled again while waiting, until the budget"  # type: ignore[attr-defined]

    asyncio.run(go())


def test_apply_fetches_an_attested_result_it_missed_instead_of_diverging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client lacking a result that the witnesses attested must not apply a smaller set."""
    monkeypatch.setattr(apply_mod, "FETCH_WAIT_S", 0.02)
    monkeypatch.setattr(apply_mod, "FETCH_BUDGET_S", 0.2)
    monkeypatch.setattr(resync_mod, "MIN_WAIT_S", 0.05)
    monkeypatch.setattr(resync_mod, "POLL_S", 0.01)

    async def go(deliver: bool) -> None:
        (tmp_path / str(deliver)).mkdir()
        run = Run(tmp_path / str(deliver))
        await run.start()
        lacking = run.ctxs[0]
        missing = next(
            slot for slot, _s, _e in run.state().assignments(0) if slot != run.slot(lacking)
        )
        run.train(0, skip={(run.slot(lacking), missing)})
        await run.witness_all()  # round 0 attests nothing
        run.next_round()
        run.train(1)
        # The lacking witness sends what it has (past its deadline); the others attest all.
        lacking.clock = lambda: float(run.hub.now + 10_000)
        await run.witness_all()
        run.next_round()
        state = run.state()
        assert state.height == 2
        assert (missing, state.assignment(0, missing)[0]) in state.attested_trainers(0)
        for ctx in run.ctxs[1:]:
            await apply_ready(ctx, ctx.backend.state())

        step0 = state.round(0).step
        key = state.client(missing).node_key
        start = state.assignment(0, missing)[0]
        rec = Received(key, start, commitment_of(step0, key, start), ("result", step0, missing), 1)
        node = PullFeeds((lambda: lacking.store(step0, rec)) if deliver else None)
        lacking.node = node  # type: ignore[assignment]
        if deliver:
            await apply_ready(lacking, lacking.backend.state())
            assert node.pulls >= 1
            assert run.trainers[0].applied == run.trainers[1].applied
            assert len(run.trainers[0].applied[0]) == len(state.assignments(0))
        else:
            # It cannot catch up either (no model is served): each reaction tries again within
            # the round's bound, and after MAX_FAILED_ATTEMPTS it stops following the run.
            for _ in range(resync_mod.MAX_FAILED_ATTEMPTS - 1):
                await apply_ready(lacking, lacking.backend.state())
                assert lacking.status.desynced and lacking.behind == 0
            with pytest.raises(ClientDesynced, match="attested"):
                await apply_ready(lacking, lacking.backend.state())
            assert run.trainers[0].applied == [], "nothing is applied without the full set"
            assert node.model_fetches >= resync_mod.MAX_FAILED_ATTEMPTS
            failed = run.events(lacking, "resync_failed")
            assert [e["attempts"] for e in failed] == [1, 2, 3]

    asyncio.run(go(True))
    asyncio.run(go(False))


def test_a_round_nobody_exchanged_is_skipped_and_not_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each trainer holds only its own result: no trainer reaches a witness majority, so the
    core refuses the round (NothingWitnessed), requeues it and counts no step; clients skip it
    and say so in their status and events."""

    async def go() -> None:
        run = Run(tmp_path)
        await run.start()
        slots = [run.slot(c) for c in run.ctxs]
        run.train(0, skip={(i, j) for i in slots for j in slots if i != j})
        await run.witness_all()  # round 0 attests nothing
        run.next_round()
        run.train(1)
        for ctx in run.ctxs:  # past the deadline: each sends what it has (its own result)
            ctx.clock = lambda: float(run.hub.now + 10_000)
        await run.witness_all()
        run.next_round()
        state = run.state()
        assert state.height == 2 and state.round(0).requeued
        assert state.steps_done == 0
        assert run.hub.host.empty_rounds == 1, "the operator's server counts and logs it"
        with pytest.raises(_core.NothingWitnessed):
            state.apply_set(0, [])
        for ctx in run.ctxs:
            await apply_ready(ctx, ctx.backend.state())
            assert ctx.status.empty_rounds == 1
            skipped = run.events(ctx, "skipped")
            assert [(e["height"], e["reason"]) for e in skipped] == [(0, "NothingWitnessed")]
        assert all(t.applied == [] for t in run.trainers)
        assert "round 0 trained nothing" in caplog.text

    asyncio.run(go())


def test_memory_backend_rejects_like_the_server(tmp_path: Path) -> None:
    async def go() -> None:
        run = Run(tmp_path)
        backend = run.ctxs[0].backend
        assert isinstance(backend, MemoryBackend)
        await backend.join()
        from psyche_client.backend.tcp import CoordinatorRejected

        with pytest.raises(CoordinatorRejected) as e:
            await backend.join()
        assert e.value.name == "DuplicateClient"
        got = await backend.wait_state(lambda s: s.find_client(backend.wallet) is not None, 1)
        assert got.find_client(backend.wallet) is not None
        with pytest.raises(TimeoutError):
            await backend.wait_state(lambda s: s.phase == _core.Phase.Finished, 0.05)

    asyncio.run(go())
