"""The live status line of `psyche-client join`: phase, epoch/step, loss, speed, peers, bytes."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)


class StatusLine:
    """One line redrawn in place on a terminal; plain lines on change when not a terminal."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self._live: Live | None = None
        self._last = ""
        if enabled and self.console.is_terminal:
            self._live = Live(Text(""), console=self.console, refresh_per_second=4, transient=False)
            self._live.start()

    def update(self, st: Any) -> None:
        if not self.enabled:
            return
        loss = f"{st.loss:.3f}" if st.loss is not None else "-"
        line = (
            f"{st.phase:<17} epoch {st.epoch} step {st.step} loss {loss} "
            f"{st.tokens_per_s:,.0f} tok/s peers {st.peers} "
            f"in {_size(st.bytes_in)} out {_size(st.bytes_out)}"
        )
        if getattr(st, "empty_rounds", 0):
            line += f" | {st.empty_rounds} rounds exchanged nothing: peers unreachable?"
        if getattr(st, "network", ""):
            line += f" | {st.network}"
        if getattr(st, "desynced", False):
            line += " | missed an agreed result: catching up from peers"
        elif getattr(st, "resyncs", 0):
            line += f" | caught up from peers {st.resyncs}x"
        if self._live is not None:
            self._live.update(Text(line))
        elif line.split(" tok/s")[0] != self._last.split(" tok/s")[0]:
            print(line, file=sys.stderr, flush=True)
        self._last = line

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
