"""Two peers behind real NAT (nftables masquerade, inbound refused; network namespaces from
tests/wan/netns.py) exchange a result through a public member acting as circuit relay v2.

Each peer listens on all interfaces and advertises the address of its route towards the
public member, as `psyche-client join` does: for a NATed peer that is its private address,
which nobody outside can dial. Needs root, like the rest of the WAN tests (CI runs as root).
"""

from __future__ import annotations

from collections.abc import Iterator

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


def test_natted_peers_exchange_through_a_relay(wan: Wan) -> None:
    pub = wan.add_host("pub")
    nat1 = wan.add_host("nat1", nat=True)
    nat2 = wan.add_host("nat2", nat=True)
    keys = [NodeKey.generate() for _ in range(3)]
    members = [k.node_id for k in keys]
    peers: list[PeerProc] = []
    try:
        for key, host in zip(keys, (pub, nat1, nat2), strict=True):
            prefix = ("ip", "netns", "exec", host.ns)
            extra = ("--listen-host=0.0.0.0", f"--route-hint={pub.addr}", "--idle-timeout=5")
            peers.append(PeerProc(key, members, *extra, prefix=prefix))
        relay, a, c = (p.wait_ready() for p in peers)
        # Each advertises the address it has inside its own namespace.
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

        pub_c = c.call("publish", step=1, batch=0, seed=7, size=SIZE)
        got = a.call("fetch_raw", wait_s=120, raw=pub_c["raw"], timeout=90)
        assert got["fetched"], got
        assert got["sha256"] == _sha(7, SIZE)
        kinds = a.call("kinds")["kinds"]
        assert kinds[c.node_id] == "relayed" and kinds[relay.node_id] == "direct"

        # And the public member's result comes over its fast path (outbound from the NAT).
        pub_r = relay.call("publish", step=1, batch=1, seed=8, size=SIZE)
        got = a.call("fetch_raw", wait_s=120, raw=pub_r["raw"], timeout=90)
        assert got["fetched"] and got["sha256"] == _sha(8, SIZE), got
        # Attempts: fast (c's private address: no route) then p2p (relayed), then fast from pub.
        assert a.call("stats")["transports"] == {"fast": 2, "p2p": 1}
    finally:
        for p in peers:
            p.close()


def _sha(seed: int, size: int) -> str:
    import hashlib

    from tests.p2p.peer import payload

    return hashlib.sha256(payload(seed, size)).hexdigest()
