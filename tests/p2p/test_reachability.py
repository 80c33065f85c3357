"""A client that reaches no peer says so once (log, event, status) and again when it recovers;
`ctx.connected` follows the real connections so lost peers are dialled again."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from psyche_client.client import peers
from psyche_client.client.context import ClientContext, ClientOptions
from psyche_client.identity import NodeKey
from psyche_client.p2p.config import P2PConfig


class _Node:
    def __init__(self) -> None:
        self.kinds: dict[bytes, str] = {}
        self.config = P2PConfig(connect_timeout=0.1)
        self.p2p_addr = "/ip4/10.9.0.2/tcp/7000/p2p/x"
        self.listen_port, self.fast_port = 7000, 7001

    async def connection_kinds(self) -> dict[bytes, str]:
        return dict(self.kinds)


class _Backend:
    def __init__(self, members: list[bytes], train_secs: int) -> None:
        self.members = members
        self.train_secs = train_secs

    def state(self) -> Any:
        clients = [SimpleNamespace(node_key=m) for m in self.members]
        config = SimpleNamespace(max_round_train_secs=self.train_secs)
        return SimpleNamespace(clients=lambda: clients, config=config)


def test_bound_comes_from_the_round_timing() -> None:
    cfg = SimpleNamespace(max_round_train_secs=90)
    assert peers.unreachable_bound(cfg, 10.0) == 90.0  # type: ignore[arg-type]
    cfg.max_round_train_secs = 5
    assert peers.unreachable_bound(cfg, 10.0) == 30.0  # type: ignore[arg-type]


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def _until(cond: Any, limit: float = 20.0) -> None:
    for _ in range(int(limit / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def test_no_reachable_peer_is_reported_once_then_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(peers, "REACH_CHECK_S", 0.02)
    me, other, gone = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    events = tmp_path / "events.jsonl"
    options = ClientOptions(data=lambda _n: None, checkpoint_dir=tmp_path, events_path=events)  # type: ignore[arg-type,return-value]
    backend = _Backend([me.public, other.public], train_secs=0)
    ctx = ClientContext(backend, me, options)  # type: ignore[arg-type]
    node = _Node()
    ctx.node = node  # type: ignore[assignment]
    ctx.connected |= {other.public, gone.public}  # dialled earlier; both connections gone

    async def main() -> None:
        task = asyncio.ensure_future(peers.watch_reachability(ctx))
        try:
            await _until(lambda: any(e["event"] == "peers_unreachable" for e in _events(events)))
            assert ctx.connected == set()  # lost peers are dialled again by connect_peers
            assert ctx.status.network.startswith("no peer reachable")
            await asyncio.sleep(0.2)  # stays one report, not one per check
            assert [e["event"] for e in _events(events)] == ["peers_unreachable"]
            node.kinds = {other.public: "relayed"}
            await _until(lambda: ctx.status.network == "")
            assert [e["event"] for e in _events(events)] == ["peers_unreachable", "peers_reachable"]
            assert _events(events)[1]["relayed"] == 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    with caplog.at_level(logging.WARNING, logger="psyche.client"):
        asyncio.run(main())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "cannot reach any of the run's 1 other clients" in warnings[0]
    assert "7000 and 7001" in warnings[0] and "\n" not in warnings[0]


def test_alone_in_the_run_is_not_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "REACH_CHECK_S", 0.01)
    me = NodeKey.generate()
    events = tmp_path / "events.jsonl"
    options = ClientOptions(data=lambda _n: None, checkpoint_dir=tmp_path, events_path=events)  # type: ignore[arg-type,return-value]
    ctx = ClientContext(_Backend([me.public], train_secs=0), me, options)  # type: ignore[arg-type]
    ctx.node = _Node()  # type: ignore[assignment]

    async def main() -> None:
        task = asyncio.ensure_future(peers.watch_reachability(ctx))
        await asyncio.sleep(0.6)  # well past the 0.3 s bound
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert _events(events) == [] and ctx.status.network == ""
