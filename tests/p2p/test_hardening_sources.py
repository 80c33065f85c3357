"""Issue 14: HAVEs only for claimed commitments, and a poisoned source is dropped alone
(p2p/book.py, p2p/transfer.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import random
import struct

import pytest

from psyche_client.p2p import Announcement, NodeKey, P2PNode, wire
from psyche_client.p2p.payload_check import WholeVerifier
from psyche_client.p2p.transfer import FetchFailed, FetchStats, Progress, Source, fetch_blob

PARKED = "have for an unclaimed commitment (parked)"


def _msg(key: NodeKey, commitment: bytes, kind: int = 1, size: int = 1000) -> bytes:
    ann = Announcement("run", 5, 1, key.node_id, commitment, size, "/ip4/x", "127.0.0.1:1")
    if kind == 2:
        return dataclasses.replace(ann, kind=2).signed(key).encode()
    return ann.signed(key).encode()


def _pulled(node: P2PNode, step: int) -> list[Announcement]:
    from psyche_client.p2p.messages import decode

    status, body = node.handle_rpc(b"", wire.OP_PULL, struct.pack(">Q", step))
    assert status == wire.STATUS_OK
    return [decode(raw) for raw in wire.unpack_messages(body, 4096)]


def test_a_have_counts_only_for_a_claimed_commitment_and_waits_for_its_claim() -> None:
    me, trainer, holder = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    node = P2PNode(me, "run", is_member=lambda _n: True)
    node.set_step(5)
    claimed = b"c" * 32
    # A HAVE of something nobody claimed: not forwarded, not served in PULL replies.
    assert not node.on_gossip(_msg(holder, b"z" * 32, kind=2))[0]
    # A HAVE that races ahead of its claim is parked, then taken up when the claim comes.
    assert not node.on_gossip(_msg(holder, claimed, kind=2))[0]
    assert node.stats.rejected[PARKED] == 2
    assert node.on_gossip(_msg(trainer, claimed))[0]
    assert {(a.sender, a.commitment) for a in _pulled(node, 5)} == {
        (trainer.node_id, claimed),
        (holder.node_id, claimed),
    }
    # Once claimed, a HAVE must repeat the claim's size (and step, batch).
    assert not node.on_gossip(_msg(NodeKey.generate(), claimed, kind=2, size=999))[0]
    assert node.stats.rejected["have does not match its claim"] == 1
    assert node.on_gossip(_msg(NodeKey.generate(), claimed, kind=2))[0]


def test_a_member_cannot_have_unclaimed_commitments_over_real_gossip() -> None:
    async def main() -> None:
        keys = [NodeKey.generate() for _ in range(3)]
        members = {k.node_id for k in keys}
        nodes = [P2PNode(k, "run", is_member=members.__contains__) for k in keys]
        trainer, liar, fetcher = nodes
        try:
            for n in nodes:
                await n.start()
                n.set_step(1)
            await liar.connect(trainer.p2p_addr)
            await fetcher.connect(trainer.p2p_addr)
            await fetcher.connect(liar.p2p_addr)
            payload = random.Random(5).randbytes(300_000)
            for _ in range(40):  # until the gossip mesh carries the claim to both
                ann = await trainer.publish(1, 0, payload)
                if fetcher.announcements.qsize() and liar.announcements.qsize():
                    break
                await asyncio.sleep(0.25)
            assert fetcher.announcements.qsize() and liar.announcements.qsize()
            # The liar HAVEs the real commitment, but serves other bytes under it; and HAVEs
            # a commitment nobody claimed.
            liar.serve(ann.commitment, random.Random(6).randbytes(len(payload)), 1)
            bogus = dataclasses.replace(ann, commitment=os.urandom(32))
            for have in (ann, bogus):
                await liar._gossip(have.as_have(liar.key, liar.p2p_addr, liar.fast_addr).encode())
            for _ in range(80):
                holders = {(a.sender, a.commitment) for a in _pulled(fetcher, 1)}
                if (liar.node_id, ann.commitment) in holders and (
                    fetcher.stats.rejected.get(PARKED)
                    or (liar.node_id, bogus.commitment) in holders
                ):
                    break
                await asyncio.sleep(0.1)
            assert (liar.node_id, ann.commitment) in holders  # a claimed commitment: a source
            assert (liar.node_id, bogus.commitment) not in holders
            assert fetcher.stats.rejected.get(PARKED) == 1
            # Whichever source it tries first, the fetch ends with the committed bytes, and
            # only the liar is ever blamed.
            got = await fetcher.fetch(ann, timeout=30)
            assert bytes(got) == payload
            assert trainer.node_id not in fetcher.stats.liars
        finally:
            for n in nodes:
                await n.stop()

    asyncio.run(main())


@pytest.mark.parametrize("first", ["liar", "honest"])
def test_a_poisoned_source_is_dropped_alone(first: str) -> None:
    # Two holders of one commitment. One serves garbage; the first attempt breaks off half-way
    # and the other source continues, so the mismatch cannot be pinned on either. Before, both
    # were dropped and the fetch failed with the honest holder still there.
    size = 1 << 16
    good = random.Random(1).randbytes(size)
    digest = hashlib.sha256(good).digest()
    liar, honest = Source(b"L" * 32, fast_addr="l:1"), Source(b"H" * 32, fast_addr="h:1")
    order = [liar, honest] if first == "liar" else [honest, liar]
    tried: list[bytes] = []

    def sources() -> list[Source]:
        # The first two attempts go to each source in turn; after that both are offered.
        return [order[len(tried)]] if len(tried) < 2 else [liar, honest]

    async def attempt(
        src: Source,
        _transport: str,
        _key: bytes,
        dest: memoryview,
        offset: int,
        progress: Progress,
        _budget: float,
    ) -> None:
        first_try = not tried
        tried.append(src.node)
        data = good if src is honest else random.Random(2).randbytes(size)
        end = offset + (size - offset) // 2 if first_try else size
        dest[offset:end] = data[offset:end]
        progress.advance(end)
        if end < size:
            raise wire.TransferError("eof")

    async def main() -> tuple[bytes, FetchStats]:
        stats = FetchStats()
        verifier = WholeVerifier(lambda v: hashlib.sha256(v).digest() == digest)
        got = await fetch_blob(
            digest, size, sources, verifier, attempt, timeout=5, busy_backoff=0.02, stats=stats
        )
        return bytes(got), stats

    try:
        got, stats = asyncio.run(main())
    except FetchFailed as e:
        raise AssertionError(f"the honest holder was dropped with the liar: {e}") from e
    assert got == good
    assert honest.node not in stats.liars
    assert "verify" in stats.failures
