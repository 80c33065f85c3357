"""Model sharing: a late joiner gets config + every tensor from two peers; a client catching up
takes only the content a majority of peers signed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from typing import Any

import pytest

from psyche_client.p2p import NodeKey, wire
from psyche_client.p2p.errors import ModelUnavailable
from psyche_client.p2p.manifest import Manifest
from psyche_client.p2p.model import agreed_by, content_key, model_sources

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


def _manifests(contents: list[bytes]) -> dict[bytes, Manifest]:
    """One peer per content, each signing its own manifest of (config, one tensor)."""
    out = {}
    for content in contents:
        key = NodeKey.generate()
        out[key.node_id] = Manifest.build(key, "run", b"cfg", {"w": content})
    return out


def _rpc(served: dict[bytes, Manifest]) -> Any:
    async def rpc(node: bytes, op: int, _body: bytes) -> tuple[int, bytes]:
        if node not in served:
            raise ConnectionRefusedError("down")
        if op == wire.OP_INFO:
            return wire.STATUS_OK, b"127.0.0.1:1"
        return wire.STATUS_OK, served[node].encode()

    return rpc


def test_majority_choice_outvotes_a_lying_manifest_and_uses_only_agreeing_sources() -> None:
    served = _manifests([b"good", b"good", b"evil"])
    peers = list(served)
    honest = peers[:2]

    async def main() -> None:
        chosen, sources = await model_sources(peers, _rpc(served), lambda _m: True, agreed_by(2))
        assert content_key(chosen) == content_key(served[honest[0]])
        assert [s.node for s in sources] == honest, "the liar serves no piece"
        # A third honest vote cannot be had: nothing is chosen.
        with pytest.raises(ModelUnavailable, match="agree"):
            await model_sources(peers, _rpc(served), lambda _m: True, agreed_by(3))
        # Peers that do not answer count against: two down leave one vote of two needed.
        up = {peers[0]: served[peers[0]], peers[2]: served[peers[2]]}
        with pytest.raises(ModelUnavailable, match="2 of 3"):
            await model_sources(peers, _rpc(up), lambda _m: True, agreed_by(2))
        # The caller's filter (e.g. tensor sizes of its own model) applies before counting.
        sized = agreed_by(1, lambda m: all(t.size == 4 and t.name == "w" for t in m.tensors))
        chosen, _ = await model_sources(peers, _rpc(served), lambda _m: True, sized)
        assert chosen.tensors[0].size == 4
        # A peer relaying someone else's signed manifest is no extra vote.
        relayed = dict(served)
        relayed[peers[2]] = served[peers[0]]
        with pytest.raises(ModelUnavailable):
            await model_sources(peers, _rpc(relayed), lambda _m: True, agreed_by(3))

    asyncio.run(main())
