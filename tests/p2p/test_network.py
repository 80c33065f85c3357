"""Real nodes in one process on loopback: IPv6, wildcard listening, and the circuit relay path
for a node nobody can dial (what a client behind NAT is to its peers)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest

from psyche_client.p2p import NodeKey, P2PConfig, P2PNode
from psyche_client.p2p.transfer import FAST, P2P


@contextlib.asynccontextmanager
async def _nodes(*configs: P2PConfig) -> AsyncIterator[list[P2PNode]]:
    keys = [NodeKey.generate() for _ in configs]
    members = {k.node_id for k in keys}
    nodes = [
        P2PNode(k, "net", is_member=members.__contains__, config=c)
        for k, c in zip(keys, configs, strict=True)
    ]
    try:
        for n in nodes:
            await n.start()
            n.set_step(1)
        yield nodes
    finally:
        for n in nodes:
            await n.stop()


async def _exchange(sender: P2PNode, receiver: P2PNode, size: int) -> bytes:
    payload = os.urandom(size)
    await sender.publish(1, 0, payload)
    ann = await asyncio.wait_for(receiver.announcements.get(), 30)
    got = await receiver.fetch(ann, timeout=60)
    assert bytes(got) == payload
    return payload


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_ipv6_exchange_over_fast_path_and_libp2p() -> None:
    if not _ipv6_loopback():
        pytest.fail("this machine has no IPv6 loopback (::1); IPv6 support cannot be checked")

    async def main() -> None:
        fast, slow = P2PConfig(listen_host="::1"), P2PConfig(listen_host="::1", fast_path=False)
        async with _nodes(fast, slow) as (a, b):
            assert a.p2p_addr.startswith("/ip6/::1/tcp/")
            assert a.fast_addr.startswith("[::1]:") and b.fast_addr == ""
            await b.connect(a.p2p_addr)
            await _exchange(a, b, 300_000)
            assert b.stats.fetch_transports == {FAST: 1}
            await _exchange(b, a, 300_000)  # b serves no fast path: libp2p streams over IPv6
            assert a.stats.fetch_transports == {P2P: 1}

    asyncio.run(main())


def test_wildcard_listen_advertises_the_route_to_the_coordinator() -> None:
    async def main() -> None:
        cfg = P2PConfig(listen_host="0.0.0.0", route_hint="127.0.0.1")
        async with _nodes(cfg, P2PConfig()) as (a, b):
            assert a.p2p_addr.startswith(f"/ip4/127.0.0.1/tcp/{a.listen_port}/p2p/")
            assert a.fast_addr == f"127.0.0.1:{a.fast_port}"
            await b.connect(a.p2p_addr)
            await _exchange(a, b, 100_000)

    asyncio.run(main())


def test_public_addr_is_advertised_with_fast_path_on_port_plus_one() -> None:
    async def main() -> None:
        cfg = P2PConfig(public_host="198.51.100.7", public_port=7000)
        async with _nodes(cfg) as (a,):
            assert a.p2p_addr.startswith("/ip4/198.51.100.7/tcp/7000/p2p/")
            assert a.fast_addr == "198.51.100.7:7001"

    asyncio.run(main())


def test_undialable_nodes_exchange_results_through_a_relay() -> None:
    """Two members advertise addresses nobody can dial (as a NATed client's private address
    is): neither can be reached directly, both dial out to a public member, reserve a relay
    slot there, and a result still goes from one to the other, relayed."""

    async def main() -> None:
        # No hole punching here: on loopback it would find the real listen ports (identify
        # reports them) and replace the relayed connection; tests/p2p/test_nat_netns.py
        # checks DCUtR through real NAT.
        nat = P2PConfig(public_host="127.0.0.1", public_port=1, connect_timeout=3, hole_punch=False)
        async with _nodes(P2PConfig(), nat, nat) as (relay, a, c):
            assert a.fast_addr == "127.0.0.1:2"
            with pytest.raises(Exception):  # noqa: B017 - the premise: no direct way in
                await relay.connect(c.p2p_addr.replace(str(c.listen_port), "1"))
            await a.connect(relay.p2p_addr)
            await c.connect(relay.p2p_addr)
            for _ in range(1200):  # generous: this box is often heavily loaded
                if a.relay_reservations and c.relay_reservations:
                    break
                await asyncio.sleep(0.05)
            assert a.relay_reservations == 1 and c.relay_reservations == 1
            await _exchange(c, a, 2_000_000)
            kinds = await a.connection_kinds()
            assert kinds[c.node_id] == "relayed" and kinds[relay.node_id] == "direct"
            # The fast path was tried once, failed to connect, and is now skipped for c.
            assert a.stats.fetch_transports == {FAST: 1, P2P: 1}
            assert any("fast connect" in f for f in a.stats.fetch_failures)
            assert a._reachable(a._book.holders(next(iter(a._book._holders)))[0]).fast_addr == ""

    asyncio.run(main())


def test_relay_refuses_non_members() -> None:
    """A relay only serves members: an outsider's connection is closed by the membership
    gate before it can reserve a slot."""

    async def main() -> None:
        async with _nodes(P2PConfig()) as (relay,):
            outsider = P2PNode(NodeKey.generate(), "net", is_member=lambda _n: True)
            await outsider.start()
            try:
                await outsider.connect(relay.p2p_addr)
                for _ in range(600):
                    if relay.refused_connections:
                        break
                    await asyncio.sleep(0.05)
                assert relay.refused_connections >= 1
                assert relay._lp.relays is not None
                assert not relay._lp.relays.protocol.resource_manager._reservations
                await asyncio.sleep(0.5)
                assert outsider.relay_reservations == 0
            finally:
                await outsider.stop()

    asyncio.run(main())
