"""Model sharing at warmup: a late joiner gets config + every tensor from two peers."""

from __future__ import annotations

import hashlib
import json
import random
import time
from typing import Any

TENSORS = 16
TENSOR_SIZE = 256 << 10  # 4 MiB in all


def expected_model(seed: int) -> tuple[str, dict[str, str]]:
    rng = random.Random(seed)
    config = json.dumps({"layers": TENSORS, "seed": seed}).encode()
    tensors = {f"layer.{i}.weight": rng.randbytes(TENSOR_SIZE) for i in range(TENSORS)}
    return hashlib.sha256(config).hexdigest(), {
        k: hashlib.sha256(v).hexdigest() for k, v in tensors.items()
    }


def _share(peers: list[Any]) -> None:
    for p in peers:
        p.call("share_model", seed=7, tensors=TENSORS, tensor_size=TENSOR_SIZE)


def test_late_joiner_gets_model_from_two_peers(swarm_factory: Any) -> None:
    swarm = swarm_factory(3)
    a, b, late = swarm.spawn(0), swarm.spawn(1), swarm.spawn(2)
    _share([a, b])
    late.call("connect", addr=a.p2p_addr)
    late.call("connect", addr=b.p2p_addr)
    got = late.call("fetch_model", peers=[a.node_id, b.node_id])
    config_sha, tensor_sha = expected_model(7)
    assert got["config"] == config_sha
    assert got["tensors"] == tensor_sha
    # Both peers served part of it.
    assert a.call("stats")["uploads"] >= 1
    assert b.call("stats")["uploads"] >= 1


def test_model_fetch_resumes_after_a_peer_dies(swarm_factory: Any) -> None:
    swarm = swarm_factory(3)
    # Both upload at 256 KiB/s (x2 concurrent each), so the 4 MiB take ~4 s and `a` dies
    # with pieces in flight.
    a = swarm.spawn(0, "--rate", str(256 << 10))
    b, late = swarm.spawn(1, "--rate", str(256 << 10)), swarm.spawn(2)
    _share([a, b])
    late.call("connect", addr=a.p2p_addr)
    late.call("connect", addr=b.p2p_addr)
    cid = late.send("fetch_model", peers=[a.node_id, b.node_id], parallel=4)
    time.sleep(1.5)
    a.kill()
    got = late.wait(cid, timeout=120)
    assert got["ok"], got
    config_sha, tensor_sha = expected_model(7)
    assert got["config"] == config_sha and got["tensors"] == tensor_sha
    stats = late.call("stats")
    assert stats["failures"], stats
