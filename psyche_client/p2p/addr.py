"""Network addresses of a node: parsing `HOST:PORT`, multiaddrs, and the address to advertise.

Why a module of its own: a node listens on one address (often a wildcard such as 0.0.0.0 or ::)
but must tell peers another (the one they can reach), and every entry point (the CLI flags, the
p2p host, the fast path, the coordinator's directory) has to agree on one notation, IPv4 and
IPv6 alike. Parsing raises `AddressError` (a `UserError`), so a bad flag is one line in the CLI.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from psyche_client.errors import UserError

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
WILDCARDS = ("0.0.0.0", "::")
LOOPBACKS = ("127.0.0.1", "::1")


class AddressError(UserError, ValueError):
    """A host, port or HOST:PORT that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class HostPort:
    """A host (IP literal or DNS name, no brackets) and a port (0: not given / any)."""

    host: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return join_host_port(self.host, self.port)


def join_host_port(host: str, port: int) -> str:
    """`1.2.3.4:5`, `[::1]:5`, `example.org:5`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_port(port: int, what: str = "port") -> int:
    if not 0 <= port <= 65535:
        raise AddressError(f"{what} {port} is out of range (0-65535)")
    return port


def check_host(host: str, *, allow_names: bool = True, what: str = "host") -> str:
    """An IPv4/IPv6 literal (normalised) or, if allowed, a DNS name. `999.999.999.999` is an
    error, not a name: anything made of digits and dots must be a valid IPv4 address."""
    if not host:
        raise AddressError(f"{what} is empty")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if ":" in host:
        raise AddressError(f"{what} {host!r} is not a valid IPv6 address")
    if re.fullmatch(r"[0-9.]+", host):
        raise AddressError(f"{what} {host!r} is not a valid IPv4 address")
    name = host.rstrip(".")
    if not allow_names or len(name) > 253 or not all(_LABEL.match(p) for p in name.split(".")):
        kind = "an IP address" if not allow_names else "an IP address or host name"
        raise AddressError(f"{what} {host!r} is not {kind}")
    return name


def parse_host_port(
    text: str,
    *,
    default_port: int | None = None,
    allow_names: bool = True,
    empty_host: str = "",
    what: str = "address",
) -> HostPort:
    """Parse `HOST:PORT`, `[IPV6]:PORT`, or (when `default_port` is given) a bare host or
    `[IPV6]`. A bare IPv6 literal without brackets (`::1`) is accepted when no port may follow.
    `:PORT` means `empty_host` when one is given (e.g. 0.0.0.0 for a listen address)."""
    text = text.strip()
    if not text:
        raise AddressError(f"{what} is empty")
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AddressError(f"{what} {text!r}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise AddressError(f"{what} {text!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
        if ":" not in host:
            raise AddressError(f"{what} {text!r}: brackets are only for IPv6 addresses")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        host = host or empty_host
    elif text.count(":") > 1:
        if default_port is None:
            raise AddressError(f"{what} {text!r}: write an IPv6 address as [ADDR]:PORT")
        host = text
    if port_text == "" and (text.endswith(":") or default_port is None):
        raise AddressError(f"{what} {text!r} has no port (expected HOST:PORT)")
    if port_text:
        if not port_text.isdigit():
            raise AddressError(f"{what} {text!r}: port {port_text!r} is not a number")
        port = check_port(int(port_text), f"{what} {text!r}: port")
    else:
        port = default_port or 0
    return HostPort(check_host(host, allow_names=allow_names, what=f"{what} {text!r}: host"), port)


def host_multiaddr(host: str, port: int) -> str:
    """`/ip4/H/tcp/P`, `/ip6/H/tcp/P` or `/dns/H/tcp/P` (no peer id)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"/dns/{host}/tcp/{port}"
    return f"/ip{ip.version}/{ip}/tcp/{port}"


def split_host_port(addr: str) -> tuple[str, int]:
    """Inverse of `join_host_port` for addresses peers send (fast_addr); raises ValueError."""
    if addr.startswith("["):
        host, _, port = addr[1:].partition("]:")
    else:
        host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad host:port {addr!r}")
    return host, int(port)


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def is_wildcard(host: str) -> bool:
    return host in WILDCARDS


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def resolve(host: str, family: int = 0) -> str:
    """One IP address for `host` (literals are returned as they are); AddressError if none."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
    except OSError as exc:
        raise AddressError(f"cannot resolve {host!r}: {exc}") from None
    if not infos:
        raise AddressError(f"cannot resolve {host!r}")
    return str(infos[0][4][0])


def route_source(target: str, family: int = 0) -> str | None:
    """The local address the kernel would use to reach `target` (a host name or IP), found by
    connect() on a UDP socket: this only selects a route, no packet is sent. None if there is
    no route (or the name does not resolve)."""
    try:
        ip = resolve(target, family)
    except AddressError:
        return None
    fam = family_of(ip)
    try:
        with socket.socket(fam, socket.SOCK_DGRAM) as sock:
            sock.connect((ip, 9))
            return str(sock.getsockname()[0]).split("%")[0]
    except OSError:
        return None


def advertised_host(listen_host: str, public_host: str, route_hint: str) -> str:
    """What peers are told to dial. In order: the operator's public host; the listen host when
    it is a specific address; the local end of the route towards `route_hint` (the
    coordinator), which is loopback only when the coordinator is; the default route's source
    address; loopback as the last resort (a single-machine run)."""
    if public_host:
        return public_host
    if not is_wildcard(listen_host):
        return listen_host
    v6 = listen_host == "::"
    if route_hint:
        found = route_source(route_hint, socket.AF_INET6 if v6 else socket.AF_INET)
        if found:
            return found
    # No coordinator to aim at: any global address of the right family (no packet is sent).
    found = route_source("2001:db8::1" if v6 else "192.0.2.1")
    return found or ("::1" if v6 else "127.0.0.1")
