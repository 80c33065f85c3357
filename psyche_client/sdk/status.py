"""A run's status as plain, typed data (what `RunHandle.status()` returns).

It is derived from the coordinator state alone, so it reads the same for a TCP server and the
Solana program, and two snapshots compare equal exactly when nothing a user sees has changed
(that is what `watch()` yields on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psyche_client import _core
from psyche_client.runid import run_name
from psyche_client.sdk.history import StepRecord

CLIENT_STATES = ("Pending", "Healthy", "Dropped", "Withdrawn", "Ejected")


@dataclass(frozen=True)
class ModelInfo:
    """Where the run's current model is (`kind` is the core's ModelKind name)."""

    kind: str
    location: str
    revision: str


@dataclass(frozen=True)
class RunStatus:
    """One snapshot of a run."""

    run: str
    """The run's name (its id as text) or, for ids that are not text, its hex."""
    phase: str
    """Core phase name: WaitingForMembers, Warmup, RoundTrain, RoundWitness, Cooldown, Paused,
    Finished (Uninitialized only before a run exists)."""
    epoch: int
    height: int
    """Round within the epoch."""
    step: int
    """Data rounds started (the step result commitments name)."""
    steps_done: int
    """Training steps completed, as the core counts them (`Coordinator.steps_done`)."""
    total_steps: int
    clients: dict[str, int] = field(default_factory=dict)
    """Client slots by state name (Pending, Healthy, Dropped, Withdrawn, Ejected)."""
    config: dict[str, int] = field(default_factory=dict)
    model: ModelInfo = field(default_factory=lambda: ModelInfo("Peers", "", ""))
    loss: float | None = None
    """The newest step's mean loss as its witnesses reported it (None before any)."""
    tokens_per_s: float = 0.0
    """The newest step's throughput estimate (see `StepRecord.tokens_per_s`)."""

    @property
    def finished(self) -> bool:
        return self.phase == "Finished"

    @property
    def progress(self) -> float:
        """steps_done / total_steps, in [0, 1]."""
        return min(1.0, self.steps_done / self.total_steps) if self.total_steps else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "phase": self.phase,
            "epoch": self.epoch,
            "height": self.height,
            "step": self.step,
            "steps_done": self.steps_done,
            "total_steps": self.total_steps,
            "clients": dict(self.clients),
            "config": dict(self.config),
            "model": vars(self.model).copy(),
            "loss": self.loss,
            "tokens_per_s": self.tokens_per_s,
        }

    def __hash__(self) -> int:
        return hash((self.run, self.phase, self.epoch, self.height, self.step, self.steps_done))


def status_of(state: _core.Coordinator, latest: StepRecord | None = None) -> RunStatus:
    """The snapshot of a decoded coordinator state (`latest`: the newest recorded step)."""
    clients = {name: 0 for name in CLIENT_STATES}
    for c in state.clients():
        name = c.state.name
        if name in clients:
            clients[name] += 1
    model = state.model
    config = state.config.to_dict()
    return RunStatus(
        run=run_name(state.run_id),
        phase=state.phase.name,
        epoch=state.epoch,
        height=state.height,
        step=state.step,
        steps_done=state.steps_done,
        total_steps=config.get("total_steps", 0),
        clients=clients,
        config=config,
        model=ModelInfo(model.kind.name, model.location, model.revision),
        loss=None if latest is None else latest.loss,
        tokens_per_s=0.0 if latest is None else latest.tokens_per_s,
    )
