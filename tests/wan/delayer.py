"""A user-space delay line for IP packets: this kernel has no netem (and no NFQUEUE).

Run inside the router namespace, attached to a TUN device (`ip tuntap add dev NAME mode tun`).
The router's policy routing sends every packet that arrives from a host link into the TUN
device; this process reads it, holds it for the one-way delay of its source's link plus that of
its destination's link, and writes it back, where the kernel receives it as coming in on the TUN
device and routes it normally (the main table) to its destination link.

A fixed delay per (source, destination) keeps each flow in order, so TCP sees latency, not
reordering. The held queue is bounded (`MAX_HELD`); beyond it packets are dropped, as a full
router queue would.

Usage: `python delayer.py DEV [ADDR=MS ...]` (ADDR an IPv4 or IPv6 address, MS the one-way
delay of that address's access link). More `ADDR=MS` lines on stdin add or change delays while
it runs; end of stdin (its parent gone) stops it. Prints `ready` once attached.
"""

from __future__ import annotations

import fcntl
import heapq
import ipaddress
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_HELD = 20_000
"""Packets held at once: 20k MTU packets is 30 MB, several seconds of every link here."""
READ_SIZE = 65_536


def attach(dev: str) -> int:
    """Open the TUN device `dev` (created persistent by `ip tuntap`), non-blocking."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def endpoints(packet: bytes) -> tuple[bytes, bytes] | None:
    """(source, destination) address bytes of an IPv4 or IPv6 packet, None if neither."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= 20:
        return packet[12:16], packet[16:20]
    if version == 6 and len(packet) >= 40:
        return packet[8:24], packet[24:40]
    return None


def parse_delays(args: list[str]) -> dict[bytes, float]:
    """`ADDR=MS` arguments → packed address → one-way delay in seconds."""
    out: dict[bytes, float] = {}
    for arg in args:
        addr, _, ms = arg.partition("=")
        out[ipaddress.ip_address(addr).packed] = float(ms) / 1000.0
    return out


def serve(fd: int, delays: dict[bytes, float]) -> None:
    """Until stdin closes: read packets, hold each for its delay, write it back in due order."""
    held: list[tuple[float, int, bytes]] = []
    seq = 0
    control = sys.stdin.fileno()
    pending = b""
    while True:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else None
        readable, _, _ = select.select([fd, control], [], [], timeout)
        now = time.monotonic()
        if control in readable:
            chunk = os.read(control, 4096)
            if not chunk:
                return
            pending += chunk
            lines, _, pending = pending.rpartition(b"\n")
            delays.update(parse_delays(lines.decode().split()))
        if fd in readable:
            while True:
                try:
                    packet = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    break
                ends = endpoints(packet)
                delay = delays.get(ends[0], 0.0) + delays.get(ends[1], 0.0) if ends else 0.0
                if len(held) < MAX_HELD:
                    seq += 1
                    heapq.heappush(held, (now + delay, seq, packet))
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, packet = heapq.heappop(held)
            try:
                os.write(fd, packet)
            except OSError:
                pass  # a packet the kernel refuses is lost, like any dropped packet


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        print(__doc__, file=sys.stderr)
        return 2
    fd = attach(argv[0])
    delays = parse_delays(argv[1:])
    print("ready", flush=True)
    serve(fd, delays)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
