"""Fixtures for p2p tests: peer processes (tests/p2p/peer.py) driven over JSON lines."""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from psyche_client.p2p import NodeKey

PEER_SCRIPT = Path(__file__).with_name("peer.py")
REPO = Path(__file__).resolve().parents[2]


class PeerProc:
    """One peer process; `call` sends a command and waits for its reply."""

    def __init__(
        self, key: NodeKey, members: list[bytes], *extra: str, prefix: tuple[str, ...] = ()
    ) -> None:
        """`prefix`: e.g. ("ip", "netns", "exec", NS) to run the peer in a network namespace."""
        self.key = key
        self.node_id = key.node_id.hex()
        args = [
            *prefix,
            sys.executable,
            str(PEER_SCRIPT),
            "--seed",
            key.seed.hex(),
            "--members",
            ",".join(m.hex() for m in members),
            *extra,
        ]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=REPO,
        )
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._ready: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.p2p_addr = ""
        self.fast_addr = ""

    def wait_ready(self) -> PeerProc:
        self._ready.get(timeout=60)
        info = self.call("info")
        self.p2p_addr = info["p2p_addr"]
        self.fast_addr = info["fast_addr"]
        return self

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # stray output from a library; replies are JSON lines
            if msg["id"] == 0:
                self._ready.put(msg)
                continue
            with self._lock:
                q = self._replies.setdefault(msg["id"], queue.Queue())
            q.put(msg)

    def send(self, op: str, **kw: Any) -> int:
        cid = next(self._ids)
        with self._lock:
            self._replies.setdefault(cid, queue.Queue())
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": cid, "op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        return cid

    def wait(self, cid: int, timeout: float = 90.0) -> dict[str, Any]:
        with self._lock:
            q = self._replies.setdefault(cid, queue.Queue())
        reply = q.get(timeout=timeout)
        return reply

    def call(self, op: str, wait_s: float = 90.0, **kw: Any) -> dict[str, Any]:
        reply = self.wait(self.send(op, **kw), wait_s)
        assert reply["ok"], reply
        return reply

    def freeze(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait(10)

    def request_quit(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit", "id": -1}) + "\n")
                self.proc.stdin.flush()
            except OSError:
                pass

    def close(self) -> None:
        self.request_quit()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Swarm:
    """Creates peers that all know the same member list (plus optional outsiders)."""

    def __init__(self, n_members: int) -> None:
        self.keys = [NodeKey.generate() for _ in range(n_members)]
        self.members = [k.node_id for k in self.keys]
        self.peers: list[PeerProc] = []

    def spawn(self, index: int, *extra: str) -> PeerProc:
        peer = PeerProc(self.keys[index], self.members, *extra)
        self.peers.append(peer)
        return peer.wait_ready()

    def spawn_many(self, extras: list[tuple[str, ...]]) -> list[PeerProc]:
        """Start peers 0..len(extras)-1 concurrently (imports dominate start-up time)."""
        started = [PeerProc(self.keys[i], self.members, *e) for i, e in enumerate(extras)]
        self.peers.extend(started)
        return [p.wait_ready() for p in started]

    def spawn_outsider(self, *extra: str) -> PeerProc:
        key = NodeKey.generate()
        peer = PeerProc(key, self.members + [key.node_id], *extra)
        self.peers.append(peer)
        return peer.wait_ready()

    def close(self) -> None:
        for p in self.peers:
            p.request_quit()  # all stop at once
        for p in self.peers:
            p.close()


@pytest.fixture
def swarm_factory() -> Iterator[Any]:
    swarms: list[Swarm] = []

    def make(n: int) -> Swarm:
        s = Swarm(n)
        swarms.append(s)
        return s

    yield make
    for s in swarms:
        s.close()
