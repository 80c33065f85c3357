"""A trio event loop in a dedicated thread, driven from asyncio.

py-libp2p is written for trio and does not run on anyio's asyncio backend, while the client is
asyncio. Measured on the target machine, a thread running `trio.run` plus a call bridge costs
~0.2-0.3 ms per call, which is negligible next to a training step. Calls go both ways:
`call` runs a trio coroutine from asyncio (cancelling the asyncio side cancels the trio task),
and `call_asyncio` runs a plain function on the asyncio loop from trio, so user callbacks
(membership, validation) always run on the caller's loop and need not be thread safe.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

log = logging.getLogger(__name__)
T = TypeVar("T")


class BridgeClosed(RuntimeError):
    """The trio thread is not running (never started, stopped, or crashed)."""


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class TrioThread:
    """Owns one thread running trio; `main` runs inside it until `stop`."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop_event: trio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._crash: BaseException | None = None
        self._pending: set[asyncio.Future[Any]] = set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._token is not None

    async def start(self, main: Callable[[trio.Nursery], Awaitable[None]]) -> None:
        """Start the thread and wait until `main` has started (it signals via task_status)."""
        self._loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = self._loop.create_future()
        loop = self._loop

        async def root() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop_event = trio.Event()
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await nursery.start(self._run_main, main)
                    loop.call_soon_threadsafe(_settle, started, None, None)
                    await self._stop_event.wait()
                    nursery.cancel_scope.cancel()
            finally:
                self._nursery = None

        def thread_main() -> None:
            try:
                trio.run(root)
            except BaseException as exc:  # noqa: BLE001 - reported to the starter
                self._crash = exc
                log.warning("trio thread %s ended with %r", self._name, exc)
                try:
                    loop.call_soon_threadsafe(_settle, started, None, BridgeClosed(repr(exc)))
                except RuntimeError:
                    pass
            finally:
                self._token = None
                # Whatever trio did not answer will never be answered now.
                for fut in list(self._pending):
                    _post(loop, fut, None, BridgeClosed("trio thread ended"))

        self._thread = threading.Thread(target=thread_main, name=self._name, daemon=True)
        self._thread.start()
        await started

    @staticmethod
    async def _run_main(
        main: Callable[[trio.Nursery], Awaitable[None]],
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as inner:
            await main(inner)
            task_status.started()
            await trio.sleep_forever()

    def spawn(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        on_fail: Callable[[], None] | None = None,
    ) -> None:
        """Start a trio task that lives until stop. If trio is already shutting down the task
        never starts and `on_fail` runs (in the trio thread) instead."""
        token, nursery = self._token, self._nursery
        if token is None or nursery is None:
            raise BridgeClosed(self._name)

        def start() -> None:
            # An exception escaping a run_sync_soon callback would crash trio itself.
            try:
                nursery.start_soon(fn, *args)
            except RuntimeError:
                if on_fail is not None:
                    on_fail()

        try:
            token.run_sync_soon(start)
        except trio.RunFinishedError as exc:
            raise BridgeClosed(self._name) from exc

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(*args)` in trio and await its result from asyncio."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        state: dict[str, Any] = {"scope": None, "cancelled": False}

        async def runner() -> None:
            with trio.CancelScope() as scope:
                state["scope"] = scope
                if state["cancelled"]:
                    scope.cancel()
                try:
                    result = await fn(*args)
                except Exception as exc:  # noqa: BLE001 - forwarded to the caller
                    _post(loop, fut, None, exc)
                    return
                except BaseException:
                    _post(loop, fut, None, BridgeClosed("cancelled in trio"))
                    raise
                _post(loop, fut, result, None)
            if scope.cancelled_caught:
                _post(loop, fut, None, BridgeClosed("cancelled in trio"))

        def cancel() -> None:
            state["cancelled"] = True
            scope = state["scope"]
            if scope is not None:
                scope.cancel()

        self._pending.add(fut)
        try:
            self.spawn(runner, on_fail=lambda: _post(loop, fut, None, BridgeClosed("stopping")))
            return await fut
        except asyncio.CancelledError:
            token = self._token
            if token is not None:
                try:
                    token.run_sync_soon(cancel)
                except trio.RunFinishedError:
                    pass
            raise
        finally:
            self._pending.discard(fut)

    async def call_asyncio(self, fn: Callable[..., T], *args: Any) -> T:
        """From trio: run the plain function `fn(*args)` on the asyncio loop, return its result."""
        loop, token = self._loop, self._token
        if loop is None or token is None:
            raise BridgeClosed(self._name)
        done = trio.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["result"] = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - forwarded to trio
                box["error"] = exc
            finally:
                try:
                    token.run_sync_soon(done.set)
                except trio.RunFinishedError:
                    pass

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError as exc:  # loop closed
            raise BridgeClosed("asyncio loop closed") from exc
        await done.wait()
        if "error" in box:
            raise box["error"]
        return box["result"]  # type: ignore[no-any-return]

    async def stop(self, timeout: float) -> bool:
        """Cancel everything in trio and join the thread; True when it ended within `timeout`."""
        token, thread = self._token, self._thread
        if token is not None:
            stop_event = self._stop_event
            try:
                if stop_event is not None:
                    token.run_sync_soon(stop_event.set)
            except trio.RunFinishedError:
                pass
        if thread is None:
            return True
        # Poll rather than join in an executor: an executor would leave a thread behind.
        deadline = asyncio.get_running_loop().time() + timeout
        while thread.is_alive() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        return not thread.is_alive()


def _post(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], result: Any, exc: Exception | None
) -> None:
    try:
        loop.call_soon_threadsafe(_settle, fut, result, exc)
    except RuntimeError:
        pass  # the asyncio loop is gone; nobody is waiting any more
