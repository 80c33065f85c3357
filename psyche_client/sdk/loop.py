"""One background event loop for everything the SDK runs, so it works the same in a script and
inside Jupyter.

Jupyter (ipykernel) already runs an asyncio loop in the main thread, so `asyncio.run` there
fails and blocking that loop stalls the kernel. The SDK therefore owns one daemon thread with its
own loop: watchers, in-process servers and clients all live on it. Sync calls submit a coroutine
there and block on the answer (fine from any thread, Jupyter's included, except the SDK thread
itself, which is refused with a clear error instead of deadlocking). Async calls await the same
coroutine from whatever loop the caller runs, through `asyncio.wrap_future`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def sdk_loop() -> asyncio.AbstractEventLoop:
    """The SDK's loop, started on first use (a daemon thread: it never keeps Python alive)."""
    global _loop, _thread
    with _lock:
        if _loop is not None and _thread is not None and _thread.is_alive():
            return _loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=main, name="psyche-sdk", daemon=True)
        thread.start()
        ready.wait()
        _loop, _thread = loop, thread
        return loop


def on_sdk_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule `coro` on the SDK loop from any thread."""
    return asyncio.run_coroutine_threadsafe(coro, sdk_loop())


def run_sync(coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
    """Run `coro` on the SDK loop and block until it ends (from any thread but the SDK's).

    A timeout cancels the coroutine and raises `TimeoutError`.
    """
    if on_sdk_thread():
        coro.close()
        raise RuntimeError(
            "a blocking psyche call was made from the SDK's own loop; use the async variant"
        )
    fut = submit(coro)
    try:
        return fut.result(timeout_s)
    except concurrent.futures.TimeoutError:
        # Since 3.11 this is the builtin TimeoutError, which the coroutine itself may raise
        # (its own deadline): that one is the coroutine's answer, passed on as it is.
        if fut.done():
            raise
        fut.cancel()
        raise TimeoutError(f"no answer within {timeout_s:g} s") from None


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro` on the SDK loop from the caller's loop (or directly when already on it)."""
    if on_sdk_thread():
        return await coro
    return await asyncio.wrap_future(submit(coro))
