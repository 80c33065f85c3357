"""Two peers behind real NAT (nftables masquerade, inbound refused; network namespaces from
tests/wan/netns.py) exchange a result through a public member acting as circuit relay v2.

Each peer listens on all interfaces and advertises the address of its route towards the
public member, as `psyche-client join` does: for a NATed peer that is its private address,
which nobody outside can dial. Needs root, like the rest of the WAN tests (CI runs as root).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from psyche_client.p2p import NodeKey
from tests.p2p.conftest import PeerProc
from tests.wan.netns import Wan, WanError, require

SIZE = 3_000_000


@pytest.fixture
def wan() -> Iterator[Wan]:
    try:
        require()
        net = Wan()
        net.start()
    except WanError as e:
        pytest.fail(f"cannot build the simulated WAN: {e}", pytrace=False)
    try:
        yield net
    finally:
        net.close()


def _natted_trio(wan: Wan, *extra: str) -> tuple[list[PeerProc], list[Any]]:
    """A public peer and two behind NAT, each listening on all interfaces and advertising
    its route towards the public one; the NATed two dial out to it and reserve a relay slot."""
    hosts = [wan.add_host("pub"), wan.add_host("nat1", nat=True), wan.add_host("nat2", nat=True)]
    keys = [NodeKey.generate() for _ in hosts]
    members = [k.node_id for k in keys]
    args = ("--listen-host=0.0.0.0", f"--route-hint={hosts[0].addr}", "--idle-timeout=5", *extra)
    peers = [
        PeerProc(key, members, *args, prefix=("ip", "netns", "exec", host.ns))
        for key, host in zip(keys, hosts, strict=True)
    ]
    return peers, hosts


def _ready(peers: list[PeerProc], hosts: list[Any]) -> tuple[PeerProc, PeerProc, PeerProc]:
    relay, a, c = (p.wait_ready() for p in peers)
    pub, nat1, _ = hosts
    assert relay.p2p_addr.startswith(f"/ip4/{pub.addr}/tcp/")
    assert a.p2p_addr.startswith(f"/ip4/{nat1.addr}/tcp/") and nat1.addr != nat1.public
    for p in peers:
        p.call("step", step=1)
    # The premise: nobody outside can dial a NATed peer at the address it knows.
    refused = relay.wait(relay.send("connect", addr=a.p2p_addr), 60)
    assert not refused["ok"], refused
    a.call("connect", addr=relay.p2p_addr)
    c.call("connect", addr=relay.p2p_addr)
    assert a.call("reservations", at_least=1)["reservations"] >= 1
    assert c.call("reservations", at_least=1)["reservations"] >= 1
    return relay, a, c


def _fetch(publisher: PeerProc, fetcher: PeerProc, batch: int) -> None:
    pub = publisher.call("publish", step=1, batch=batch, seed=batch, size=SIZE)
    got = fetcher.call("fetch_raw", wait_s=120, raw=pub["raw"], timeout=90)
    assert got["fetched"], got
    assert got["sha256"] == _sha(batch, SIZE)


def test_natted_peers_exchange_through_a_relay(wan: Wan) -> None:
    peers, hosts = _natted_trio(wan, "--no-hole-punch")
    try:
        relay, a, c = _ready(peers, hosts)
        _fetch(c, a, 0)
        kinds = a.call("kinds")["kinds"]
        assert kinds[c.node_id] == "relayed" and kinds[relay.node_id] == "direct"
        # The public member's result comes over its fast path (outbound through the NAT).
        _fetch(relay, a, 1)
        # Attempts: fast (c's private address: no route), p2p (relayed), fast from the relay.
        assert a.call("stats")["transports"] == {"fast": 2, "p2p": 1}
    finally:
        for p in peers:
            p.close()


def test_natted_peers_hole_punch_to_a_direct_connection(wan: Wan) -> None:
    """DCUtR: the relayed connection is upgraded by TCP simultaneous open through both
    masquerading NATs; results then flow without the relay."""
    peers, hosts = _natted_trio(wan)
    try:
        _relay, a, c = _ready(peers, hosts)
        _fetch(c, a, 0)  # relayed or already punched: either way it arrives
        for _ in range(60):
            if a.call("kinds")["kinds"].get(c.node_id) == "direct":
                break
            time.sleep(1)
        assert a.call("kinds")["kinds"].get(c.node_id) == "direct"
        _fetch(a, c, 1)
    finally:
        for p in peers:
            p.close()


def _sha(seed: int, size: int) -> str:
    import hashlib

    from tests.p2p.peer import payload

    return hashlib.sha256(payload(seed, size)).hexdigest()
