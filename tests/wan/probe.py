"""Tiny TCP/UDP probes run inside namespaces to check what the simulated links do.

The machine has no ping or iperf, and the checks must not depend on them:

    probe.py serve PORT                  TCP echo/upload/download server and UDP echo
    probe.py rtt HOST PORT N             N 1-byte round trips; prints the median RTT in ms
    probe.py send HOST PORT BYTES        uploads BYTES; prints the Mbit/s seen by the receiver
    probe.py fetch HOST PORT BYTES       downloads BYTES; prints Mbit/s
    probe.py udp HOST PORT N             fraction of N datagrams the server (UDP echo) answers
    probe.py connect HOST PORT SECS      prints "ok" if a TCP connection opens within SECS

Every wait is bounded (SECS or 20 s), so a broken network makes a probe fail, not hang.
"""

from __future__ import annotations

import socket
import statistics
import struct
import sys
import threading
import time

TIMEOUT = 20.0


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(1 << 16, n - len(buf)))
        if not chunk:
            raise ConnectionError("closed early")
        buf += chunk
    return bytes(buf)


def _handle(conn: socket.socket) -> None:
    """One connection: b'E' echo bytes, b'U'+size: swallow size bytes, b'D'+size: send them."""
    conn.settimeout(TIMEOUT)
    with conn:
        while True:
            op = conn.recv(1)
            if not op:
                return
            if op == b"E":
                conn.sendall(b"e")
            elif op in (b"U", b"D"):
                (size,) = struct.unpack("!Q", _recv_exact(conn, 8))
                if op == b"U":
                    start = time.monotonic()
                    left = size
                    while left:
                        chunk = conn.recv(min(1 << 16, left))
                        if not chunk:
                            return
                        left -= len(chunk)
                    conn.sendall(struct.pack("!d", time.monotonic() - start))
                else:
                    conn.sendall(b"\0" * size)


def serve(port: int) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", port))
    threading.Thread(target=_udp_echo, args=(udp,), daemon=True).start()
    srv = socket.create_server(("0.0.0.0", port), reuse_port=True)
    print("listening", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_handle, args=(conn,), daemon=True).start()


def _udp_echo(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(data, peer)


def _connect(host: str, port: int) -> socket.socket:
    return socket.create_connection((host, port), timeout=TIMEOUT)


def rtt(host: str, port: int, n: int) -> float:
    with _connect(host, port) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(n):
            t = time.monotonic()
            s.sendall(b"E")
            _recv_exact(s, 1)
            times.append(time.monotonic() - t)
    return statistics.median(times) * 1000


def send(host: str, port: int, size: int) -> float:
    """Upload `size` bytes; the receiver's time from first to last byte gives the rate."""
    with _connect(host, port) as s:
        s.sendall(b"U" + struct.pack("!Q", size))
        block = b"\0" * (1 << 16)
        left = size
        while left:
            n = min(left, len(block))
            s.sendall(block[:n])
            left -= n
        (secs,) = struct.unpack("!d", _recv_exact(s, 8))
    return size * 8 / secs / 1e6


def fetch(host: str, port: int, size: int) -> float:
    with _connect(host, port) as s:
        s.sendall(b"D" + struct.pack("!Q", size))
        _recv_exact(s, 1)
        start = time.monotonic()
        _recv_exact(s, size - 1)
        secs = time.monotonic() - start
    return (size - 1) * 8 / secs / 1e6


def udp(host: str, port: int, n: int) -> float:
    """Fraction of `n` datagrams echoed back (each waited for up to 0.1 s)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        got = 0
        for i in range(n):
            s.sendto(struct.pack("!I", i), (host, port))
            try:
                while True:
                    data = s.recv(64)
                    if struct.unpack("!I", data)[0] == i:
                        got += 1
                        break
            except TimeoutError:
                pass
    return got / n


def connect(host: str, port: int, secs: float) -> bool:
    try:
        socket.create_connection((host, port), timeout=secs).close()
        return True
    except OSError:
        return False


def main(argv: list[str]) -> int:
    cmd, *args = argv
    if cmd == "serve":
        serve(int(args[0]))
    elif cmd == "rtt":
        print(f"{rtt(args[0], int(args[1]), int(args[2])):.2f}")
    elif cmd == "send":
        print(f"{send(args[0], int(args[1]), int(args[2])):.3f}")
    elif cmd == "fetch":
        print(f"{fetch(args[0], int(args[1]), int(args[2])):.3f}")
    elif cmd == "udp":
        print(f"{udp(args[0], int(args[1]), int(args[2])):.3f}")
    elif cmd == "connect":
        print("ok" if connect(args[0], int(args[1]), float(args[2])) else "refused")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
