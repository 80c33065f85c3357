"""Per-client figures from the JSON-line event files clients write (`join --events FILE`).

The coordinator state knows each client's slot, state and witness reports, but not what a
client sent or received over p2p: those counters live in the client process. Every client
that writes an events file records their running totals (`bytes_in`, `bytes_out`) with each
`trained` and `applied` event, its own `loss` and `tokens_per_s` with each `trained` event,
and its slot with each `epoch` event, so the dashboard tails those files and joins them to
the coordinator's clients by slot. Verification outcomes (`verified`, `reported`) come from
the same files.

Reading is incremental (each file from where the last read stopped, at most `MAX_READ` bytes
per file per refresh) and bounded in what it keeps.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_READ = 4 << 20
MAX_REPORTS = 200
NOTABLE = (
    "desynced",
    "resync_failed",
    "missed_apply",
    "resynced",
    "peers_unreachable",
    "peers_reachable",
    "finished",
)
"""Events that set a client's note; a later one replaces it (resynced ends desynced)."""


@dataclass
class ClientFigures:
    """What one events file says about its client."""

    name: str
    slot: int | None = None
    epoch: int | None = None
    trained_steps: int = 0
    applied_steps: int = 0
    loss: float | None = None
    tokens_per_s: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    last_event: str = ""
    last_time: float = 0.0
    note: str = ""
    """The newest notable event (desynced, peers unreachable, finished …), as a few words."""

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class _Tail:
    path: Path
    offset: int = 0
    partial: bytes = b""
    figures: ClientFigures = field(default_factory=lambda: ClientFigures(""))


class ClientEvents:
    """Tails events files: given paths, and every `*.events.jsonl` in given directories."""

    def __init__(self, paths: list[Path] | None = None, dirs: list[Path] | None = None) -> None:
        self.paths = list(paths or [])
        self.dirs = list(dirs or [])
        self._tails: dict[Path, _Tail] = {}
        self._reports: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def _files(self) -> list[Path]:
        found = list(self.paths)
        for d in self.dirs:
            found.extend(sorted(d.glob("*.events.jsonl")))
        return found

    def refresh(self) -> None:
        """Read what the files gained since the last call."""
        with self._lock:
            for path in self._files():
                tail = self._tails.get(path)
                if tail is None:
                    name = path.name.removesuffix(".jsonl").removesuffix(".events")
                    tail = self._tails[path] = _Tail(path, figures=ClientFigures(name))
                self._read(tail)

    def _read(self, tail: _Tail) -> None:
        try:
            with tail.path.open("rb") as f:
                f.seek(tail.offset)
                chunk = f.read(MAX_READ)
        except OSError:
            return  # not written yet, or gone: keep what was read
        tail.offset += len(chunk)
        data = tail.partial + chunk
        lines = data.split(b"\n")
        tail.partial = lines.pop()  # an unfinished last line waits for the next read
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._apply(tail.figures, event)

    def _apply(self, fig: ClientFigures, ev: dict[str, Any]) -> None:
        kind = str(ev.get("event", ""))
        fig.last_event = kind
        fig.last_time = float(ev.get("time", 0.0) or 0.0)
        if kind == "epoch":
            fig.slot, fig.epoch = _int(ev.get("slot")), _int(ev.get("epoch"))
        elif kind == "trained":
            fig.trained_steps += 1
            fig.loss = _float(ev.get("loss"))
            fig.tokens_per_s = _float(ev.get("tokens_per_s")) or 0.0
            if "bytes_out" not in ev:  # an older client: only this step's payload
                fig.bytes_out += _int(ev.get("bytes")) or 0
        elif kind == "applied":
            fig.applied_steps += 1
        if "bytes_out" in ev:  # the client's running totals (trained and applied events)
            fig.bytes_in = _int(ev.get("bytes_in")) or 0
            fig.bytes_out = _int(ev.get("bytes_out")) or 0
        elif kind in ("verified", "reported"):
            self._reports.append({"client": fig.name, "verifier_slot": fig.slot, **ev})
            del self._reports[:-MAX_REPORTS]
        if kind in NOTABLE:
            fig.note = kind.replace("_", " ")

    def clients(self) -> list[ClientFigures]:
        with self._lock:
            return [ClientFigures(**vars(t.figures)) for t in self._tails.values()]

    def reports(self) -> list[dict[str, Any]]:
        """`verified` / `reported` events, oldest first (newest `MAX_REPORTS`)."""
        with self._lock:
            return [dict(r) for r in self._reports]


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
