"""Peers in separate processes exchange per-step results and end with every payload, verified."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest


def expected(seed: int, size: int) -> str:
    return hashlib.sha256(random.Random(seed).randbytes(size)).hexdigest()


@pytest.mark.parametrize(
    ("n", "steps", "size"),
    [(4, 3, 2 << 20), (8, 2, 1 << 20)],
    ids=["4-peers", "8-peers"],
)
def test_peers_exchange_results_for_several_steps(
    swarm_factory: Any, n: int, steps: int, size: int
) -> None:
    swarm = swarm_factory(n)
    # The last peer has no fast path, so its results travel over libp2p streams (the fallback).
    peers = swarm.spawn_many([()] * (n - 1) + [("--no-fast",)])
    for i, p in enumerate(peers[1:], start=1):
        p.call("connect", addr=peers[0].p2p_addr)
        if i > 1:
            p.call("connect", addr=peers[i - 1].p2p_addr)

    for step in range(1, steps + 1):
        for p in peers:
            p.call("step", step=step)
        for i, p in enumerate(peers):
            p.call("publish", step=step, batch=i, size=size, seed=step * 100 + i)
        waits = [
            (p, p.send("collect", step=step, count=n - 1, timeout=60, pull_after=5)) for p in peers
        ]
        for i, (p, cid) in enumerate(waits):
            reply = p.wait(cid, timeout=150)
            assert reply["ok"], reply
            got = {(r["sender"], r["batch"]): r for r in reply["results"]}
            assert len(got) == n - 1
            for j, other in enumerate(peers):
                if j == i:
                    continue
                r = got[(other.node_id, j)]
                assert r["fetched"], r
                assert r["sha256"] == expected(step * 100 + j, size)

    stats = [p.call("stats") for p in peers]
    assert all(s["fetched"] == steps * (n - 1) and s["fetch_failed"] == 0 for s in stats), stats
    # The last peer's results exist only behind libp2p until someone fetched them (then HAVEs
    # offer the fast path too), so each step at least one crossed a libp2p stream.
    assert sum(s["transports"].get("p2p", 0) for s in stats) >= steps, stats
    assert all(s["transports"].get("fast", 0) >= 1 for s in stats), stats
    # Stale copies (an old step's HAVE or a gossip retransmission arriving after set_step) are
    # refused as "step not current"; nothing else may have been refused.
    assert all(set(s["rejected"]) <= {"step not current"} for s in stats), stats
