"""Progress for long transfers (model download, checkpoint save): a bar for a person, a line
every N % for a log file, nothing for a machine reading `--json`.

    from psyche_client.progress import progress

    with progress("model from peers", total=size, unit="bytes") as p:
        ...
        p.advance(len(chunk))          # from any thread

The mode is chosen once per process by the front end (`configure(quiet=..., json=...)`, e.g.
from `--quiet` / `--json`) so library code (p2p, checkpoint) never threads flags through:

- `quiet` or `json`: silent (stdout stays machine-readable, stderr stays empty);
- stderr a terminal: a rich bar (transient: it leaves no trace once done);
- otherwise: one plain line on stderr each time another `every_pct` % is done, and one at the
  end (a log collector sees "model from peers: 40% (12.0 MiB of 30.0 MiB)"). With no total,
  only the final line, since a percentage of an unknown total means nothing.

Imports rich only when a bar is drawn.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import Any, TextIO

_MODE = {"quiet": False, "json": False}


def configure(*, quiet: bool = False, json: bool = False) -> None:
    """The process's progress mode (see the module docstring)."""
    _MODE["quiet"], _MODE["json"] = quiet, json


def _amount(n: float, unit: str) -> str:
    if unit != "bytes":
        return f"{n:,.0f} {unit}"
    for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {name}"
    return f"{n:.0f} B"


class Progress:
    """One task's progress (see the module docstring); use `progress()` to make one."""

    def __init__(
        self,
        description: str,
        total: float | None,
        unit: str,
        mode: str,
        every_pct: float,
        stream: TextIO,
    ) -> None:
        self.description = description
        self.total = total if total and total > 0 else None
        self.unit = unit
        self.mode = mode
        self.every_pct = max(1.0, every_pct)
        self.stream = stream
        self.done = 0.0
        self._next_pct = self.every_pct
        self._lock = threading.Lock()
        self._closed = False
        self._bar: Any = None
        self._task: Any = None
        if mode == "bar":
            self._start_bar()

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        columns: list[Any] = [TextColumn("{task.description}"), BarColumn()]
        if self.unit == "bytes":
            columns += [DownloadColumn(binary_units=True), TransferSpeedColumn()]
        else:
            columns += [MofNCompleteColumn()]
        columns.append(TimeRemainingColumn())
        console = Console(file=self.stream, force_terminal=True)
        self._bar = RichProgress(*columns, console=console, transient=True)
        self._task = self._bar.add_task(self.description, total=self.total)
        self._bar.start()

    def advance(self, n: float) -> None:
        """`n` more units done (thread-safe)."""
        with self._lock:
            if self._closed:
                return
            self.done += n
            if self._bar is not None:
                self._bar.update(self._task, completed=self.done)
            elif self.mode == "log" and self.total is not None:
                pct = 100.0 * self.done / self.total
                if pct >= self._next_pct and pct < 100.0:
                    step = self.every_pct
                    self._line(f"{int(pct // step * step)}%")
                    self._next_pct = (pct // step + 1) * step

    def update(self, completed: float) -> None:
        """Set the amount done (for callers that know a running total)."""
        self.advance(completed - self.done)

    def _line(self, what: str) -> None:
        told = _amount(self.done, self.unit)
        if self.total is not None:
            told += f" of {_amount(self.total, self.unit)}"
        print(f"{self.description}: {what} ({told})", file=self.stream, flush=True)

    def close(self) -> None:
        """Stop the bar, or write the final line (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._bar is not None:
                self._bar.stop()
            elif self.mode == "log":
                self._line("done")

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        with self._lock:  # failed: no "done" line; the error says what happened
            self._closed = True
            if self._bar is not None:
                self._bar.stop()


def progress(
    description: str,
    total: float | None = None,
    *,
    unit: str = "bytes",
    every_pct: float = 10.0,
    stream: TextIO | None = None,
) -> Progress:
    """A progress reporter in this process's mode (`configure`), on `stream` (stderr)."""
    out = stream if stream is not None else sys.stderr
    if _MODE["quiet"] or _MODE["json"]:
        mode = "quiet"
    elif out.isatty():
        mode = "bar"
    else:
        mode = "log"
    return Progress(description, total, unit, mode, every_pct, out)
