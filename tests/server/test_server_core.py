"""The TCP server hosting the real core: joins, authority checks, typed rejections, restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from psyche_client import _core
from psyche_client.backend.tcp import CoordinatorRejected, TcpCoordinatorClient
from psyche_client.identity import NodeKey
from psyche_client.runid import run_id_bytes, run_name
from psyche_client.server.app import CoordinatorServer
from psyche_client.server.core_host import CoreStateHost
from psyche_client.server.persist import load_state


def test_run_names() -> None:
    assert run_name(run_id_bytes("demo-1")) == "demo-1"
    assert len(run_id_bytes("x" * 32)) == 32
    with pytest.raises(Exception, match="1-32 characters"):
        run_id_bytes("bad name")
    assert run_name(b"\xff" * 32) == "ff" * 32


def test_clients_join_and_authority_controls(tmp_path: Path) -> None:
    async def go() -> None:
        operator = NodeKey.generate()
        config = _core.Config(min_clients=2, waiting_extra_secs=0, warmup_secs=30)
        core = _core.Coordinator(run_id_bytes("run-c"), config, _core.ModelRef.peers(), 0)
        host = CoreStateHost(core, authority=operator.public)
        path = tmp_path / "state.bin"
        server = CoordinatorServer(host, "run-c", path, tick_interval_s=0.05)
        await server.start()
        admin = TcpCoordinatorClient(server.address, operator)
        await admin.start()
        keys = [NodeKey.generate() for _ in range(2)]
        clients = [TcpCoordinatorClient(server.address, k) for k in keys]
        for c in clients:
            await c.start()

        with pytest.raises(CoordinatorRejected) as e:
            await clients[0].request("resume", {})
        assert e.value.name == "NotAuthority"
        await admin.request("resume", {})
        for c in clients:
            await c.request("join", {})
        with pytest.raises(CoordinatorRejected) as e:
            await clients[0].request("join", {})
        assert e.value.name == "DuplicateClient"
        with pytest.raises(CoordinatorRejected) as e:
            await clients[0].request("witness", {"position": 0, "results": "00"})
        assert e.value.name == "InvalidMessage"

        state = await clients[1].wait_state(
            lambda s: _core.Coordinator.from_bytes(s).phase == _core.Phase.Warmup, 10
        )
        seen = _core.Coordinator.from_bytes(state)
        assert sorted(ci.node_key for ci in seen.clients()) == sorted(k.public for k in keys)
        for c in clients:
            await c.request("warmup_witness", {})
        await clients[0].wait_state(
            lambda s: _core.Coordinator.from_bytes(s).phase == _core.Phase.RoundTrain, 10
        )
        persisted = load_state(path)
        assert persisted is not None
        assert _core.Coordinator.from_bytes(persisted).phase == _core.Phase.RoundTrain
        for c in [admin, *clients]:
            await c.stop()
        await server.stop()

    asyncio.run(go())


def test_model_reference_json() -> None:
    from psyche_client.modelref import ModelRefError, model_ref_from_json

    ref = model_ref_from_json({"kind": "HuggingFace", "location": "org/m", "revision": "r1"})
    assert (ref.kind, ref.location, ref.revision) == (_core.ModelKind.HuggingFace, "org/m", "r1")
    assert model_ref_from_json({"kind": "Peers"}).kind == _core.ModelKind.Peers
    for bad, name in [
        ([], "InvalidMessage"),
        ({"kind": "LocalPath", "location": 3}, "InvalidMessage"),
        ({"kind": "Ftp", "location": "x"}, "InvalidModelRef"),
        ({"kind": "LocalPath", "location": "x" * 10_000}, "InvalidModelRef"),
    ]:
        with pytest.raises(ModelRefError) as e:
            model_ref_from_json(bad)
        assert e.value.name == name
