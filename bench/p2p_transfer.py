"""Benchmark of the p2p result path on one machine (loopback), between processes.

Prints, then a last line of key=value pairs:
  tcp_MBps          plain asyncio TCP socket, 64 MB, sock_sendall -> sock_recv_into a new buffer
  fast_MBps         64 MB through P2PNode.fetch over the fast path (handshake, copy, sha256)
  libp2p_MBps       64 MB through P2PNode.fetch over libp2p streams (Noise + Yamux) only
  throughput_ratio  fast_MBps / tcp_MBps (goal >= 0.5)
  cpu_s_per_MB      receiver CPU seconds per MB on the fast path (libp2p: cpu_s_per_MB_libp2p)
  fanout_s          8 receiver processes each fetching one 16 MB result from one announcer
Best of --repeat runs for the 64 MB figures; TCP and fast path alternate run by run.
Run: .venv/bin/python bench/p2p_transfer.py

--relay: instead, sender and receiver advertise addresses nobody can dial (as clients behind
NAT do) and reach each other only through a third process acting as circuit relay v2; prints
  relayed_MBps      --size-mb through P2PNode.fetch over the relayed libp2p connection
  direct_libp2p_MBps  the same payload size between two directly connected nodes, libp2p only
  relay_ratio       relayed_MBps / direct_libp2p_MBps
Run: .venv/bin/python bench/p2p_transfer.py --relay --size-mb 16
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import time
from multiprocessing.connection import Connection
from typing import Any

from psyche_client.p2p import NodeKey, P2PConfig, P2PNode
from psyche_client.p2p.messages import decode

MB = 1_000_000
RUN = "bench"


# ---- child processes ---------------------------------------------------------------------


def _tcp_sender(conn: Connection, size: int) -> None:
    """Plain TCP sender: raw socket, one sock_sendall of the whole buffer per connection."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        data = memoryview(os.urandom(size))
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        conn.send(listener.getsockname()[1])

        async def serve() -> None:
            while True:
                s, _ = await loop.sock_accept(listener)
                s.setblocking(False)
                await loop.sock_sendall(s, data)
                s.close()

        task = asyncio.ensure_future(serve())
        await asyncio.to_thread(conn.recv)
        task.cancel()
        listener.close()

    asyncio.run(main())


UNDIALABLE = {
    "public_host": "127.0.0.1",
    "public_port": 1,
    "connect_timeout": 3.0,
    "hole_punch": False,
}
"""Advertise 127.0.0.1:1 (nothing listens there): like a NATed client's private address. No hole
punching: on loopback it would find the real ports and bypass the relay being measured."""


def _node_proc(
    conn: Connection, seed: bytes, members: list[bytes], fast: bool, extra: dict[str, Any]
) -> None:
    """A node that publishes what it is told to and fetches what it is told to."""

    async def main() -> None:
        node = P2PNode(
            NodeKey(seed),
            RUN,
            is_member=set(members).__contains__,
            config=P2PConfig(fast_path=fast, uploads_per_peer=4, uploads_total=32, **extra),
        )
        await node.start()
        node.set_step(1)
        conn.send({"p2p": node.p2p_addr})
        while True:
            cmd: dict[str, Any] = await asyncio.to_thread(conn.recv)
            if cmd["op"] == "quit":
                break
            if cmd["op"] == "connect":
                await node.connect(cmd["addr"])
                conn.send({})
            elif cmd["op"] == "reserved":
                while not node.relay_reservations:
                    await asyncio.sleep(0.05)
                conn.send({})
            elif cmd["op"] == "kinds":
                conn.send({k.hex(): v for k, v in (await node.connection_kinds()).items()})
            elif cmd["op"] == "publish":
                base = os.urandom(cmd["size"])
                raws = []
                for i in range(cmd["count"]):
                    payload = i.to_bytes(8, "big") + base[8:]
                    raws.append((await node.publish(1, i, payload)).encode())
                conn.send({"raws": raws})
            elif cmd["op"] == "fetch":
                ann = decode(cmd["raw"])
                t0, c0 = time.perf_counter(), time.process_time()
                data = await node.fetch(ann, timeout=300)
                conn.send(
                    {
                        "secs": time.perf_counter() - t0,
                        "cpu": time.process_time() - c0,
                        "size": len(data),
                    }
                )
        await node.stop()

    asyncio.run(main())


# ---- measurements ------------------------------------------------------------------------


async def _recv(conn: Connection) -> Any:
    return await asyncio.to_thread(conn.recv)


async def _tcp_once(port: int, size: int) -> float:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    t0 = time.perf_counter()
    # A fresh buffer per message, as any receiver of a new payload needs.
    buf = bytearray(size)
    view = memoryview(buf)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    pos = 0
    while pos < size:
        n = await loop.sock_recv_into(sock, view[pos:])
        if n == 0:
            break
        pos += n
    secs = time.perf_counter() - t0
    sock.close()
    assert pos == size
    return size / MB / secs


async def paired(size: int, repeat: int) -> tuple[float, float, float]:
    """Best MB/s of plain TCP and of the fast result path, measured alternately so that load
    from other processes on this shared machine hits both alike; plus CPU s/MB of the latter."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    tcp_proc = ctx.Process(target=_tcp_sender, args=(child, size))
    tcp_proc.start()
    port = await _recv(parent)
    procs, conns, _ = _spawn_nodes(2, [True, True])
    sender, receiver = conns
    addrs = [await _recv(c) for c in conns]
    receiver.send({"op": "connect", "addr": addrs[0]["p2p"]})
    await _recv(receiver)
    sender.send({"op": "publish", "size": size, "count": repeat})
    raws = (await _recv(sender))["raws"]
    tcp, fast, cpu = 0.0, 0.0, float("inf")
    for raw in raws:
        tcp = max(tcp, await _tcp_once(port, size))
        receiver.send({"op": "fetch", "raw": raw})
        r = await _recv(receiver)
        assert r["size"] == size
        fast = max(fast, size / MB / r["secs"])
        cpu = min(cpu, r["cpu"] / (size / MB))
    parent.send("quit")
    tcp_proc.join(10)
    await _close(procs, conns)
    return tcp, fast, cpu


def _spawn_nodes(
    n: int, fast: list[bool], extra: list[dict[str, Any]] | None = None
) -> tuple[list[Any], list[Connection], list[bytes]]:
    ctx = mp.get_context("spawn")
    keys = [NodeKey.generate() for _ in range(n)]
    members = [k.node_id for k in keys]
    procs, conns = [], []
    for i, k in enumerate(keys):
        parent, child = ctx.Pipe()
        opts = extra[i] if extra else {}
        p = ctx.Process(target=_node_proc, args=(child, k.seed, members, fast[i], opts))
        p.start()
        procs.append(p)
        conns.append(parent)
    return procs, conns, members


async def _close(procs: list[Any], conns: list[Connection]) -> None:
    for c in conns:
        c.send({"op": "quit"})
    for p in procs:
        await asyncio.to_thread(p.join, 20)
        if p.is_alive():
            p.kill()


async def result_path(size: int, repeat: int, fast: bool) -> tuple[float, float]:
    """Best MB/s and CPU s/MB (receiver process) of P2PNode.fetch from another process."""
    procs, conns, _ = _spawn_nodes(2, [fast, True])
    sender, receiver = conns
    addrs = [await _recv(c) for c in conns]
    receiver.send({"op": "connect", "addr": addrs[0]["p2p"]})
    await _recv(receiver)
    sender.send({"op": "publish", "size": size, "count": repeat})
    raws = (await _recv(sender))["raws"]
    best, cpu = 0.0, float("inf")
    for raw in raws:
        receiver.send({"op": "fetch", "raw": raw})
        r = await _recv(receiver)
        assert r["size"] == size
        best = max(best, size / MB / r["secs"])
        cpu = min(cpu, r["cpu"] / (size / MB))
    await _close(procs, conns)
    return best, cpu


async def fanout(receivers: int, size: int) -> float:
    procs, conns, _ = _spawn_nodes(receivers + 1, [True] * (receivers + 1))
    addrs = [await _recv(c) for c in conns]
    for i, c in enumerate(conns[1:], start=1):
        c.send({"op": "connect", "addr": addrs[0]["p2p"]})
        await _recv(c)
        if i > 1:  # also a ring among receivers, so HAVEs spread and holders can serve
            c.send({"op": "connect", "addr": addrs[i - 1]["p2p"]})
            await _recv(c)
    conns[0].send({"op": "publish", "size": size, "count": 1})
    raw = (await _recv(conns[0]))["raws"][0]
    await asyncio.sleep(2)  # let gossip meshes form, as they would have mid-run
    t0 = time.perf_counter()
    for c in conns[1:]:
        c.send({"op": "fetch", "raw": raw})
    for c in conns[1:]:
        r = await _recv(c)
        assert r["size"] == size
    secs = time.perf_counter() - t0
    await _close(procs, conns)
    return secs


async def relayed(size: int, repeat: int) -> tuple[float, list[str]]:
    """Best MB/s of a fetch between two undialable nodes through a relay process, and the
    receiver's connection kinds (to show it really was relayed)."""
    procs, conns, members = _spawn_nodes(3, [True, True, True], [{}, UNDIALABLE, UNDIALABLE])
    relay, sender, receiver = conns
    addrs = [await _recv(c) for c in conns]
    for c in (sender, receiver):
        c.send({"op": "connect", "addr": addrs[0]["p2p"]})
        await _recv(c)
        c.send({"op": "reserved"})
        await _recv(c)
    sender.send({"op": "publish", "size": size, "count": repeat})
    raws = (await _recv(sender))["raws"]
    best = 0.0
    for raw in raws:
        receiver.send({"op": "fetch", "raw": raw})
        r = await _recv(receiver)
        assert r["size"] == size
        best = max(best, size / MB / r["secs"])
    receiver.send({"op": "kinds"})
    kinds = await _recv(receiver)
    await _close(procs, conns)
    return best, [kinds.get(members[0].hex(), "-"), kinds.get(members[1].hex(), "-")]


async def relay_main(size: int, repeat: int) -> None:
    rel, kinds = await relayed(size, repeat)
    print(f"relayed (receiver -> relay {kinds[0]}, -> sender {kinds[1]}): {rel:.1f} MB/s")
    direct, _ = await result_path(size, repeat, fast=False)
    print(f"direct, libp2p only: {direct:.1f} MB/s", flush=True)
    assert kinds[1] == "relayed", kinds
    print(f"relayed_MBps={rel:.1f} direct_libp2p_MBps={direct:.1f} relay_ratio={rel / direct:.2f}")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fanout", type=int, default=8)
    ap.add_argument("--fanout-mb", type=int, default=16)
    ap.add_argument("--relay", action="store_true", help="relayed vs direct libp2p only")
    args = ap.parse_args()
    size = args.size_mb * MB
    if args.relay:
        await relay_main(size, args.repeat)
        return
    tcp, fast, cpu_fast = await paired(size, args.repeat)
    print(f"plain asyncio TCP: {tcp:.0f} MB/s", flush=True)
    print(f"result path, fast path: {fast:.0f} MB/s, {cpu_fast * 1000:.2f} ms CPU/MB", flush=True)
    lp, cpu_lp = await result_path(size, 1, fast=False)
    print(f"result path, libp2p only: {lp:.0f} MB/s, {cpu_lp * 1000:.2f} ms CPU/MB", flush=True)
    fan = await fanout(args.fanout, args.fanout_mb * MB)
    print(f"fan-out: {args.fanout} receivers x {args.fanout_mb} MB in {fan:.2f} s", flush=True)
    print(
        f"tcp_MBps={tcp:.0f} fast_MBps={fast:.0f} libp2p_MBps={lp:.0f} "
        f"throughput_ratio={fast / tcp:.2f} cpu_s_per_MB={cpu_fast:.5f} "
        f"cpu_s_per_MB_libp2p={cpu_lp:.5f} fanout_s={fan:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
