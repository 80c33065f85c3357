"""Momentum disclosures are their own signed message kind, accepted next to the result they
belong to (same sender, step and batch) and never confused with it."""

from __future__ import annotations

import pytest

from psyche_client.p2p import Announcement, NodeKey, P2PNode
from psyche_client.p2p.messages import (
    KIND_ANNOUNCE,
    KIND_HAVE,
    KIND_MOMENTUM,
    MessageError,
    decode,
)


def _msg(key: NodeKey, kind: int, commitment: bytes, batch: int = 7) -> Announcement:
    return Announcement(
        "run", 5, batch, key.node_id, commitment, 100, "/ip4/x", "", kind=kind
    ).signed(key)


def test_momentum_kind_round_trips_and_its_signature_covers_the_kind() -> None:
    key = NodeKey.generate()
    msg = _msg(key, KIND_MOMENTUM, b"m" * 32)
    raw = msg.encode()
    back = decode(raw)
    assert back.kind == KIND_MOMENTUM and back.batch_id == 7 and back == msg
    as_result = bytearray(raw)
    as_result[4] = KIND_ANNOUNCE  # relabel a disclosure as a result: the signature breaks
    with pytest.raises(MessageError, match="bad signature"):
        decode(bytes(as_result))
    unknown = bytearray(raw)
    unknown[4] = 9
    with pytest.raises(MessageError, match="unknown kind"):
        decode(bytes(unknown))


def test_node_accepts_result_and_momentum_of_one_batch_and_checks_each_for_equivocation() -> None:
    me, member = NodeKey.generate(), NodeKey.generate()
    node = P2PNode(me, "run", is_member={me.node_id, member.node_id}.__contains__)
    node.set_step(5)
    assert node.on_gossip(_msg(member, KIND_ANNOUNCE, b"r" * 32).encode())[0]
    assert node.on_gossip(_msg(member, KIND_MOMENTUM, b"m" * 32).encode())[0]
    kinds = [node.announcements.get_nowait().kind for _ in range(node.announcements.qsize())]
    assert kinds == [KIND_ANNOUNCE, KIND_MOMENTUM]
    # A second, different disclosure for the same batch is equivocation, like a second result.
    assert not node.on_gossip(_msg(member, KIND_MOMENTUM, b"n" * 32).encode())[0]
    assert node.stats.rejected.get("equivocation") == 1
    # A holder's HAVE of the disclosure adds a source and queues nothing new.
    holder = NodeKey.generate()
    node2 = P2PNode(me, "run", is_member={me.node_id, member.node_id, holder.node_id}.__contains__)
    node2.set_step(5)
    have = _msg(member, KIND_MOMENTUM, b"m" * 32).as_have(holder, "/ip4/y", "")
    assert have.kind == KIND_HAVE
    assert node2.on_gossip(_msg(member, KIND_MOMENTUM, b"m" * 32).encode())[0]  # its claim
    assert node2.on_gossip(have.encode())[0]
    assert node2.announcements.qsize() == 1
