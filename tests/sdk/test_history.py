"""Status snapshots and the rolling history, over the real core driven in memory (no sockets).

Witnesses report a loss and tokens/s with their submissions; the history must turn the rounds
the state's ring holds into one record per step, keep them after they leave the ring, and mark
a round nobody attested (requeued) instead of counting it as a step.
"""

from __future__ import annotations

import hashlib

from psyche_client import _core
from psyche_client.sdk.history import History
from psyche_client.sdk.status import status_of

T0 = 1_000_000


def key(i: int, tag: bytes) -> bytes:
    return (i + 1).to_bytes(4, "little") + tag * 28


def rand(i: int) -> bytes:
    return hashlib.sha256(f"r{i}".encode()).digest()


def commitment(epoch: int, height: int, slot: int) -> bytes:
    return hashlib.sha256(f"c-{epoch}-{height}-{slot}".encode()).digest()


def new_run(clients: int) -> _core.Coordinator:
    config = _core.Config(
        total_steps=12,
        batch_size_start=8,
        batch_size_end=8,
        batch_ramp_steps=0,
        rounds_per_epoch=6,
        waiting_extra_secs=1,
        warmup_secs=10,
        max_round_train_secs=30,
        round_witness_secs=5,
        witness_grace_secs=2,
        cooldown_secs=5,
        min_clients=2,
        max_clients=8,
        witnesses_per_round=3,
        verification_pct=0,
    )
    c = _core.Coordinator(b"hist".ljust(32, b"\0"), config, _core.ModelRef.peers(), T0)
    c.resume(T0)
    for i in range(clients):
        c.join(key(i, b"\xaa"), key(i, b"\xbb"), T0)
    return c


def tick_until_change(c: _core.Coordinator, now: int) -> int:
    start = (c.phase, c.height)
    for t in range(now, now + 1000):
        c.tick(t, rand(t))
        if (c.phase, c.height) != start:
            return t
    raise AssertionError("no transition")


def start_epoch(c: _core.Coordinator, now: int) -> int:
    now = tick_until_change(c, now)
    assert c.phase == _core.Phase.Warmup
    for cl in c.clients():
        c.warmup_witness(cl.wallet, now)
    c.tick(now, rand(now))
    assert c.phase == _core.Phase.RoundTrain
    return now


def play_round(c: _core.Coordinator, now: int, loss_milli: int, honest: bool = True) -> int:
    """Every witness of the current round submits; `honest=False` attests nothing."""
    h = c.height
    slots = [s for s, _lo, _hi in c.assignments(h - 1)] if h > 0 else []
    coms = [commitment(c.epoch, h - 1, s) for s in slots]
    for pos, (slot, roles) in enumerate(c.committee(h)):
        if not roles & _core.ROLE_WITNESS:
            continue
        if honest:
            results, trainers = c.witness_filters(h, pos, coms, slots)
        else:
            results, trainers = c.witness_filters(h, pos, [], [])
        c.witness(
            c.client(slot).wallet,
            pos,
            results,
            trainers,
            now,
            loss_milli=loss_milli + pos,
            tokens_per_sec=1000,
        )
    while c.phase in (_core.Phase.RoundTrain, _core.Phase.RoundWitness) and c.height == h:
        now = tick_until_change(c, now)
    return now


def test_status_snapshot_reads_the_state() -> None:
    c = new_run(3)
    s = status_of(c)
    assert s.run == "hist"
    assert s.phase == "WaitingForMembers"
    assert s.clients["Healthy"] + s.clients["Pending"] == 3
    assert s.total_steps == 12 and s.steps_done == 0 and s.progress == 0.0
    assert s.config["rounds_per_epoch"] == 6
    assert s.model.kind == "Peers"
    assert s.loss is None
    assert s == status_of(c), "equal states give equal snapshots"
    assert s.as_dict()["clients"] == s.clients


def test_history_records_every_step_past_the_ring() -> None:
    c = new_run(3)
    history = History()
    now = start_epoch(c, T0)
    losses = [5000, 4000, 3000, 2500, 2000, 1500]
    for loss in losses:
        history.observe(c)
        now = play_round(c, now, loss)
        history.observe(c)
    assert _core.ROUND_RING < len(losses), "the test must outlive the core's ring"
    records = history.records()
    assert [r.step for r in records] == list(range(len(records)))
    assert len(records) >= len(losses) - 1
    by_step = history.losses()
    # Three witnesses reported loss_milli + position (0, 1, 2): the mean is loss + 1.
    for step, loss in zip(sorted(by_step), losses, strict=False):
        assert abs(by_step[step] - (loss + 1) / 1000) < 1e-9
    first = records[0]
    assert first.witnesses == 3 and first.trainers == 3 and first.members == 3
    assert first.tokens_per_s_per_client == 1000 and first.tokens_per_s == 3000
    assert history.clients()[0] == 3
    latest = history.latest()
    assert latest is not None and latest.step == max(by_step)
    assert status_of(c, latest).loss == latest.loss


def test_a_round_nobody_attested_is_marked_not_counted() -> None:
    c = new_run(3)
    history = History()
    now = start_epoch(c, T0)
    now = play_round(c, now, 5000)
    history.observe(c)
    now = play_round(c, now, 4000, honest=False)  # attests nothing of round 0
    history.observe(c)
    now = play_round(c, now, 3000)
    history.observe(c)
    requeued = [r for r in history.records(include_requeued=True) if r.requeued]
    assert requeued, "the round whose results nobody attested is kept, marked requeued"
    assert all(r.step not in history.losses() for r in requeued)
    assert len(history.to_rows()) == len(history.records(include_requeued=True))


def test_history_is_bounded() -> None:
    c = new_run(3)
    history = History(max_steps=2)
    now = start_epoch(c, T0)
    for loss in (5000, 4000, 3000, 2000):
        now = play_round(c, now, loss)
        history.observe(c)
    assert len(history.records(include_requeued=True)) == 2
    assert history.copy().records() == history.records()
