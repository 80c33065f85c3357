"""Everything the dashboard page shows, as one JSON-ready document (`GET /api/run`).

Sources, joined here: the SDK handle (status, the newest coordinator state, the loss /
tokens/s history), the `RunRecorder` (phase timeline, rounds, ejections) and the clients'
event files (`ClientEvents`: bytes in/out, own loss and tokens/s, verification outcomes).
Clients are the coordinator's slots; an events file is joined to the slot its newest `epoch`
event names. Lists are capped so that one response stays small however long the run.
"""

from __future__ import annotations

import math
import time
from typing import Any

from psyche_client import _core
from psyche_client.dashboard.events import ClientEvents, ClientFigures
from psyche_client.dashboard.recorder import RunRecorder
from psyche_client.sdk.history import History
from psyche_client.sdk.status import RunStatus

MAX_POINTS = 2000
MAX_ROUNDS_SHOWN = 120
TROUBLE = ("desynced", "resync failed", "peers unreachable")
"""A client's own notes that make a Healthy slot show as not ok."""
HEALTH = {
    "Healthy": "ok",
    "Pending": "joining",
    "Dropped": "dropped",
    "Withdrawn": "left",
    "Ejected": "ejected",
}


def client_rows(
    state: _core.Coordinator, recorder: RunRecorder, figures: list[ClientFigures]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(one row per coordinator slot, the event files that match no slot)."""
    by_slot = {f.slot: f for f in figures if f.slot is not None}
    rounds = recorder.rounds()
    last_sub: dict[int, dict[str, Any]] = {}
    reported: dict[int, int] = {}
    ejected_at: dict[int, dict[str, Any]] = {}
    for r in rounds:
        for s in r["submissions"]:
            last_sub[s["slot"]] = {**s, "epoch": r["epoch"], "height": r["height"]}
        for slot in r["reported"]:
            reported[slot] = reported.get(slot, 0) + 1
        for slot in r["ejected"]:
            ejected_at[slot] = {"epoch": r["epoch"], "height": r["height"], "step": r["step"]}
    rows = []
    used: set[int] = set()
    for c in state.clients():
        fig = by_slot.get(c.slot)
        if fig is not None:
            used.add(c.slot)
        health = HEALTH.get(c.state.name, c.state.name.lower())
        if health == "ok" and fig is not None and fig.note in TROUBLE:
            health = fig.note
        rows.append(
            {
                "slot": c.slot,
                "wallet": c.wallet.hex(),
                "node_key": c.node_key.hex(),
                "state": c.state.name,
                "health": health,
                "joined_epoch": c.joined_epoch,
                "witness": last_sub.get(c.slot),
                "reports_sent": reported.get(c.slot, 0),
                "ejected_at": ejected_at.get(c.slot),
                "events": None if fig is None else fig.as_dict(),
            }
        )
    unmatched = [f.as_dict() for f in figures if f.slot is None or f.slot not in used]
    return rows, unmatched


def history_points(history: History) -> list[dict[str, Any]]:
    """Loss and tokens/s per step (the newest `MAX_POINTS`), requeued steps marked."""
    out = []
    for r in history.records(include_requeued=True)[-MAX_POINTS:]:
        out.append(
            {
                "step": r.step,
                "epoch": r.epoch,
                "height": r.height,
                "loss": r.loss,
                "tokens_per_s": r.tokens_per_s,
                "trainers": r.trainers,
                "witnesses": r.witnesses,
                "requeued": r.requeued,
            }
        )
    return out


def build_snapshot(
    *,
    address: str,
    backend: str,
    status: RunStatus,
    state: _core.Coordinator,
    history: History,
    recorder: RunRecorder,
    events: ClientEvents,
    error: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The document `/api/run` serves (plain JSON types only; NaN becomes null)."""
    clients, unmatched = client_rows(state, recorder, events.clients())
    rounds = recorder.rounds()
    doc = {
        "address": address,
        "backend": backend,
        "now": time.time() if now is None else now,
        "connected": error is None,
        "error": error,
        "status": {**status.as_dict(), "progress": status.progress, "finished": status.finished},
        "phase_started_at": state.phase_started_at,
        "paused": state.paused,
        "epochs_completed": state.epochs_completed,
        "train_estimate_secs": state.train_estimate_secs,
        "timeline": recorder.timeline(),
        "history": history_points(history),
        "rounds": rounds[-MAX_ROUNDS_SHOWN:],
        "clients": clients,
        "unmatched_clients": unmatched,
        "ejections": recorder.ejections(),
        "banned": len(state.banned()),
        "reports": events.reports(),
    }
    return _clean(doc)


def _clean(v: Any) -> Any:
    """JSON has no NaN/inf: they become null."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v
