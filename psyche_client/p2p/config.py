"""Tunables of the p2p layer, with the reason for each default (also in docs/p2p.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class P2PConfig:
    listen_host: str = "127.0.0.1"
    """Where libp2p and the fast path listen (an IPv4 or IPv6 literal; 0.0.0.0 / :: = all
    interfaces). The library default stays on loopback so tests never leave the machine;
    `psyche-client join` listens on all interfaces (`--listen`)."""
    listen_port: int = 0
    """libp2p TCP port (0 = any free port)."""
    public_host: str = ""
    """Host (IP or DNS name) peers are told to dial; "" = `addr.advertised_host`: the listen
    host if specific, else the local end of the route towards `route_hint`."""
    public_port: int = 0
    """Port peers are told (a forwarded port behind NAT); 0 = the port actually bound. The
    fast path is advertised on public_port + 1 when this is set."""
    route_hint: str = ""
    """The coordinator's host: picks the advertised address when listening on a wildcard."""
    fast_path: bool = True
    """Plain TCP for payloads: ~6-10x libp2p stream throughput here (bench/p2p_transfer.py)."""
    fast_port: int = 0
    """Fast-path TCP port (0 = any; `join --listen H:P` uses P+1)."""
    relay_service: bool = True
    """Act as a circuit relay v2 hop for members that cannot accept inbound connections
    (members only: the membership gate closes anyone else's connection)."""
    relay_reservations: int = 3
    """Keep a relay reservation at up to this many directly connected members, so peers that
    cannot dial this node directly can reach it through one of them (0 = never)."""
    hole_punch: bool = True
    """Try DCUtR (hole punching) on every relayed connection, so two NATed peers end up
    directly connected when their NATs allow it; the relay stays the fallback."""
    relay_max_circuits: int = 64
    """Relayed connections this node carries for others at once."""
    unreachable_after: float = 300.0
    """A fast-path dial that failed is not retried towards that peer for this long (libp2p
    streams, possibly relayed, are used instead): a NATed peer's advertised address would
    otherwise cost a connect timeout on every fetch."""
    fast_connect_timeout: float = 3.0
    """TCP connect of the fast path; short because libp2p is the fallback (3 s = two SYNs)."""
    fast_handshake_timeout: float = 10.0
    """The fast-path server's deadline for a connection's whole handshake (hello, signature and
    request), however slowly its bytes trickle in; the idle timeout alone is per receive."""
    fast_max_connections: int = 128
    fast_max_connections_per_ip: int = 16
    """Concurrent fast-path connections, in all and from one address (uploads themselves are
    capped by uploads_total/uploads_per_peer); over a cap a connection gets BUSY at once."""
    heartbeat_interval: int = 1
    """py-libp2p's default is 120 s, far too slow to repair a mesh within one round."""
    gossip_degree: int = 6
    gossip_degree_low: int = 4
    gossip_degree_high: int = 12
    connect_timeout: float = 10.0
    """Dial + Noise + Yamux handshakes take ms on loopback; 10 s covers a loaded 2-vCPU box."""
    idle_timeout: float = 10.0
    """A source that sends nothing for this long is dropped (a frozen peer blocks forever)."""
    fetch_timeout: float = 120.0
    """Upper bound for one payload over all sources: 100 MB at >= 1 MB/s."""
    rpc_timeout: float = 10.0
    max_payload_bytes: int = 512 << 20
    """Bounds the receive buffer allocated from an announcement's payload_size."""
    uploads_per_peer: int = 2
    uploads_total: int = 16
    """Bounded uploads: a fan-out of N fetchers gets BUSY and rotates to other holders."""
    reannounce_interval: float = 5.0
    """Re-publishes own live results so peers that missed the first gossip still learn them."""
    upload_rate_limit: float = 0.0
    """Bytes/s cap per upload (0 = none): lets an operator leave bandwidth for training
    traffic; tests use it to keep a transfer in flight long enough to kill its source."""
    busy_backoff: float = 0.2
    max_queue: int = 4096
    """Announcements waiting for the client loop; the oldest is dropped when full."""
    stop_timeout: float = 5.0
    """How long stop() waits for the trio thread before giving up (it is a daemon thread)."""
    max_pull_messages: int = 4096
