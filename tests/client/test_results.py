"""RoundResults and Disclosures: stores that wake waiting duties instead of being polled; the
duty log; the commitments of the two payload kinds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from psyche_client.client.duties import Duty, DutyLog
from psyche_client.client.peers import payload_commitment
from psyche_client.client.results import Disclosures, Received, RoundResults
from psyche_client.p2p import Announcement, NodeKey
from psyche_client.p2p.messages import KIND_ANNOUNCE, KIND_MOMENTUM
from psyche_client.training.result import commitment

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def rec(sender: bytes, batch: int, digest: bytes = b"d" * 32) -> Received:
    fake: Any = f"result-{sender[:1].decode()}-{batch}"
    return Received(sender, batch, digest, fake, 10)


def test_lookups_and_pruning() -> None:
    store = RoundResults(keep_steps=2)
    store.add(5, rec(A, 0))
    store.add(5, rec(B, 4, b"e" * 32))
    assert store.get(5, A, 0, b"d" * 32) == rec(A, 0)
    assert store.get(5, A, 0, b"x" * 32) is None
    assert store.claimed(5, B, 4) == rec(B, 4, b"e" * 32)
    assert store.claimed(5, B, 0) is None
    assert store.holds_all(5, [(A, 0), (B, 4)]) and not store.holds_all(5, [(C, 8)])
    assert store.holds_all(6, [])  # nothing wanted: complete
    store.add(8, rec(C, 0))
    assert store.of_step(5) == [], "steps more than keep_steps behind the newest are dropped"
    assert store.of_step(8) == [rec(C, 0)]


def test_witness_inputs_keep_only_assigned_batches() -> None:
    store = RoundResults()
    store.add(3, rec(A, 0, A))
    store.add(3, rec(B, 4, B))
    store.add(3, rec(C, 9, C))  # not an assignment of the round: left out
    commitments, slots = store.witness_inputs(3, {(A, 0): 2, (B, 4): 0, (C, 8): 1})
    assert sorted(zip(commitments, slots, strict=True)) == [(A, 2), (B, 0)]


def test_waits_wake_on_arrival_and_time_out_without_polling() -> None:
    async def go() -> None:
        store = RoundResults()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, store.add, 1, rec(A, 0))
        t0 = time.monotonic()
        got = await store.wait_for(1, A, 0, b"d" * 32, timeout_s=5)
        assert got == rec(A, 0) and time.monotonic() - t0 < 1
        assert await store.wait_for(1, B, 0, b"d" * 32, timeout_s=0.05) is None
        assert await store.wait_for(1, A, 0, b"d" * 32, timeout_s=0) == rec(A, 0)

        waiting = asyncio.ensure_future(store.wait_all(2, [(A, 0), (B, 4)], timeout_s=5))
        store.add(2, rec(A, 0))
        await asyncio.sleep(0.01)
        assert not waiting.done(), "one of two results is not enough"
        store.add(2, rec(B, 4))
        assert await asyncio.wait_for(waiting, 1) is True
        assert await store.wait_all(2, [(C, 0)], timeout_s=0.02) is False
        assert await store.wait_claimed(2, B, 4, timeout_s=0) == rec(B, 4)
        assert store._store._waiters._waiting == [], "no waiter is left behind"

    asyncio.run(go())


def test_disclosures_are_found_by_sender_and_step() -> None:
    async def go() -> None:
        key = NodeKey.generate()
        ann = Announcement("run", 7, 4, key.node_id, b"m" * 32, 10, kind=KIND_MOMENTUM).signed(key)
        store = Disclosures()
        asyncio.get_running_loop().call_later(0.02, store.add, ann)
        assert await store.wait(key.node_id, 7, timeout_s=5) == ann
        assert store.find(key.node_id, 6) is None
        assert await store.wait(A, 7, timeout_s=0.01) is None

    asyncio.run(go())


def test_duty_log() -> None:
    log = DutyLog()
    assert log.once(Duty.TRAIN, 0, 3) and not log.once(Duty.TRAIN, 0, 3)
    assert log.done(Duty.TRAIN, 0, 3) and not log.done(Duty.TRAIN, 0, 4)
    assert not log.done(Duty.WITNESS, 0, 3)
    log.retry(Duty.TRAIN, 0, 3)
    assert log.once(Duty.TRAIN, 0, 3)
    log.mark(Duty.VERIFY, 1, 1)
    assert log.done(Duty.VERIFY, 1, 1)
    assert log.warn_once("x") and not log.warn_once("x")


def test_result_and_momentum_commitments() -> None:
    run_id, payload = b"r" * 32, b"payload"
    result = payload_commitment(run_id, KIND_ANNOUNCE, 3, 8, payload)
    assert result == commitment(run_id, 3, 8, payload), "results keep the documented scheme"
    momentum = payload_commitment(run_id, KIND_MOMENTUM, 3, 8, payload)
    assert momentum != result, "the same bytes commit differently as a disclosure"
