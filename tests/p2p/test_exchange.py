"""Peers in separate processes exchange per-step results and end with every payload, verified."""

from __future__ import annotations

import hashlib
import random
from typing import Any

SIZE = 2 << 20


def expected(seed: int, size: int = SIZE) -> str:
    return hashlib.sha256(random.Random(seed).randbytes(size)).hexdigest()


def test_four_peers_exchange_results_for_several_steps(swarm_factory: Any) -> None:
    swarm = swarm_factory(4)
    # Peer 3 has no fast path, so its results travel over libp2p streams (the fallback).
    peers = [swarm.spawn(0), swarm.spawn(1), swarm.spawn(2), swarm.spawn(3, "--no-fast")]
    for p in peers[1:]:
        p.call("connect", addr=peers[0].p2p_addr)
    peers[3].call("connect", addr=peers[1].p2p_addr)
    peers[2].call("connect", addr=peers[3].p2p_addr)

    for step in (1, 2, 3):
        for p in peers:
            p.call("step", step=step)
        for i, p in enumerate(peers):
            p.call("publish", step=step, batch=i, size=SIZE, seed=step * 100 + i)
        waits = [
            (p, p.send("collect", step=step, count=3, timeout=60, pull_after=5)) for p in peers
        ]
        for i, (p, cid) in enumerate(waits):
            reply = p.wait(cid, timeout=150)
            assert reply["ok"], reply
            got = {(r["sender"], r["batch"]): r for r in reply["results"]}
            for j, other in enumerate(peers):
                if j == i:
                    continue
                r = got[(other.node_id, j)]
                assert r["fetched"], r
                assert r["sha256"] == expected(step * 100 + j)
            assert len(got) == 3

    stats = [p.call("stats") for p in peers]
    assert all(s["fetched"] == 9 and s["fetch_failed"] == 0 for s in stats)
    # Peer 3's results exist only behind libp2p until someone fetched them (then HAVEs offer
    # the fast path too), so each step at least one of its results crossed a libp2p stream.
    assert sum(s["transports"].get("p2p", 0) for s in stats) >= 3
    assert all(s["transports"].get("fast", 0) >= 1 for s in stats)
    assert all(not s["rejected"] for s in stats)
