"""Can peers reach this client? What `doctor` can tell without a peer to dial back.

- `--listen` binds (both the libp2p port and the payload fast path on PORT+1, when fixed);
- the address peers will be told (`p2p.addr.advertised_host`, the same rule `join` uses) is
  not loopback when the coordinator is elsewhere, and not a private address when the
  coordinator sees us from a public one (a NAT: peers outside cannot dial in);
- the TCP coordinator's view of our address (`observed_host` in its welcome) matches what we
  advertise. A full dial-back test needs a peer outside the network, which doctor lacks.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from psyche_client.doctor.report import Check, fail, ok, warn


def _private(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_private or ip.is_link_local


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _bind(host: str, port: int) -> tuple[int, str | None]:
    """Bind a TCP socket as libp2p would; (bound port, None) or (port, the reason it failed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return port, os.strerror(e.errno) if e.errno else str(e)
        return int(s.getsockname()[1]), None


def p2p_checks(
    listen: str | None, public_addr: str | None, coordinator_host: str, observed_host: str
) -> list[Check]:
    """The `--listen` bind and the advertised address (see the module docstring)."""
    from psyche_client.errors import UserError
    from psyche_client.p2p.addr import advertised_host
    from psyche_client.p2p.endpoints import endpoints_from_flags

    route = "127.0.0.1" if coordinator_host == "localhost" else coordinator_host
    if route and not _is_ip(route):
        from psyche_client.p2p.addr import AddressError, resolve

        try:  # a name: its address, so private/loopback comparisons below mean something
            route = resolve(route)
        except AddressError:
            route = ""  # the coordinator check says so; detect from the default route instead
    try:
        ep = endpoints_from_flags(listen, public_addr, route)
    except UserError as e:
        return [fail("p2p", str(e), "fix --listen / --public-addr (see docs/operator.md)")]
    bound, error = _bind(ep.listen_host, ep.listen_port)
    where = f"{ep.listen_host}:{ep.listen_port or 'any'}"
    if error is not None:
        return [fail("p2p", f"cannot listen on {where}: {error}", "pick another --listen port")]
    if ep.fast_port:
        _, error = _bind(ep.listen_host, ep.fast_port)
        if error is not None:
            return [
                fail(
                    "p2p",
                    f"cannot listen on the fast path port {ep.fast_port} (PORT+1): {error}",
                    "pick a --listen PORT whose PORT+1 is free too",
                )
            ]
    checks = [ok("p2p", f"can listen on {where} (fast path on PORT+1)")]
    advertised = advertised_host(ep.listen_host, ep.public_host, ep.route_hint)
    port = ep.public_port or ep.listen_port or bound
    checks.append(_reach_check(advertised, port, route, observed_host, bool(ep.public_host)))
    return checks


def _reach_check(
    advertised: str, port: int, coordinator: str, observed: str, explicit: bool
) -> Check:
    told = f"peers will dial {advertised}"
    forward = (
        f"forward TCP ports PORT and PORT+1 to this machine, then pass --listen 0.0.0.0:PORT "
        f"--public-addr {observed or 'PUBLIC_IP'}:PORT"
    )
    if _loopback(advertised) and coordinator and not _loopback(coordinator):
        return fail("reach", f"{told}, a loopback address", "pass --public-addr HOST")
    if observed and observed == advertised:
        return ok("reach", f"{told}; the coordinator sees this machine there too")
    if observed and not _loopback(observed):
        if _private(advertised) and not _private(observed):
            return warn(
                "reach",
                f"{told}, a private address; the coordinator sees this machine as {observed} "
                "(behind NAT): peers outside this network cannot dial in",
                forward,
            )
        if explicit:
            return ok("reach", f"{told} (--public-addr); the coordinator sees {observed}")
        return warn(
            "reach",
            f"{told}, but the coordinator sees this machine as {observed}",
            f"if peers cannot reach {advertised}, pass --public-addr {observed}",
        )
    public_coordinator = bool(coordinator) and _is_ip(coordinator) and not _private(coordinator)
    if _private(advertised) and not _loopback(advertised) and public_coordinator:
        return warn(
            "reach", f"{told}, a private address, for a coordinator on the internet", forward
        )
    return ok("reach", told)
