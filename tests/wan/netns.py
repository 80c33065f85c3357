"""A small WAN in network namespaces: a router, hosts on shaped links, loss, NAT, partitions.

Why: the run must work across real networks, and the only way to test that on one machine, in
CI, is to give every process its own network stack and put a router with bad links between
them. Everything here is created by `Wan` and removed by `Wan.close()` (also on failure, through
the context manager); names carry this process's pid, so a crashed run's leftovers are found and
removed by the next one (`clean_leftovers`) and two runs never collide.

Topology (IPv4, private ranges, only inside these namespaces):

    host i (ns TAG-name, eth0 10.99.i.2/24) ─veth─ router (ns TAG-r, h<i> 10.99.i.1/24)
    NAT host: host (eth0 192.168.i.2/24) ─veth─ NAT box (lan0 192.168.i.1, eth0 10.99.i.2)
              ─veth─ router; the NAT box masquerades and refuses inbound connections.

Per link (`Link`): bandwidth each way (tbf on the egress of each end: the host's for upload,
the router's for download, so a link can be asymmetric), random loss (nftables `numgen` in the
router) and one-way latency (this kernel has no netem, fq or NFQUEUE: the router routes host
traffic through a TUN device served by `delayer.py`, a user-space delay line).

Needs root, `ip` (iproute2), `tc` and `nft`; `require()` says in one line what is missing.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

PREFIX = "psywan"
"""Every namespace this module creates is named `PREFIX-<pid>-<n>-...`."""
DELAYER = Path(__file__).with_name("delayer.py")
DELAY_DEV = "dly0"
DELAY_TABLE = 100
_counter = itertools.count()


class WanError(RuntimeError):
    """The simulated network could not be built or changed (the message says which command)."""


@dataclass(frozen=True)
class Link:
    """The access link of one host to the router."""

    up_mbit: float | None = None
    """Host → router rate cap (None: no cap)."""
    down_mbit: float | None = None
    """Router → host rate cap (None: no cap)."""
    delay_ms: float = 0.0
    """One-way latency added each way; a packet between two hosts gets both links' delay."""
    loss_pct: int = 0
    """Random loss of packets from and to this host, each way, in percent."""


@dataclass
class Host:
    """One endpoint of the WAN."""

    name: str
    ns: str
    addr: str
    """Its address inside its own namespace (what it binds to)."""
    public: str
    """The address the rest of the network sees: the NAT box's outside address if behind NAT."""
    index: int
    link: Link
    nat_ns: str | None = None
    router_if: str = ""


def require() -> None:
    """Raise WanError naming what is missing to build a WAN here (root, ip, tc, nft, tun)."""
    if os.geteuid() != 0:
        raise WanError("the WAN harness needs root (network namespaces, tc, nftables)")
    missing = [tool for tool in ("ip", "tc", "nft") if shutil.which(tool) is None]
    if missing:
        raise WanError(
            f"the WAN harness needs {', '.join(missing)} (Debian: iproute2, nftables; "
            "scripts/install-system-deps.sh installs them)"
        )
    if not Path("/dev/net/tun").exists():
        raise WanError("the WAN harness needs /dev/net/tun (the latency delayer uses a TUN device)")


def sh(*argv: str, stdin: str | None = None, check: bool = True) -> str:
    """Run a command; on failure raise WanError with the command and its stderr."""
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise WanError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def namespaces() -> list[str]:
    """Names of the network namespaces that exist now."""
    return [line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()]


def kill_namespace(ns: str) -> None:
    """SIGKILL every process still inside `ns` (all started by this harness), then delete it."""
    for pid in sh("ip", "netns", "pids", ns, check=False).split():
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass
    sh("ip", "netns", "del", ns, check=False)


def clean_leftovers() -> list[str]:
    """Delete this harness's namespaces whose creating process is gone; return their names."""
    gone = []
    for ns in namespaces():
        parts = ns.split("-")
        if parts[0] != PREFIX or len(parts) < 3 or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
            continue  # its creator is alive: another run in progress
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        kill_namespace(ns)
        gone.append(ns)
    return gone


def _tbf(ns: str, dev: str, mbit: float | None) -> None:
    """Cap the egress of `dev` in `ns` at `mbit` (None removes the cap)."""
    if mbit is None:
        sh("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root", check=False)
        return
    rate_bytes = mbit * 1e6 / 8
    burst = max(16_384, int(rate_bytes / 100))  # ≥ 10 ms of traffic at this rate
    sh(
        *("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf"),
        *("rate", f"{int(mbit * 1000)}kbit", "burst", str(burst), "latency", "100ms"),
    )


@dataclass
class Wan:
    """A router namespace and hosts attached to it; a context manager that tears all down."""

    tag: str = field(default_factory=lambda: f"{PREFIX}-{os.getpid()}-{next(_counter)}")
    hosts: dict[str, Host] = field(default_factory=dict)
    _created: list[str] = field(default_factory=list)
    _delayer: subprocess.Popen[str] | None = None
    _delayed: set[str] = field(default_factory=set)

    @property
    def router(self) -> str:
        return f"{self.tag}-r"

    def __enter__(self) -> Wan:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Check the tools, remove stale leftovers, create the router with its nft table."""
        require()
        clean_leftovers()
        self._netns(self.router)
        r = self.router
        self.exec(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for key in ("all", "default"):
            self.exec(r, "sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0")
        self.nft(
            r,
            f"""
            table inet wan {{
              chain partition {{ }}
              chain loss {{ }}
              chain pre {{
                type filter hook prerouting priority 0; policy accept;
                iifname "{DELAY_DEV}" accept
                jump partition
                jump loss
              }}
            }}
            """,
        )

    def add_host(self, name: str, link: Link | None = None, nat: bool = False) -> Host:
        """Create a host namespace joined to the router by a link (behind a NAT box if `nat`)."""
        if name in self.hosts or not re.fullmatch(r"[a-z][a-z0-9]{0,15}", name):
            raise WanError(f"host name {name!r} is taken or not [a-z][a-z0-9]{{0,15}}")
        i = len(self.hosts)
        if i > 250:
            raise WanError("at most 251 hosts (one 10.99.i.0/24 each)")
        link = link or Link()
        ns = f"{self.tag}-{name}"
        outside = f"10.99.{i}.2"
        router_if = f"h{i}"
        self._netns(ns)
        edge = ns
        if nat:
            edge = f"{ns}-nat"
            self._netns(edge)
        self._veth(self.router, router_if, edge)
        self._addr(self.router, router_if, f"10.99.{i}.1/24")
        self._addr(edge, "eth0", f"{outside}/24")
        self.exec(edge, "ip", "route", "add", "default", "via", f"10.99.{i}.1")
        addr = outside
        if nat:
            addr = f"192.168.{i}.2"
            self._veth(edge, "lan0", ns)
            self._addr(edge, "lan0", f"192.168.{i}.1/24")
            self._addr(ns, "eth0", f"{addr}/24")
            self.exec(ns, "ip", "route", "add", "default", "via", f"192.168.{i}.1")
            self._nat_box(edge)
        host = Host(name, ns, addr, outside, i, link, edge if nat else None, router_if)
        self.hosts[name] = host
        self.shape(name, link)
        return host

    def _nat_box(self, ns: str) -> None:
        """Masquerade the LAN behind `ns`'s eth0 and refuse every inbound connection."""
        self.exec(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.nft(
            ns,
            """
            table ip nat {
              chain post {
                type nat hook postrouting priority 100;
                oifname "eth0" masquerade
              }
            }
            table inet fw {
              chain through {
                type filter hook forward priority 0; policy drop;
                ct state established,related accept
                iifname "lan0" accept
              }
              chain local {
                type filter hook input priority 0; policy drop;
                ct state established,related accept
                iifname { "lo", "lan0" } accept
              }
            }
            """,
        )

    def shape(self, name: str, link: Link) -> None:
        """Apply `link` (rates, loss, delay) to host `name`, replacing what it had."""
        host = self.hosts[name]
        host.link = link
        _tbf(host.nat_ns or host.ns, "eth0", link.up_mbit)
        _tbf(self.router, host.router_if, link.down_mbit)
        self._write_loss()
        if link.delay_ms > 0 or self._delayer is not None:
            self._set_delay(host)

    def set_loss(self, name: str, pct: int) -> None:
        self.shape(name, replace(self.hosts[name].link, loss_pct=pct))

    def partition(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        """Drop every packet between the hosts of `side_a` and those of `side_b` (both ways)."""
        a, b = frozenset(side_a), frozenset(side_b)
        rules = []
        for x, y in ((a, b), (b, a)):
            src = ", ".join(self.hosts[n].public for n in sorted(x))
            dst = ", ".join(self.hosts[n].public for n in sorted(y))
            rules.append(
                f"add rule inet wan partition ip saddr {{ {src} }} ip daddr {{ {dst} }} "
                "counter drop"
            )
        self.nft(self.router, "\n".join(rules))

    def heal(self) -> int:
        """Remove every partition; return how many packets the partitions dropped."""
        dropped = self.dropped("partition")
        self.nft(self.router, "flush chain inet wan partition")
        return dropped

    def dropped(self, chain: str) -> int:
        """Packets dropped so far by the rules of `chain` ("partition" or "loss")."""
        listing = self.exec(self.router, "nft", "list", "chain", "inet", "wan", chain)
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", listing))

    def exec_argv(self, name_or_ns: str, argv: list[str]) -> list[str]:
        """The command line that runs `argv` inside host `name_or_ns` (or that namespace)."""
        ns = self.hosts[name_or_ns].ns if name_or_ns in self.hosts else name_or_ns
        return ["ip", "netns", "exec", ns, *argv]

    def exec(self, name_or_ns: str, *argv: str) -> str:
        """Run a short command inside a host or namespace; its stdout (WanError on failure)."""
        return sh(*self.exec_argv(name_or_ns, list(argv)))

    def popen(self, name: str, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start `argv` inside host `name` (the Popen's pid is the command's own pid)."""
        return subprocess.Popen(self.exec_argv(name, argv), **kwargs)  # type: ignore[call-overload, no-any-return]

    def nft(self, ns: str, script: str) -> None:
        sh(*self.exec_argv(ns, ["nft", "-f", "-"]), stdin=script)

    def close(self) -> None:
        """Stop the delayer, kill what still runs inside the namespaces, delete them."""
        if self._delayer is not None:
            self._delayer.kill()
            self._delayer.wait(10)
            self._delayer = None
        for ns in reversed(self._created):
            kill_namespace(ns)
        self._created.clear()

    # -- internals -------------------------------------------------------------------------

    def _netns(self, ns: str) -> None:
        sh("ip", "netns", "add", ns)
        self._created.append(ns)
        self.exec(ns, "ip", "link", "set", "lo", "up")

    def _veth(self, ns: str, dev: str, peer_ns: str) -> None:
        """A veth pair: `dev` in `ns`, `eth0` in `peer_ns` (created there: no name clashes)."""
        self.exec(ns, "ip", "link", "add", dev, "type", "veth", "peer", "eth0", "netns", peer_ns)

    def _addr(self, ns: str, dev: str, cidr: str) -> None:
        self.exec(ns, "ip", "addr", "add", cidr, "dev", dev)
        self.exec(ns, "ip", "link", "set", dev, "up")

    def _write_loss(self) -> None:
        lines = ["flush chain inet wan loss"]
        for host in self.hosts.values():
            pct = host.link.loss_pct
            if pct:
                for way in ("saddr", "daddr"):
                    lines.append(
                        f"add rule inet wan loss ip {way} {host.public} "
                        f"numgen random mod 100 < {pct} counter drop"
                    )
        self.nft(self.router, "\n".join(lines))

    def _set_delay(self, host: Host) -> None:
        """Route host traffic through the delayer (started once) and set `host`'s delay."""
        if self._delayer is None:
            self._delayer = self._start_delayer()
        for h in self.hosts.values():
            if h.router_if not in self._delayed:
                rule = ("ip", "rule", "add", "iif", h.router_if, "lookup", str(DELAY_TABLE))
                self.exec(self.router, *rule)
                self._delayed.add(h.router_if)
        assert self._delayer.stdin is not None
        self._delayer.stdin.write(f"{host.public}={host.link.delay_ms}\n")
        self._delayer.stdin.flush()

    def _start_delayer(self) -> subprocess.Popen[str]:
        r = self.router
        self.exec(r, "ip", "tuntap", "add", "dev", DELAY_DEV, "mode", "tun")
        self.exec(r, "ip", "link", "set", DELAY_DEV, "up")
        self.exec(r, "sysctl", "-qw", f"net.ipv4.conf.{DELAY_DEV}.rp_filter=0")
        self.exec(r, "ip", "route", "add", "default", "dev", DELAY_DEV, "table", str(DELAY_TABLE))
        proc = subprocess.Popen(
            self.exec_argv(r, [sys.executable, str(DELAYER), DELAY_DEV]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            proc.kill()
            proc.wait(10)
            raise WanError(f"the latency delayer did not start (it said {line!r})")
        return proc


def is_private(addr: str) -> bool:
    """True for an address in a private range (every address this module assigns)."""
    return ipaddress.ip_address(addr).is_private
