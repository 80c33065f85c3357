"""In-process checks: message validation, lifecycle (stop, threads, sockets), upload limits."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import threading

import pytest

from psyche_client.p2p import Announcement, NodeKey, P2PConfig, P2PError, P2PNode
from psyche_client.p2p.manifest import Manifest, ManifestError
from psyche_client.p2p.messages import MAX_MESSAGE_BYTES, MessageError, decode


def _ann(key: NodeKey, step: int = 5, batch: int = 1, commitment: bytes = b"c" * 32) -> bytes:
    return (
        Announcement("run", step, batch, key.node_id, commitment, 1000, "/ip4/x", "127.0.0.1:1")
        .signed(key)
        .encode()
    )


def test_decode_roundtrip_and_tamper() -> None:
    key = NodeKey.generate()
    raw = _ann(key)
    assert decode(raw).sender == key.node_id
    for i in range(0, len(raw), 7):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        with pytest.raises(MessageError):
            decode(bytes(bad))
    with pytest.raises(MessageError):
        decode(raw + b"x" * MAX_MESSAGE_BYTES)


def test_solana_keypair_seed_is_node_key() -> None:
    key = NodeKey.generate()
    solana_file = key.seed + key.node_id  # a Solana keypair: seed then public key
    assert NodeKey.from_solana_keypair_bytes(solana_file).node_id == key.node_id


def test_node_accepts_only_valid_member_announcements() -> None:
    me, member, outsider = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    members = {me.node_id, member.node_id}
    node = P2PNode(
        me,
        "run",
        is_member=members.__contains__,
        validate_announcement=lambda a: None if a.batch_id < 10 else "not its batch",
    )
    node.set_step(5)
    assert node.on_gossip(_ann(member))[0]
    assert node.on_gossip(_ann(member))[0]  # duplicate: forwarded, not queued twice
    assert node.announcements.qsize() == 1 and node.stats.duplicates == 1
    assert not node.on_gossip(_ann(member, commitment=b"d" * 32))[0]  # equivocation
    assert not node.on_gossip(_ann(outsider))[0]
    assert not node.on_gossip(_ann(member, step=2))[0]  # too old
    assert node.on_gossip(_ann(member, step=3, batch=3))[0]  # two back: applied at step 5
    assert not node.on_gossip(_ann(member, step=6))[0]  # not yet current
    assert node.on_gossip(_ann(member, step=4, batch=2))[0]  # previous step is fine
    assert not node.on_gossip(_ann(member, batch=11))[0]  # pluggable validator says no
    assert not node.on_gossip(b"garbage")[0]
    assert node.announcements.qsize() == 3
    assert set(node.stats.rejected) >= {"equivocation", "not a member", "step not current"}


def test_manifest_signature() -> None:
    key = NodeKey.generate()
    m = Manifest.build(key, "run", b"{}", {"w": b"abc"})
    assert Manifest.decode(m.encode()) == m
    assert m.tensors[0].sha256 == hashlib.sha256(b"abc").digest()
    raw = bytearray(m.encode())
    raw[-5] ^= 1
    with pytest.raises(ManifestError):
        Manifest.decode(bytes(raw))


def test_start_stop_leaves_no_threads_and_stop_never_raises() -> None:
    before = set(threading.enumerate())

    ports: list[int] = []

    async def main() -> None:
        key = NodeKey.generate()
        node = P2PNode(key, "run", is_member=lambda _n: True)
        await node.stop()  # never started: a no-op
        node = P2PNode(key, "run", is_member=lambda _n: True)
        await node.start()
        await node.publish(0, 0, b"x" * 1000)
        ports.extend([int(node.fast_addr.rsplit(":", 1)[1]), int(node.p2p_addr.split("/")[4])])
        await node.stop()
        await node.stop()  # twice is fine
        with pytest.raises(P2PError):
            await node.publish(0, 1, b"y")

    asyncio.run(main())
    assert set(threading.enumerate()) <= before
    for port in ports:  # nothing listens any more
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_failing_validator_rejects_instead_of_raising() -> None:
    me, member = NodeKey.generate(), NodeKey.generate()

    def broken(_a: Announcement) -> str | None:
        raise RuntimeError("core not ready")

    node = P2PNode(me, "run", is_member=lambda _n: True, validate_announcement=broken)
    assert node.on_gossip(_ann(member)) == (False, "")
    assert node.stats.rejected == {"validator error": 1}


def test_stop_ends_pending_fetches() -> None:
    async def main() -> None:
        me, other = NodeKey.generate(), NodeKey.generate()
        node = P2PNode(me, "run", is_member=lambda _n: True)
        await node.start()
        node.set_step(1)
        # Nobody serves this: the fetch keeps waiting for a holder until stop ends it.
        ann = Announcement(
            "run", 1, 0, other.node_id, b"c" * 32, 1000, fast_addr="127.0.0.1:1"
        ).signed(other)
        task = asyncio.ensure_future(node.fetch(ann, timeout=300))
        await asyncio.sleep(0.5)
        assert not task.done()
        await node.stop()
        with pytest.raises((asyncio.CancelledError, Exception)):
            await asyncio.wait_for(task, 10)

    asyncio.run(main())


def test_upload_limit_answers_busy_and_every_fetch_still_completes() -> None:
    async def main() -> None:
        keys = [NodeKey.generate() for _ in range(4)]
        members = {k.node_id for k in keys}
        server_cfg = P2PConfig(uploads_total=1, upload_rate_limit=4 << 20)
        nodes = [
            P2PNode(k, "run", is_member=members.__contains__, config=server_cfg if i == 0 else None)
            for i, k in enumerate(keys)
        ]
        try:
            for n in nodes:
                await n.start()
                n.set_step(1)
            payload = random.Random(1).randbytes(1 << 20)
            ann = await nodes[0].publish(1, 0, payload)
            # Three fetchers at once, one upload slot: BUSY, back off, retry (or use a holder).
            got = await asyncio.gather(*(n.fetch(ann, timeout=60) for n in nodes[1:]))
            assert all(bytes(g) == payload for g in got)
            assert sum(n.stats.busy_replies for n in nodes[1:]) >= 1
        finally:
            for n in nodes:
                await n.stop()

    asyncio.run(main())
