"""A P2PNode in its own process, driven by JSON lines on stdin (one reply line per command).

Tests start several of these so that every exchange crosses real sockets between processes
(and a process can be killed or frozen). Payloads are derived from a seed so the test knows
each one's sha256 without shipping it through the pipe.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import time
from typing import Any

from psyche_client.p2p import Announcement, NodeKey, P2PConfig, P2PNode
from psyche_client.p2p.messages import decode


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


class Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.key = NodeKey(bytes.fromhex(args.seed))
        members = {bytes.fromhex(m) for m in args.members.split(",") if m}
        config = P2PConfig(
            fast_path=not args.no_fast,
            idle_timeout=args.idle_timeout,
            fetch_timeout=args.fetch_timeout,
            connect_timeout=args.idle_timeout,
            rpc_timeout=args.idle_timeout,
            upload_rate_limit=args.rate,
            reannounce_interval=args.reannounce,
            listen_host=args.listen_host,
            route_hint=args.route_hint,
            hole_punch=not args.no_hole_punch,
        )
        self.node = P2PNode(self.key, args.run, is_member=members.__contains__, config=config)
        self.seen: dict[tuple[str, int, int], Announcement] = {}

    async def drain(self) -> None:
        """Index received announcements by (sender hex, step, batch)."""
        while not self.node.announcements.empty():
            a = self.node.announcements.get_nowait()
            self.seen[(a.sender.hex(), a.step, a.batch_id)] = a

    async def result_of(self, a: Announcement, timeout: float) -> dict[str, Any]:
        t0 = time.monotonic()
        try:
            data = await self.node.fetch(a, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            return {
                "sender": a.sender.hex(),
                "step": a.step,
                "batch": a.batch_id,
                "fetched": False,
                "error": repr(exc)[:300],
                "secs": time.monotonic() - t0,
            }
        return {
            "sender": a.sender.hex(),
            "step": a.step,
            "batch": a.batch_id,
            "fetched": True,
            "sha256": hashlib.sha256(data).hexdigest(),
            "secs": time.monotonic() - t0,
        }

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        node = self.node
        if op == "info":
            return {
                "node_id": node.node_id.hex(),
                "p2p_addr": node.p2p_addr,
                "fast_addr": node.fast_addr,
            }
        if op == "connect":
            return {"peer": (await node.connect(cmd["addr"])).hex()}
        if op == "step":
            node.set_step(cmd["step"])
            return {}
        if op == "publish":
            data = payload(cmd["seed"], cmd["size"])
            a = await node.publish(cmd["step"], cmd["batch"], data)
            return {"commitment": a.commitment.hex(), "raw": a.encode().hex()}
        if op == "fetch_raw":
            return await self.result_of(decode(bytes.fromhex(cmd["raw"])), cmd["timeout"])
        if op == "adopt":
            # Become a holder of someone else's result without fetching it: serve the same
            # bytes (or tampered ones) and announce HAVE, as a real holder would.
            await self.drain()
            a = self.seen[(cmd["sender"], cmd["step"], cmd["batch"])]
            copy = bytearray(payload(cmd["seed"], a.payload_size))
            if cmd.get("tamper"):
                copy[len(copy) // 2] ^= 0xFF
            node.serve(a.commitment, bytes(copy), a.step)
            have = a.as_have(self.key, node.p2p_addr, node.fast_addr)
            await node._gossip(have.encode())
            return {}
        if op == "tamper_publish":
            data = payload(cmd["seed"], cmd["size"])
            a = await node.publish(cmd["step"], cmd["batch"], data)
            bad = bytearray(data)
            bad[0] ^= 0xFF
            node.serve(a.commitment, bytes(bad), a.step)
            return {"commitment": a.commitment.hex()}
        if op == "wait_announcements":
            return {
                "found": await self.wait_for(
                    cmd["step"], cmd["count"], cmd["timeout"], cmd.get("pull_after", 5.0)
                )
            }
        if op == "collect":
            await self.wait_for(
                cmd["step"], cmd["count"], cmd["timeout"], cmd.get("pull_after", 5.0)
            )
            todo = [a for (s, st, b), a in self.seen.items() if st == cmd["step"]]
            results = await asyncio.gather(
                *(self.result_of(a, cmd.get("fetch_timeout", 60.0)) for a in todo)
            )
            return {"results": results}
        if op == "pull":
            return {"new": await node.pull(cmd["step"])}
        if op == "fetch":
            await self.drain()
            a = self.seen[(cmd["sender"], cmd["step"], cmd["batch"])]
            return await self.result_of(a, cmd["timeout"])
        if op == "share_model":
            config, tensors = model(cmd["seed"], cmd["tensors"], cmd["tensor_size"])
            m = node.share_model(config, tensors)
            return {"signer": m.signer.hex(), "total": m.total_bytes}
        if op == "fetch_model":
            snap = await node.fetch_model(
                [bytes.fromhex(p) for p in cmd["peers"]], parallel=cmd.get("parallel", 4)
            )
            return {
                "config": hashlib.sha256(snap.config).hexdigest(),
                "tensors": {k: hashlib.sha256(v).hexdigest() for k, v in snap.tensors.items()},
            }
        if op == "kinds":
            return {"kinds": {k.hex(): v for k, v in (await node.connection_kinds()).items()}}
        if op == "reservations":
            deadline = time.monotonic() + cmd.get("timeout", 30.0)
            while node.relay_reservations < cmd["at_least"] and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            return {"reservations": node.relay_reservations}
        if op == "stats":
            s = node.stats
            return {
                "accepted": s.accepted,
                "rejected": s.rejected,
                "fetched": s.fetched,
                "fetch_failed": s.fetch_failed,
                "transports": s.fetch_transports,
                "failures": s.fetch_failures,
                "resumed_bytes": s.resumed_bytes,
                "liars": sorted(n.hex() for n in s.liars),
                "uploads": node.uploads_served,
                "refused": node.refused_connections,
                "peers": [p.hex() for p in await node.connected_peers()],
            }
        raise ValueError(f"unknown op {op}")

    async def wait_for(self, step: int, count: int, timeout: float, pull_after: float) -> int:
        t0 = time.monotonic()
        pulled = False
        while True:
            await self.drain()
            found = sum(1 for (_s, st, _b) in self.seen if st == step)
            if found >= count or time.monotonic() - t0 > timeout:
                return found
            if not pulled and time.monotonic() - t0 > pull_after:
                pulled = True  # the round deadline passed: ask peers directly
                await self.node.pull(step)
                continue
            try:
                a = await asyncio.wait_for(self.node.announcements.get(), 0.2)
                self.seen[(a.sender.hex(), a.step, a.batch_id)] = a
            except TimeoutError:
                pass


def model(seed: int, n: int, size: int) -> tuple[bytes, dict[str, bytes]]:
    rng = random.Random(seed)
    config = json.dumps({"layers": n, "seed": seed}).encode()
    return config, {f"layer.{i}.weight": rng.randbytes(size) for i in range(n)}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", required=True)
    ap.add_argument("--members", required=True)
    ap.add_argument("--run", default="test-run")
    ap.add_argument("--no-fast", action="store_true")
    ap.add_argument("--idle-timeout", type=float, default=3.0)
    ap.add_argument("--fetch-timeout", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--reannounce", type=float, default=2.0)
    ap.add_argument("--listen-host", default="127.0.0.1")
    ap.add_argument("--route-hint", default="")
    ap.add_argument("--no-hole-punch", action="store_true")
    peer = Peer(ap.parse_args())
    await peer.node.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out_lock = asyncio.Lock()
    tasks: set[asyncio.Task[None]] = set()

    async def run(cmd: dict[str, Any]) -> None:
        try:
            reply = {"id": cmd["id"], "ok": True, **(await peer.handle(cmd))}
        except Exception as exc:  # noqa: BLE001 - reported to the test
            reply = {"id": cmd["id"], "ok": False, "error": repr(exc)}
        async with out_lock:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()

    sys.stdout.write(json.dumps({"id": 0, "ok": True, "ready": True}) + "\n")
    sys.stdout.flush()
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        task = asyncio.ensure_future(run(cmd))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for t in tasks:
        t.cancel()
    await peer.node.stop()


if __name__ == "__main__":
    asyncio.run(main())
