"""A `CoordinatorBackend` over the real core hosted in memory: no processes, no sockets.

The TCP server's `CoreStateHost` applies each message to the real `_core.Coordinator` exactly as
it does for a TCP connection (same bodies, same typed rejections); `MemoryCoordinator` only
replaces the transport and the clock. Time is virtual: tests move it with `advance`, so a round
timeout is a line of test code, not a sleep. Each `MemoryBackend` is one client's view of the
shared run (its wallet is its node key, as in TCP runs).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from psyche_client import _core
from psyche_client.backend.base import EPOCH_PHASES, StatePredicate
from psyche_client.backend.tcp import CoordinatorRejected
from psyche_client.server.app import CoreRejection
from psyche_client.server.core_host import CoreStateHost


class MemoryCoordinator:
    """One run's core, a virtual clock and the peer directory, shared by in-memory backends."""

    def __init__(self, core: _core.Coordinator, now: int, authority: bytes | None = None) -> None:
        self.host = CoreStateHost(core, authority)
        self.now = now
        self.peers: dict[bytes, dict[str, str]] = {}
        self._changed = asyncio.Event()
        self._ticks = 0
        self.epoch_state: bytes | None = None
        """The newest state in `EPOCH_PHASES` (what a TCP client's connection keeps)."""

    @property
    def core(self) -> _core.Coordinator:
        return self.host.coordinator

    def _randomness(self) -> bytes:
        self._ticks += 1
        return hashlib.sha256(f"memory-tick-{self._ticks}".encode()).digest()

    def _remember(self) -> None:
        if self.core.phase in EPOCH_PHASES:
            self.epoch_state = self.core.to_bytes()

    def notify(self) -> None:
        """Wake every backend waiting for a new state."""
        self._remember()
        self._changed.set()
        self._changed = asyncio.Event()

    def tick(self) -> None:
        self.host.tick(self.now, self._randomness())
        self.notify()

    def advance(self, seconds: int) -> None:
        """Move the clock one second at a time, ticking the core at each (as the server does)."""
        for _ in range(seconds):
            self.now += 1
            self.host.tick(self.now, self._randomness())
            self._remember()
        self.notify()

    def apply(self, node_key: bytes, kind: str, body: dict[str, Any]) -> None:
        try:
            self.host.apply(node_key, kind, body, self.now)
        except CoreRejection as e:
            raise CoordinatorRejected(e.name, e.message) from None
        finally:
            self.notify()

    async def changed(self, timeout_s: float | None) -> None:
        await asyncio.wait_for(self._changed.wait(), timeout_s)

    def backend(self, wallet: bytes) -> MemoryBackend:
        return MemoryBackend(self, wallet)


class MemoryBackend:
    """`CoordinatorBackend` for one client of a `MemoryCoordinator`."""

    def __init__(self, run: MemoryCoordinator, wallet: bytes) -> None:
        self.run = run
        self.wallet = wallet
        self.sent: list[tuple[str, dict[str, Any]]] = []
        """Every message this client sent (accepted or not), for assertions."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def state(self) -> _core.Coordinator:
        # A decoded copy, as a TCP client gets: the client can never alias the live core.
        return _core.Coordinator.from_bytes(self.run.core.to_bytes())

    def last_epoch_state(self) -> _core.Coordinator | None:
        raw = self.run.epoch_state
        return None if raw is None else _core.Coordinator.from_bytes(raw)

    async def wait_state(
        self, predicate: StatePredicate, timeout_s: float | None
    ) -> _core.Coordinator:
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            state = self.state()
            if predicate(state):
                return state
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise TimeoutError
            await self.run.changed(left)

    def peer_addresses(self) -> dict[bytes, dict[str, str]]:
        return self.run.peers

    async def _send(self, kind: str, body: dict[str, Any]) -> None:
        self.sent.append((kind, body))
        self.run.apply(self.wallet, kind, body)

    async def advertise(self, p2p_addr: str, fast_addr: str) -> None:
        self.sent.append(("advertise", {"p2p_addr": p2p_addr, "fast_addr": fast_addr}))
        self.run.peers[self.wallet] = {"p2p_addr": p2p_addr, "fast_addr": fast_addr}

    async def join(self) -> None:
        await self._send("join", {})

    async def withdraw(self) -> None:
        await self._send("withdraw", {})

    async def warmup_witness(self) -> None:
        await self._send("warmup_witness", {})

    async def witness(
        self,
        position: int,
        results: bytes,
        trainers: bytes,
        loss_milli: int,
        tokens_per_sec: int,
        download_kib: int,
    ) -> None:
        await self._send(
            "witness",
            {
                "position": position,
                "results": bytes(results).hex(),
                "trainers": bytes(trainers).hex(),
                "loss_milli": loss_milli,
                "tokens_per_sec": tokens_per_sec,
                "download_kib": download_kib,
            },
        )

    async def health_check(self, target: int, height: int) -> None:
        await self._send("health_check", {"target": target, "height": height})

    async def report(self, target: int) -> None:
        await self._send("report", {"target": target})

    async def checkpoint(self, model: dict[str, str]) -> None:
        await self._send("checkpoint", {"model": model})
