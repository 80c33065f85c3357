"""The run's recent history as a handle sees it: loss, tokens/s and clients per step.

Nothing here needs a client's logs: the coordinator state itself holds the last `ROUND_RING`
rounds, and each witness's submission carries the loss and tokens/s of the step it trained in
that round (`loss_milli`, `tokens_per_sec`). A handle that watches records every round it sees
before it leaves the ring, so a watched run keeps its whole curve (bounded by `max_steps`);
a handle connected late starts from whatever rounds the ring still holds.

Witness-reported numbers are claims of the witnesses, not verified: a lying witness can report
any loss. They are good for a curve, not for decisions.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from psyche_client import _core


@dataclass(frozen=True)
class StepRecord:
    """One data round (one training step) as its witnesses reported it."""

    step: int
    epoch: int
    height: int
    loss: float | None
    """Mean loss the round's witnesses reported (None before any witness submitted)."""
    tokens_per_s: float
    """Run throughput estimate: mean reported tokens/s per client times the trainers."""
    tokens_per_s_per_client: float
    trainers: int
    members: int
    witnesses: int
    """Witness submissions received so far for the round."""
    requeued: bool
    """The round's results were not applied (its data went back on the queue)."""
    ejected: tuple[int, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "ejected": list(self.ejected)}


def record_of(state: _core.Coordinator, height: int) -> StepRecord | None:
    """The record of round `height` of the current epoch, if it is a data round in the ring."""
    try:
        rnd = state.round(height)
    except _core.CoordinatorError:
        return None
    if rnd.kind != _core.RoundKind.Data or rnd.epoch != state.epoch:
        return None
    subs = rnd.submissions
    losses = [s.loss_milli / 1000 for s in subs if s.loss_milli > 0]
    speeds = [s.tokens_per_sec for s in subs if s.tokens_per_sec > 0]
    per_client = sum(speeds) / len(speeds) if speeds else 0.0
    return StepRecord(
        step=rnd.step,
        epoch=rnd.epoch,
        height=rnd.height,
        loss=sum(losses) / len(losses) if losses else None,
        tokens_per_s=per_client * rnd.trainer_count,
        tokens_per_s_per_client=per_client,
        trainers=rnd.trainer_count,
        members=rnd.member_count,
        witnesses=len(subs),
        requeued=rnd.requeued,
        ejected=tuple(rnd.ejected),
    )


class History:
    """A rolling record of steps, newest last; `observe` each state as it arrives."""

    def __init__(self, max_steps: int = 100_000) -> None:
        self.max_steps = max_steps
        self._steps: OrderedDict[int, StepRecord] = OrderedDict()
        self._lock = threading.Lock()
        """The SDK loop records while the user's thread reads (`records`, `copy`)."""

    def observe(self, state: _core.Coordinator) -> bool:
        """Record the rounds `state` holds; True if any record was added or changed."""
        changed = False
        lo = max(0, state.height - _core.ROUND_RING + 1)
        with self._lock:
            for height in range(lo, state.height + 1):
                with contextlib.suppress(_core.CoordinatorError):
                    rec = record_of(state, height)
                    if rec is None or self._steps.get(rec.step) == rec:
                        continue
                    newest = next(reversed(self._steps), -1)
                    self._steps[rec.step] = rec
                    if rec.step < newest:
                        self._steps = OrderedDict(sorted(self._steps.items()))
                    changed = True
            while len(self._steps) > self.max_steps:
                self._steps.popitem(last=False)
        return changed

    def records(self, include_requeued: bool = False) -> list[StepRecord]:
        """Steps in order; requeued rounds (nothing applied) only when asked for."""
        with self._lock:
            values = list(self._steps.values())
        return [r for r in values if include_requeued or not r.requeued]

    def latest(self) -> StepRecord | None:
        """The newest step with a witness report (None before any)."""
        for rec in reversed(self.records()):
            if rec.witnesses:
                return rec
        return None

    def losses(self) -> dict[int, float]:
        """step → mean reported loss, for the steps that have one."""
        return {r.step: r.loss for r in self.records() if r.loss is not None}

    def tokens_per_s(self) -> dict[int, float]:
        return {r.step: r.tokens_per_s for r in self.records() if r.witnesses}

    def clients(self) -> dict[int, int]:
        """step → trainers of that step."""
        return {r.step: r.trainers for r in self.records()}

    def copy(self) -> History:
        out = History(self.max_steps)
        with self._lock:
            out._steps = OrderedDict(self._steps)
        return out

    def __len__(self) -> int:
        return len(self.records())

    def __iter__(self) -> Any:
        return iter(self.records())

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per step (e.g. `pandas.DataFrame(history.to_rows())`)."""
        return [r.as_dict() for r in self.records(include_requeued=True)]
