"""What a client owes the run, and the record of what it already did.

Every duty comes up once per (epoch, height): `_react` may look at the same state many times
(each state push and every `poll_s`), so each duty module asks `DutyLog.once` before acting and
`retry` when a send may not have arrived (the next reaction then tries again).
"""

from __future__ import annotations

import enum


class Duty(enum.Enum):
    """One thing a client does for a given (epoch, height)."""

    JOIN = "join"
    """Ask for a slot (keyed by the state's nonce: retried as the run changes)."""
    WARMUP = "warmup"
    """Get the model and tell the coordinator it is ready."""
    SNAPSHOT = "snapshot"
    """Keep the parameters a round trains from, for verifying its results next round."""
    TRAIN = "train"
    """Train the assigned batch and announce the result and its momentum."""
    LATE_TRAIN = "late_train"
    """Train it after all: the round's first reaction skipped training (its predecessors were not
    applied) and a resync applied them while the round still trains."""
    PULL = "pull"
    """Ask peers directly for announcements gossip may have missed."""
    GATHER = "gather"
    """Every client (witness or not) collects the previous round's results while peers still
    serve them, from any holder (announcements and HAVEs pulled from peers)."""
    WITNESS = "witness"
    """Attest which results of the previous round this client holds."""
    VERIFY = "verify"
    """Recompute the assigned target's previous-round result."""
    HEALTH = "health"
    """Ask the coordinator to drop members a final round found missing."""
    COOLDOWN = "cooldown"
    """Save (and, for the lowest healthy slot, declare) the epoch's checkpoint."""
    FINISH = "finish"
    """Save the final model when the run ends."""


class DutyLog:
    """The duties done (or under way) per (epoch, height), and one-time warnings."""

    def __init__(self) -> None:
        self._done: set[tuple[Duty, int, int]] = set()
        self._warned: set[str] = set()

    def once(self, duty: Duty, epoch: int, height: int) -> bool:
        """True the first time `duty` comes up for (epoch, height); marks it done."""
        key = (duty, epoch, height)
        if key in self._done:
            return False
        self._done.add(key)
        return True

    def done(self, duty: Duty, epoch: int, height: int) -> bool:
        return (duty, epoch, height) in self._done

    def mark(self, duty: Duty, epoch: int, height: int) -> None:
        self._done.add((duty, epoch, height))

    def retry(self, duty: Duty, epoch: int, height: int) -> None:
        """Forget that `duty` was done, so the next reaction does it again."""
        self._done.discard((duty, epoch, height))

    def warn_once(self, what: str) -> bool:
        """True the first time `what` is seen (for log lines that would repeat every poll)."""
        if what in self._warned:
            return False
        self._warned.add(what)
        return True
