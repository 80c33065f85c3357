"""Results of the live steps as they arrive, with awaitable lookups instead of polling.

Results reach a client in the background (each announcement fetched, checked against its
commitment and decoded by `peers`), while duties need them at moments of their own: a witness
wants every assigned result of the previous round (or its deadline), the apply wants the accepted
ones, a verifier wants its target's claim and momentum. `RoundResults` holds them per step and
wakes whoever waits the moment the awaited record is stored, so no duty sleeps in a loop.

Records are keyed by the trainer's node key and batch start, not by its slot: a result can
arrive before this client has seen the state that seats its sender, and slots are only
meaningful against one state. `witness_inputs` maps them to the slots of the round being
attested; the core builds the witness filters from those (commitment, slot) lists
(`Coordinator.witness_filters`), so the salting and hashing stay with the rules that check them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from psyche_client.p2p.messages import Announcement
from psyche_client.training.result import (
    DeMoResult,
    Layout,
    ResultFormatError,
    ValueMode,
    decode_result,
    result_size_bound,
)

KEEP_STEPS = 4
"""Steps kept behind the newest one stored: a round's results are applied two rounds later,
and verifiers look one round back."""

T = TypeVar("T")


@dataclass(frozen=True)
class Received:
    """A peer's (or our own) verified and decoded result for one step."""

    sender: bytes
    batch_start: int
    commitment: bytes
    result: DeMoResult
    size: int


@dataclass(frozen=True)
class Expected:
    """What a peer's result must be for this client's model: its layout, k and value mode.
    Decoding checks each record against it before touching the record's arrays."""

    layout: Layout
    k: int | None = None
    mode: ValueMode | None = None

    @property
    def max_bytes(self) -> int:
        return result_size_bound(self.layout, self.k, self.mode)

    @classmethod
    def of_trainer(cls, trainer: Any) -> Expected | None:
        """From a `training.trainer.Trainer` (None before the model is loaded)."""
        if trainer is None:
            return None
        demo = trainer.demo
        return cls(demo.layout(), demo.cfg.topk, demo.cfg.value_mode)


def refuse_size(expected: Expected | None, size: int) -> str | None:
    """Why an announced result of `size` bytes cannot be one for this model (None: it can).
    Checked before the fetch allocates its receive buffer."""
    if expected is not None and size > (bound := expected.max_bytes):
        return f"{size:,} bytes is more than a result for this model can be ({bound:,})"
    return None


DECODE_WORKERS = 1
"""Threads decoding peers' results. One: decodes queue instead of multiplying peak memory, and
the event loop (heartbeats, witnessing, transfers) never runs one."""
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _decode_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(DECODE_WORKERS, "psyche-decode")
        return _pool


async def decode_off_loop(payload: Any, expected: Expected | None) -> DeMoResult:
    """Decode a peer's payload on the decode worker, against `expected` when known; raises
    ResultFormatError. An oversized payload is refused here, before it is queued."""
    why = refuse_size(expected, len(payload))
    if why is not None:
        raise ResultFormatError(why)
    loop = asyncio.get_running_loop()
    if expected is None:
        return await loop.run_in_executor(_decode_pool(), decode_result, payload)
    return await loop.run_in_executor(
        _decode_pool(),
        lambda: decode_result(payload, None, expected.layout, expected.k, expected.mode),
    )


class _Waiters:
    """Futures waiting for a condition over a store; re-checked after every change."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def changed(self) -> None:
        still = []
        for cond, fut in self._waiting:
            if fut.done():
                continue
            if cond():
                fut.set_result(None)
            else:
                still.append((cond, fut))
        self._waiting = still

    async def wait(self, cond: Callable[[], bool], timeout_s: float | None) -> bool:
        """True once `cond()` holds; False if `timeout_s` passed first."""
        if cond():
            return True
        if timeout_s is not None and timeout_s <= 0:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((cond, fut))
        try:
            await asyncio.wait_for(fut, timeout_s)
            return True
        except TimeoutError:
            return cond()
        finally:
            if not fut.done():
                fut.cancel()
            self._waiting = [(c, f) for c, f in self._waiting if f is not fut]


class _StepStore(Generic[T]):
    """Values per step, pruned to the last `keep` steps, with awaitable conditions."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._by_step: dict[int, dict[tuple[bytes, int, bytes], T]] = {}
        self._waiters = _Waiters()

    def put(self, step: int, key: tuple[bytes, int, bytes], value: T) -> None:
        self._by_step.setdefault(step, {})[key] = value
        for old in [s for s in self._by_step if s < step - self.keep]:
            del self._by_step[old]
        self._waiters.changed()

    def of_step(self, step: int) -> dict[tuple[bytes, int, bytes], T]:
        return self._by_step.get(step, {})

    async def wait(self, cond: Callable[[], bool], timeout_s: float | None) -> bool:
        return await self._waiters.wait(cond, timeout_s)


class RoundResults:
    """Decoded results per step, keyed by (sender node key, batch start, commitment)."""

    def __init__(self, keep_steps: int = KEEP_STEPS) -> None:
        self._store: _StepStore[Received] = _StepStore(keep_steps)

    def add(self, step: int, rec: Received) -> None:
        """Store a result and wake the duties waiting for it."""
        self._store.put(step, (rec.sender, rec.batch_start, rec.commitment), rec)

    def get(self, step: int, sender: bytes, batch_start: int, digest: bytes) -> Received | None:
        return self._store.of_step(step).get((sender, batch_start, digest))

    def claimed(self, step: int, sender: bytes, batch_start: int) -> Received | None:
        """The result `sender` announced for `batch_start` (whatever its commitment)."""
        for rec in self._store.of_step(step).values():
            if rec.sender == sender and rec.batch_start == batch_start:
                return rec
        return None

    def of_step(self, step: int) -> list[Received]:
        return list(self._store.of_step(step).values())

    def holds_all(self, step: int, wanted: Iterable[tuple[bytes, int]]) -> bool:
        """Whether a result is held for every (sender, batch start) in `wanted`."""
        have = {(r.sender, r.batch_start) for r in self._store.of_step(step).values()}
        return all(w in have for w in wanted)

    async def wait_all(
        self, step: int, wanted: Iterable[tuple[bytes, int]], timeout_s: float | None
    ) -> bool:
        """Wait until `holds_all(step, wanted)`; False if `timeout_s` passed first."""
        want = list(wanted)
        return await self._store.wait(lambda: self.holds_all(step, want), timeout_s)

    async def wait_for(
        self, step: int, sender: bytes, batch_start: int, digest: bytes, timeout_s: float | None
    ) -> Received | None:
        """The result once it is stored, or None after `timeout_s`."""
        await self._store.wait(
            lambda: self.get(step, sender, batch_start, digest) is not None, timeout_s
        )
        return self.get(step, sender, batch_start, digest)

    async def wait_claimed(
        self, step: int, sender: bytes, batch_start: int, timeout_s: float | None
    ) -> Received | None:
        await self._store.wait(
            lambda: self.claimed(step, sender, batch_start) is not None, timeout_s
        )
        return self.claimed(step, sender, batch_start)

    def witness_inputs(
        self, step: int, assigned: Mapping[tuple[bytes, int], int]
    ) -> tuple[list[bytes], list[int]]:
        """The commitments held for step's assigned batches and their trainers' slots, in the
        form `Coordinator.witness_filters` takes. `assigned` maps (node key, batch start) of
        each assignment of the round to its slot; results of anything else are left out."""
        commitments: list[bytes] = []
        slots: list[int] = []
        for rec in self._store.of_step(step).values():
            slot = assigned.get((rec.sender, rec.batch_start))
            if slot is not None:
                commitments.append(rec.commitment)
                slots.append(slot)
        return commitments, slots


class Disclosures:
    """Momentum disclosure announcements per (sender, step), awaited by verifiers."""

    def __init__(self, keep_steps: int = KEEP_STEPS) -> None:
        self._store: _StepStore[Announcement] = _StepStore(keep_steps)

    def add(self, ann: Announcement) -> None:
        self._store.put(ann.step, (ann.sender, ann.batch_id, ann.commitment), ann)

    def find(self, sender: bytes, step: int) -> Announcement | None:
        for (who, _batch, _digest), ann in self._store.of_step(step).items():
            if who == sender:
                return ann
        return None

    async def wait(self, sender: bytes, step: int, timeout_s: float | None) -> Announcement | None:
        await self._store.wait(lambda: self.find(sender, step) is not None, timeout_s)
        return self.find(sender, step)
