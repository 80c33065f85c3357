"""What the dashboard remembers of a run beyond its newest state: phases and rounds.

A coordinator state holds only the current phase and the last `ROUND_RING` rounds, so the
dashboard records each state it sees: a phase timeline (one segment per phase change, timed by
the coordinator's own `phase_started_at`) and one entry per round with its witness quorum,
submissions, verification reports and ejections. Both are bounded, oldest dropped first. A
dashboard started late shows what the ring still held when it connected, and phases from then.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import Any

from psyche_client import _core

MAX_SEGMENTS = 600
MAX_ROUNDS = 400


def round_entry(rnd: _core.RoundInfo) -> dict[str, Any]:
    """One round as plain data (slots are the coordinator's client slots)."""
    subs = [
        {
            "slot": s.client,
            "position": s.position,
            "loss": s.loss_milli / 1000 if s.loss_milli > 0 else None,
            "tokens_per_s": s.tokens_per_sec,
        }
        for s in rnd.submissions
    ]
    losses = [s["loss"] for s in subs if s["loss"] is not None]
    return {
        "epoch": rnd.epoch,
        "height": rnd.height,
        "kind": rnd.kind.name,
        "step": rnd.step,
        "started_at": rnd.started_at,
        "quorum_at": rnd.quorum_at,
        "train_secs": rnd.train_secs,
        "members": rnd.member_count,
        "trainers": rnd.trainer_count,
        "witnesses": rnd.witness_count,
        "submitted": len(subs),
        "quorum": rnd.quorum,
        "quorum_reached": rnd.quorum_at > 0 or (rnd.quorum > 0 and len(subs) >= rnd.quorum),
        "verifiers": rnd.verifier_count,
        "reported": list(rnd.reported),
        "ejected": list(rnd.ejected),
        "requeued": rnd.requeued,
        "loss": sum(losses) / len(losses) if losses else None,
        "submissions": subs,
    }


class RunRecorder:
    """Phase timeline and round log; `observe` every state (thread-safe)."""

    def __init__(self, max_segments: int = MAX_SEGMENTS, max_rounds: int = MAX_ROUNDS) -> None:
        self.max_segments = max_segments
        self.max_rounds = max_rounds
        self._segments: list[dict[str, Any]] = []
        self._rounds: OrderedDict[tuple[int, int], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def observe(self, state: _core.Coordinator) -> None:
        segment = {
            "phase": state.phase.name,
            "epoch": state.epoch,
            "height": state.height,
            "step": state.step,
            "start": state.phase_started_at,
        }
        with self._lock:
            last = self._segments[-1] if self._segments else None
            key = ("phase", "epoch", "height", "start")
            if last is None or any(last[k] != segment[k] for k in key):
                self._segments.append(segment)
                del self._segments[: -self.max_segments]
            for height in range(max(0, state.height - _core.ROUND_RING + 1), state.height + 1):
                with contextlib.suppress(_core.CoordinatorError):
                    rnd = state.round(height)
                    if rnd.kind == _core.RoundKind.Empty:
                        continue
                    self._rounds[(rnd.epoch, rnd.height)] = round_entry(rnd)
            if len(self._rounds) > self.max_rounds or not _ordered(self._rounds):
                items = sorted(self._rounds.items())[-self.max_rounds :]
                self._rounds = OrderedDict(items)

    def timeline(self) -> list[dict[str, Any]]:
        """Phase segments, oldest first (`start`: coordinator unix seconds)."""
        with self._lock:
            return [dict(s) for s in self._segments]

    def rounds(self) -> list[dict[str, Any]]:
        """Recorded rounds, oldest first."""
        with self._lock:
            return [dict(r) for r in self._rounds.values()]

    def ejections(self) -> list[dict[str, Any]]:
        """Every ejection the recorded rounds hold: which slot, in which round."""
        return [
            {"slot": slot, "epoch": r["epoch"], "height": r["height"], "step": r["step"]}
            for r in self.rounds()
            for slot in r["ejected"]
        ]


def _ordered(rounds: OrderedDict[tuple[int, int], Any]) -> bool:
    keys = list(rounds)
    return all(a < b for a, b in zip(keys, keys[1:], strict=False))
