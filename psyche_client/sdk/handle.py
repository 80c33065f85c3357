"""`RunHandle`: a live view of one run (status, watch, history), and `connect` to get one.

A handle owns one `StateSource` on the SDK loop (`loop.py`) and a pump task that, for every
new state, updates the status snapshot and the rolling `History` and wakes watchers. Reading
the status or the history is therefore instant and never touches the network; `watch()` and
`wait()` wait for the pump.

Every blocking method has an async twin (`wait` / `wait_async`, `close` / `aclose`); the
blocking ones work from any thread, Jupyter's included, because the work happens on the SDK's
own thread (see `loop.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from psyche_client import _core
from psyche_client.sdk.history import History
from psyche_client.sdk.loop import run_async, run_sync
from psyche_client.sdk.source import StateSource, source_for
from psyche_client.sdk.status import RunStatus, status_of

log = logging.getLogger("psyche.sdk")

StatusPredicate = Callable[[RunStatus], bool]


class RunHandle:
    """A connected view of a run. Use `psyche.connect(...)` (or `create_run`) to get one."""

    def __init__(self, source: StateSource, max_steps: int = 100_000) -> None:
        self.source = source
        self._history = History(max_steps)
        self._state: _core.Coordinator | None = None
        self._status: RunStatus | None = None
        self._version = 0
        self._changed: asyncio.Condition | None = None
        self._pump: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._on_close: list[Callable[[], Awaitable[None]]] = []
        self.closed = False

    @property
    def address(self) -> str:
        """host:port of a TCP run, or the Solana run account."""
        return self.source.address

    # ---- lifecycle (on the SDK loop) ---------------------------------------------------------

    async def _start(self, timeout_s: float) -> None:
        self._changed = asyncio.Condition()
        state = await self.source.start(timeout_s)
        self._observe(state)
        self._pump = asyncio.create_task(self._run_pump(state))

    def _observe(self, state: _core.Coordinator) -> None:
        self._state = state
        self._history.observe(state)
        status = status_of(state, self._history.latest())
        if status != self._status:
            self._status = status
            self._version += 1

    async def _run_pump(self, state: _core.Coordinator) -> None:
        assert self._changed is not None
        try:
            while True:
                state = await self.source.next_state(state)
                async with self._changed:
                    self._observe(state)
                    self._changed.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - surfaced to every waiter, then the pump ends
            log.warning("run watcher stopped: %r", e)
            async with self._changed:
                self._error = e
                self._changed.notify_all()

    async def _next(self, seen: int, timeout_s: float | None) -> tuple[int, RunStatus]:
        """The first snapshot newer than version `seen`."""
        assert self._changed is not None

        async def wait() -> tuple[int, RunStatus]:
            assert self._changed is not None
            async with self._changed:
                await self._changed.wait_for(
                    lambda: self._version > seen or self._error is not None or self.closed
                )
            if self._version > seen and self._status is not None:
                return self._version, self._status
            if self._error is not None:
                raise ConnectionError(f"lost the run {self.address}: {self._error}")
            raise RuntimeError("the run handle is closed")

        return await asyncio.wait_for(wait(), timeout_s)

    async def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()
        await self.source.stop()
        for hook in self._on_close:
            with contextlib.suppress(Exception):
                await hook()

    # ---- reading ------------------------------------------------------------------------------

    def status(self) -> RunStatus:
        """The newest status snapshot (instant; the watcher keeps it current)."""
        assert self._status is not None, "the handle is not started"
        return self._status

    def state(self) -> _core.Coordinator:
        """The newest raw coordinator state (the core bindings' object)."""
        assert self._state is not None, "the handle is not started"
        return self._state.copy()

    def history(self) -> History:
        """A copy of the steps recorded so far: loss, tokens/s, clients per step."""
        return self._history.copy()

    # ---- waiting ------------------------------------------------------------------------------

    async def watch(self, timeout_s: float | None = None) -> AsyncIterator[RunStatus]:
        """Yield the current snapshot, then each new one, until the run finishes (the
        Finished snapshot is the last) or no change comes for `timeout_s` (TimeoutError)."""
        version, status = self._version, self.status()
        yield status
        while not status.finished:
            version, status = await run_async(self._next(version, timeout_s))
            yield status

    def watch_sync(self, timeout_s: float | None = None) -> Iterator[RunStatus]:
        """`watch()` as a plain iterator (blocks between snapshots; for scripts)."""
        version, status = self._version, self.status()
        yield status
        while not status.finished:
            version, status = run_sync(self._next(version, timeout_s))
            yield status

    async def wait_async(
        self,
        until: StatusPredicate | None = None,
        *,
        phase: str | None = None,
        timeout_s: float | None = None,
    ) -> RunStatus:
        """The first snapshot (current or later) for which `until` holds, or whose phase is
        `phase`; default: the run is Finished. TimeoutError after `timeout_s` in all."""

        def ok(s: RunStatus) -> bool:
            if until is not None:
                return until(s)
            return s.phase == (phase or "Finished")

        async def go() -> RunStatus:
            version, status = self._version, self.status()
            while not ok(status):
                version, status = await self._next(version, None)
            return status

        try:
            return await run_async(asyncio.wait_for(go(), timeout_s))
        except TimeoutError:
            what = "the condition" if until is not None else f"phase {phase or 'Finished'}"
            raise TimeoutError(
                f"run {self.address} did not reach {what} within {timeout_s:g} s "
                f"(now {self.status().phase}, step {self.status().steps_done})"
            ) from None

    def wait(
        self,
        until: StatusPredicate | None = None,
        *,
        phase: str | None = None,
        timeout_s: float | None = None,
    ) -> RunStatus:
        """Blocking `wait_async`."""
        return run_sync(self.wait_async(until, phase=phase, timeout_s=timeout_s))

    # ---- closing ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop watching (and stop what `create_run` started with this handle)."""
        await run_async(self._close())

    def close(self) -> None:
        """Blocking `aclose`."""
        if not self.closed:
            run_sync(self._close())

    stop = close

    def __enter__(self) -> RunHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> RunHandle:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        s = self._status
        where = self.address
        if s is None:
            return f"<RunHandle {where} (not started)>"
        return f"<RunHandle {s.run} @ {where}: {s.phase} epoch {s.epoch} step {s.steps_done}>"


async def open_handle(
    target: str, rpc: str | None = None, timeout_s: float = 15.0, max_steps: int = 100_000
) -> RunHandle:
    """Connect a handle (on the SDK loop)."""
    handle = RunHandle(source_for(target, rpc), max_steps)
    await handle._start(timeout_s)
    return handle


async def aconnect(
    addr_or_run_id: str, rpc: str | None = None, *, timeout_s: float = 15.0
) -> RunHandle:
    """Async `connect`."""
    return await run_async(open_handle(addr_or_run_id, rpc, timeout_s))


def connect(addr_or_run_id: str, rpc: str | None = None, *, timeout_s: float = 15.0) -> RunHandle:
    """A live handle on a run: `host:port` of a TCP coordinator, or a Solana run (its name or
    run account) on `rpc` (default: localnet). One-line `UserError` if it cannot be reached."""
    return run_sync(open_handle(addr_or_run_id, rpc, timeout_s))
