"""Keeping a hostile or broken crowd from filling the coordinator's log.

A flood (fd exhaustion, a connection storm past the cap, thousands of bad handshakes) must cost
one log line per kind of refusal per interval, not a line (or a traceback) per event: the operator
needs to see that it happens and how often, and the disk must not fill.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ACCEPT_OUT_OF_RESOURCES = "socket.accept() out of system resource"
FD_RESERVE = 64
"""File descriptors kept free of client connections (state file, logs, the listener)."""


@dataclass
class _Kind:
    last: float
    suppressed: int = 0


class RefusalLog:
    """Logs the first refusal of each kind, then at most one line per `interval_s` with a count."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._kinds: dict[str, _Kind] = {}
        self.counts: dict[str, int] = {}
        """Refusals of each kind since start (logged or not)."""

    def note(self, kind: str, message: str, level: int = logging.WARNING) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = self.clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen.last < self.interval_s:
            seen.suppressed += 1
            return
        more = ""
        if seen is not None and seen.suppressed:
            more = f" ({seen.suppressed} more like it in the last {now - seen.last:.0f} s)"
        self.logger.log(level, "%s%s", message, more)
        self._kinds[kind] = _Kind(last=now)


def install_accept_guard(
    loop: asyncio.AbstractEventLoop, refusals: RefusalLog
) -> Callable[[], None]:
    """Route asyncio's per-accept EMFILE/ENFILE tracebacks to `refusals`; returns the undo.

    asyncio retries accept() a second later on its own; what it lacks is restraint in logging.
    Every other exception context still goes to the previous handler.
    """
    previous = loop.get_exception_handler()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith(ACCEPT_OUT_OF_RESOURCES):
            refusals.note(
                "accept",
                f"cannot accept connections: {context.get('exception')} (out of file "
                "descriptors: lower --max-connections or raise `ulimit -n`)",
            )
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)
    return lambda: loop.set_exception_handler(previous)


def fd_bounded(cap: int, logger: logging.Logger) -> int:
    """`cap`, lowered to what the process's open-file limit allows."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return cap
    if soft == resource.RLIM_INFINITY or soft - FD_RESERVE >= cap:
        return cap
    bounded = max(1, soft - FD_RESERVE)
    logger.warning(
        "connection cap lowered from %d to %d by the open-file limit (ulimit -n %d)",
        cap,
        bounded,
        soft,
    )
    return bounded
