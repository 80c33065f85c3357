"""The simulated WAN does what it claims: caps, asymmetry, latency, loss, NAT, partitions.

Rates and delays are checked only in the direction load cannot fake: a busy machine can make a
link slower or a round trip longer, never faster than the cap or shorter than the delay.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.wan.conftest import need_wan, probe, probe_server
from tests.wan.netns import PREFIX, Link, Wan, clean_leftovers, is_private, namespaces, sh

pytestmark = pytest.mark.timeout(120)
PORT = 7000


def test_links_caps_latency_loss_nat_partition(wan: Wan) -> None:
    fast = wan.add_host("fast", Link(up_mbit=20, down_mbit=20, delay_ms=15))
    slow_up = wan.add_host("asym", Link(up_mbit=4, down_mbit=20))
    lossy = wan.add_host("lossy", Link(loss_pct=30))
    natted = wan.add_host("natted", nat=True)
    assert all(is_private(h.addr) and is_private(h.public) for h in wan.hosts.values())
    assert natted.addr != natted.public, "a NAT host's own address is not what others see"
    servers = [probe_server(wan, h, PORT) for h in (fast, slow_up, natted)]
    try:
        up = float(probe(wan, slow_up, "send", fast.addr, str(PORT), "1000000"))
        down = float(probe(wan, fast, "send", slow_up.addr, str(PORT), "2000000"))
        assert up <= 4 * 1.1, f"upload of the asymmetric link exceeds its 4 Mbit/s cap: {up}"
        assert down > up, f"download {down} Mbit/s should beat the 4 Mbit/s upload"
        assert down <= 20 * 1.1, f"the 20 Mbit/s cap is not applied: {down}"

        rtt = float(probe(wan, slow_up, "rtt", fast.addr, str(PORT), "5"))
        assert rtt >= 2 * 15, f"round trip {rtt} ms shorter than the link's 2 × 15 ms delay"

        answered = float(probe(wan, lossy, "udp", fast.addr, str(PORT), "40"))
        assert answered < 0.95, f"30% loss each way, yet {answered:.0%} of datagrams came back"
        assert answered > 0, "loss is random, not a cut"

        assert probe(wan, natted, "connect", fast.addr, str(PORT), "5") == "ok"
        for target in (natted.public, natted.addr):
            verdict = probe(wan, fast, "connect", target, str(PORT), "1")
            assert verdict == "refused", f"inbound connection to the NAT host via {target}"

        wan.partition(["fast"], ["asym", "natted"])
        assert probe(wan, slow_up, "connect", fast.addr, str(PORT), "1") == "refused"
        assert probe(wan, natted, "connect", fast.addr, str(PORT), "1") == "refused"
        assert probe(wan, lossy, "connect", fast.addr, str(PORT), "5") == "ok", "others reach it"
        assert wan.heal() > 0, "the partition counted the packets it dropped"
        assert wan.dropped("loss") > 0
        assert probe(wan, slow_up, "connect", fast.addr, str(PORT), "5") == "ok"
    finally:
        for s in servers:
            s.kill()
            s.wait(10)


def test_leftovers_of_a_dead_run_are_removed() -> None:
    need_wan()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{PREFIX}-{dead.pid}-0-r"
    sh("ip", "netns", "add", stale)
    try:
        assert stale in clean_leftovers()
        assert stale not in namespaces()
    finally:
        sh("ip", "netns", "del", stale, check=False)
