"""The resync model download over real p2p nodes (loopback): `P2PNode.fetch_model(select=...)`
takes the content a majority of peers signed, from those peers only, and refuses when the
honest peers reachable are no majority. (test_resync.py covers the client duty over an
in-memory network; this covers the node path it calls.)"""

from __future__ import annotations

import asyncio

import pytest

from psyche_client.client.sharing import ModelPoint, parse_point
from psyche_client.p2p import NodeKey, P2PNode
from psyche_client.p2p.errors import ModelUnavailable
from psyche_client.p2p.model import agreed_by


def test_real_nodes_download_the_majority_model_and_refuse_without_one() -> None:
    async def main() -> None:
        keys = [NodeKey.generate() for _ in range(4)]
        members = {k.node_id for k in keys}
        nodes = [P2PNode(k, "run", is_member=members.__contains__) for k in keys]
        try:
            for n in nodes:
                await n.start()
            lagging, honest_a, honest_b, liar = nodes
            for p in nodes[1:]:
                await lagging.connect(p.p2p_addr)
            config = b'{"epoch":0,"height":3,"step":3,"hash":"ab"}'
            good = {"w": bytes(range(256)) * 64, "b": b"\x01" * 1000}
            honest_a.share_model(config, good)
            honest_b.share_model(config, good)
            liar.share_model(config, {"w": b"\x00" * len(good["w"]), "b": good["b"]})
            peers = [p.node_id for p in nodes[1:]]

            snap = await lagging.fetch_model(peers, select=agreed_by(2), timeout=30)
            assert {k: bytes(v) for k, v in snap.tensors.items()} == good
            assert set(snap.agreeing) == {honest_a.node_id, honest_b.node_id}
            assert parse_point(bytes(snap.config)) == ModelPoint(0, 3, 3, "ab")

            await honest_b.stop()  # now one honest vote and the liar's: no majority of three
            with pytest.raises(ModelUnavailable, match="agree"):
                await lagging.fetch_model(peers, select=agreed_by(2), timeout=10)
        finally:
            for n in nodes:
                await n.stop()

    asyncio.run(main())
