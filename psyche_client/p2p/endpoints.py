"""From `--listen` / `--public-addr` to the p2p settings of one client.

Kept apart from the CLI so the rules (which port the fast path takes, what is advertised when
nothing is given) are one function with tests, and from `addr` so that module stays pure
parsing. Imports nothing heavy: the CLI validates its flags with this before torch or libp2p.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .addr import AddressError, check_host, host_multiaddr, parse_host_port
from .config import P2PConfig


@dataclass(frozen=True)
class Endpoints:
    """Where a client listens and what it tells peers (see docs/operator.md "Network")."""

    listen_host: str
    listen_port: int
    fast_port: int
    public_host: str
    public_port: int
    route_hint: str

    def apply(self, config: P2PConfig) -> P2PConfig:
        return dataclasses.replace(
            config,
            listen_host=self.listen_host,
            listen_port=self.listen_port,
            fast_port=self.fast_port,
            public_host=self.public_host,
            public_port=self.public_port,
            route_hint=self.route_hint,
        )


def endpoints_from_flags(
    listen: str | None, public_addr: str | None, coordinator: str
) -> Endpoints:
    """`listen`: HOST:PORT or None (all interfaces, IPv6 ones if the coordinator is an IPv6
    address, any port). A fixed PORT puts the fast path on PORT+1. `public_addr`: HOST[:PORT]
    or None (detected from the route towards `coordinator`, the coordinator's host). With a
    public PORT, the fast path is advertised on PORT+1 too (forward both)."""
    coordinator_v6 = ":" in coordinator
    if listen is None:
        listen_host, listen_port = ("::" if coordinator_v6 else "0.0.0.0"), 0
    else:
        hp = parse_host_port(listen, allow_names=False, empty_host="0.0.0.0", what="--listen")
        listen_host, listen_port = hp.host, hp.port
    if listen_port == 65535:
        raise AddressError("--listen port 65535 leaves no port for the fast path (PORT+1)")
    public_host, public_port = "", 0
    if public_addr is not None:
        hp = parse_host_port(public_addr, default_port=0, what="--public-addr")
        public_host, public_port = hp.host, hp.port
        if public_port == 65535:
            raise AddressError("--public-addr port 65535 leaves no port for the fast path")
        if public_port and not listen_port:
            raise AddressError(
                "--public-addr with a port needs --listen with a fixed port "
                "(forward PORT and PORT+1 to it)"
            )
    if public_host:
        check_fits_directory(public_host)
    route_hint = check_host(coordinator, what="coordinator host") if coordinator else ""
    return Endpoints(
        listen_host=listen_host,
        listen_port=listen_port,
        fast_port=listen_port + 1 if listen_port else 0,
        public_host=public_host,
        public_port=public_port,
        route_hint=route_hint,
    )


PEER_ID_CHARS = 52
"""Length of an ed25519 libp2p peer id in base58 (12D3KooW...)."""


def check_fits_directory(public_host: str) -> None:
    """The advertised multiaddr must fit the run's peer directory: 128 bytes per address on
    Solana (`_core.PEER_ADDR_BYTES`; the TCP server allows 256), so a long DNS name is refused
    here rather than by every `advertise` later."""
    from psyche_client import _core

    limit = int(_core.PEER_ADDR_BYTES)
    longest = len(host_multiaddr(public_host, 65535)) + len("/p2p/") + PEER_ID_CHARS
    if longest > limit:
        raise AddressError(
            f"--public-addr {public_host!r} makes a {longest}-byte address; the run's peer "
            f"directory holds {limit} bytes (use an IP address or a shorter name)"
        )
