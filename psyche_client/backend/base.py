"""One interface to a run's coordinator, whichever form it takes (TCP server or Solana program).

The client loop only ever reads the decoded core state and sends the protocol's messages; how a
message travels (a signed TCP frame, a Solana transaction) is the backend's business. Every send
raises `CoordinatorRejected` with the core's error name when the coordinator refuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from psyche_client import _core

StatePredicate = Callable[[_core.Coordinator], bool]

EPOCH_PHASES = (_core.Phase.RoundTrain, _core.Phase.RoundWitness, _core.Phase.Cooldown)
"""Phases in which the state holds the current epoch's rounds (and their decisions)."""


class CoordinatorBackend(Protocol):
    """What the client loop needs from a coordinator."""

    wallet: bytes
    """The 32-byte identity the core knows this client by."""

    async def start(self) -> None:
        """Connect and wait for the first state."""
        ...

    async def stop(self) -> None:
        """Disconnect; never raises."""
        ...

    def state(self) -> _core.Coordinator:
        """The newest state seen."""
        ...

    def last_epoch_state(self) -> _core.Coordinator | None:
        """The newest state seen in an epoch's rounds or cooldown (`EPOCH_PHASES`). After the
        epoch ends it still holds that epoch's last decisions, which a client needs when it did
        not react to the last of those states (it reads only the newest state, and the cooldown
        can come and go while it is busy)."""
        ...

    async def wait_state(
        self, predicate: StatePredicate, timeout_s: float | None
    ) -> _core.Coordinator:
        """The first state (current or later) that satisfies `predicate`."""
        ...

    def peer_addresses(self) -> dict[bytes, dict[str, str]]:
        """Node key → {"p2p_addr", "fast_addr"} of the peers that advertised themselves."""
        ...

    async def advertise(self, p2p_addr: str, fast_addr: str) -> None:
        """Tell peers where this client's p2p endpoints are."""
        ...

    async def join(self) -> None: ...
    async def withdraw(self) -> None: ...
    async def warmup_witness(self) -> None: ...
    async def witness(
        self,
        position: int,
        results: bytes,
        trainers: bytes,
        loss_milli: int,
        tokens_per_sec: int,
        download_kib: int,
    ) -> None: ...
    async def health_check(self, target: int, height: int) -> None: ...
    async def report(self, target: int) -> None: ...
    async def checkpoint(self, model: dict[str, str]) -> None: ...
