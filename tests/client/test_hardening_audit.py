"""Issue 14: a verifier that cannot fetch its target's momentum reports nothing; one whose
target committed to undecodable momentum still reports it (client/audit.py), over real p2p
nodes (the fast path between two in-process P2PNodes)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from psyche_client.client import ClientOptions
from psyche_client.client.audit import check
from psyche_client.client.context import ClientContext
from psyche_client.client.peers import MOMENTUM_DOMAIN
from psyche_client.identity import NodeKey
from psyche_client.p2p import Announcement, P2PConfig, P2PNode
from psyche_client.p2p.messages import KIND_MOMENTUM
from psyche_client.training.result import commitment, commitment_hasher

STEP = 3
RUN = b"\x07" * 32
CONFIG = P2PConfig(fetch_timeout=2.0)


def _node(key: NodeKey) -> P2PNode:
    """A real node checking momentum disclosures as the client does (peers.start_node)."""
    return P2PNode(
        key,
        RUN.hex(),
        is_member=lambda _n: True,
        payload_hasher=lambda a: commitment_hasher(
            RUN, a.step, a.batch_id, a.payload_size, MOMENTUM_DOMAIN
        ),
        config=CONFIG,
    )


class ReportingBackend:
    """Records the reports a verifier sends (the coordinator side is tested elsewhere)."""

    def __init__(self) -> None:
        self.reports: list[int] = []

    def report(self, target: int) -> Any:
        self.reports.append(target)

        async def sent() -> None:
            return None

        return sent()


def _verifier(tmp: Path, node: P2PNode) -> tuple[ClientContext, ReportingBackend]:
    backend = ReportingBackend()
    options = ClientOptions(
        data=lambda _n: None,  # type: ignore[arg-type,return-value]
        checkpoint_dir=tmp,
        events_path=tmp / "events.jsonl",
    )
    ctx = ClientContext(backend, NodeKey.generate(), options)  # type: ignore[arg-type]
    ctx.node = node
    ctx.trainer = SimpleNamespace(demo=SimpleNamespace(momentum={"w": torch.zeros(8, 8)}))  # type: ignore[assignment]
    ctx.spec = SimpleNamespace()  # type: ignore[assignment]
    ctx.snapshots[STEP] = {"w": torch.zeros(8, 8)}
    return ctx, backend


def _events(ctx: ClientContext) -> dict[str, list[dict[str, Any]]]:
    path = ctx.options.events_path
    assert path is not None
    out: dict[str, list[dict[str, Any]]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        row = json.loads(line)
        out.setdefault(row["event"], []).append(row)
    return out


def _disclosure(key: NodeKey, payload: bytes, fast_addr: str) -> Announcement:
    digest = commitment(RUN, STEP, 0, payload, MOMENTUM_DOMAIN)
    ann = Announcement(
        RUN.hex(),
        STEP,
        0,
        key.node_id,
        digest,
        len(payload),
        fast_addr=fast_addr,
        kind=KIND_MOMENTUM,
    )
    return ann.signed(key)


def test_an_unfetchable_momentum_is_unverifiable_not_a_failed_verification(tmp_path: Path) -> None:
    target = NodeKey.generate()

    async def main() -> tuple[ClientContext, ReportingBackend]:
        node = _node(NodeKey.generate())
        await node.start()
        try:
            node.set_step(STEP)
            ctx, backend = _verifier(tmp_path, node)
            # The target announced its momentum; nobody answers for it (its host is gone).
            ann = _disclosure(target, b"\0" * 256, "127.0.0.1:1")
            await check(ctx, 0, 1, 2, STEP, (0, 4), None, ann)  # type: ignore[arg-type]
            return ctx, backend
        finally:
            await node.stop()

    ctx, backend = asyncio.run(main())
    events = _events(ctx)
    assert backend.reports == []  # before: reported, so an honest trainer could be ejected
    assert "verified" not in events and "reported" not in events
    assert [e["target"] for e in events["unverifiable"]] == [2]


@pytest.mark.parametrize("fault", ["undecodable", "not the committed bytes"])
def test_momentum_the_target_itself_got_wrong_is_still_reported(tmp_path: Path, fault: str) -> None:
    target = NodeKey.generate()

    async def main() -> tuple[ClientContext, ReportingBackend]:
        server, node = _node(target), _node(NodeKey.generate())
        await server.start()
        await node.start()
        try:
            for n in (server, node):
                n.set_step(STEP)
            ctx, backend = _verifier(tmp_path, node)
            if fault == "undecodable":  # signed and served, but not 8x8 fp32 values
                payload = served = b"\1" * 100
            else:  # the target alone serves other bytes than it signed
                payload, served = b"\0" * 256, b"\1" * 256
            ann = _disclosure(target, payload, server.fast_addr)
            server.serve(ann.commitment, served, STEP)
            await check(ctx, 0, 1, 2, STEP, (0, 4), None, ann)  # type: ignore[arg-type]
            return ctx, backend
        finally:
            await node.stop()
            await server.stop()

    ctx, backend = asyncio.run(main())
    events = _events(ctx)
    assert backend.reports == [2]
    assert [e["ok"] for e in events["verified"]] == [False]
    assert "unverifiable" not in events
