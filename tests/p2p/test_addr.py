"""Address parsing and the listen/advertise rules (no sockets except route lookups)."""

from __future__ import annotations

import pytest

from psyche_client.errors import UserError
from psyche_client.p2p.addr import (
    AddressError,
    HostPort,
    advertised_host,
    host_multiaddr,
    join_host_port,
    parse_host_port,
    route_source,
    split_host_port,
)
from psyche_client.p2p.endpoints import endpoints_from_flags


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("10.0.0.1:4000", HostPort("10.0.0.1", 4000)),
        ("[::1]:4000", HostPort("::1", 4000)),
        ("[::]:0", HostPort("::", 0)),
        ("[FD00:0::2]:7", HostPort("fd00::2", 7)),
        ("node.example.org:1", HostPort("node.example.org", 1)),
    ],
)
def test_parse_host_port(text: str, want: HostPort) -> None:
    assert parse_host_port(text) == want


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("999.999.999.999:1", "not a valid IPv4 address"),
        ("1.2.3.4:99999", "out of range"),
        ("1.2.3.4:x", "not a number"),
        ("1.2.3.4", "has no port"),
        ("::1:4000", "[ADDR]:PORT"),
        ("[::1", "missing ']'"),
        ("[1.2.3.4]:5", "only for IPv6"),
        ("[::g]:5", "not a valid IPv6"),
        ("bad_name!:5", "not an IP address or host name"),
        ("", "empty"),
    ],
)
def test_parse_errors_are_user_errors(text: str, needle: str) -> None:
    with pytest.raises(AddressError, match=needle.replace("[", r"\[")) as info:
        parse_host_port(text)
    assert isinstance(info.value, UserError)


def test_listen_addresses_must_be_ip_literals() -> None:
    with pytest.raises(AddressError, match="not an IP address"):
        parse_host_port("localhost:5", allow_names=False)
    assert parse_host_port(":5", empty_host="0.0.0.0") == HostPort("0.0.0.0", 5)


def test_formats_round_trip() -> None:
    assert host_multiaddr("::1", 5) == "/ip6/::1/tcp/5"
    assert host_multiaddr("10.1.2.3", 5) == "/ip4/10.1.2.3/tcp/5"
    assert host_multiaddr("a.example", 5) == "/dns/a.example/tcp/5"
    for host in ("::1", "10.1.2.3"):
        assert split_host_port(join_host_port(host, 77)) == (host, 77)


def test_advertised_host_rules() -> None:
    assert advertised_host("0.0.0.0", "pub.example", "10.9.9.9") == "pub.example"
    assert advertised_host("10.0.0.7", "", "127.0.0.1") == "10.0.0.7"
    # Wildcard: the local end of the route towards the coordinator; loopback only when the
    # coordinator is on loopback.
    assert advertised_host("0.0.0.0", "", "127.0.0.1") == "127.0.0.1"
    assert advertised_host("::", "", "::1") == "::1"
    assert route_source("127.0.0.1") == "127.0.0.1"
    default_route = route_source("192.0.2.1")
    if default_route is not None:  # a machine with a default route: never loopback
        assert advertised_host("0.0.0.0", "", "") == default_route
        assert not default_route.startswith("127.")


def test_endpoints_from_flags() -> None:
    ep = endpoints_from_flags(None, None, "10.1.0.1")
    assert (ep.listen_host, ep.listen_port, ep.fast_port) == ("0.0.0.0", 0, 0)
    assert ep.route_hint == "10.1.0.1" and ep.public_host == ""
    assert endpoints_from_flags(None, None, "fd00::1").listen_host == "::"
    ep = endpoints_from_flags("[::]:7000", "[2001:db8::5]:9000", "fd00::1")
    assert (ep.listen_host, ep.listen_port, ep.fast_port) == ("::", 7000, 7001)
    assert (ep.public_host, ep.public_port) == ("2001:db8::5", 9000)
    ep = endpoints_from_flags("10.0.0.2:7000", "pub.example", "10.1.0.1")
    assert (ep.public_host, ep.public_port) == ("pub.example", 0)
    with pytest.raises(AddressError, match="needs --listen with a fixed port"):
        endpoints_from_flags(None, "1.2.3.4:9000", "10.1.0.1")
    with pytest.raises(AddressError, match="PORT\\+1"):
        endpoints_from_flags("0.0.0.0:65535", None, "10.1.0.1")


def test_public_name_must_fit_the_peer_directory() -> None:
    assert endpoints_from_flags(None, "node-7.example.org", "").public_host == "node-7.example.org"
    long_name = ".".join(["abcdefghij"] * 7)  # 76 chars
    with pytest.raises(AddressError, match="peer directory holds 128 bytes"):
        endpoints_from_flags(None, long_name, "")
