"""What every duty of one client shares: its settings, its state so far, and small helpers.

The duty modules (warmup, train, witness, apply, audit, checkpoint, peers) are functions over one
`ClientContext`, so each can be read and tested on its own: a test builds a context around an
in-memory backend and calls the duty, with no loop, no processes and no sockets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from psyche_client import _core
from psyche_client.backend.base import CoordinatorBackend
from psyche_client.backend.tcp import ConnectionLost, CoordinatorRejected
from psyche_client.client.duties import DutyLog
from psyche_client.client.results import Disclosures, Received, RoundResults
from psyche_client.data.provider import TokenDataProvider
from psyche_client.errors import UserError
from psyche_client.identity import NodeKey
from psyche_client.p2p.config import P2PConfig
from psyche_client.p2p.manifest import Manifest
from psyche_client.p2p.node import P2PNode
from psyche_client.runspec import TrainingSpec
from psyche_client.training.model import CausalLM, ModelConfig
from psyche_client.training.trainer import Trainer

log = logging.getLogger("psyche.client")

ROUND_PHASES = (_core.Phase.RoundTrain, _core.Phase.RoundWitness)


@dataclass
class ClientOptions:
    """How this client runs (the run's shared settings come from the model directory)."""

    data: Callable[[int], TokenDataProvider]
    """Opens the run's data for a sample length (known once the model and its spec are in)."""
    checkpoint_dir: Path
    events_path: Path | None = None
    """JSON lines of what happened (applied steps with parameter hashes, losses): for tests and
    for operators who want a machine-readable log."""
    max_epochs: int | None = None
    poll_s: float = 0.25
    p2p: P2PConfig = field(default_factory=P2PConfig)
    on_status: Callable[[ClientStatus], None] | None = None


class ClientEjected(UserError, RuntimeError):
    """Verifiers reported this client's results and the coordinator ejected it."""


class ClientDesynced(UserError, RuntimeError):
    """An agreed result could not be obtained, so this client's model can no longer match."""


@dataclass
class ClientStatus:
    """What the live status line shows."""

    phase: str = "connecting"
    epoch: int = 0
    step: int = 0
    loss: float | None = None
    tokens_per_s: float = 0.0
    peers: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    applied_steps: int = 0
    empty_rounds: int = 0
    """Rounds skipped because no result reached a majority of witnesses (peers unreachable)."""
    resyncs: int = 0
    """Times this client lacked an agreed result and caught up from its peers' model."""
    desynced: bool = False
    """Lacking an agreed result and not yet caught up (not training meanwhile)."""
    network: str = ""
    """A p2p connectivity problem in one line ("" when fine), e.g. no peer reachable."""


@dataclass
class ClientContext:
    """One client's shared state; the duties read and update it."""

    backend: CoordinatorBackend
    key: NodeKey
    options: ClientOptions
    status: ClientStatus = field(default_factory=ClientStatus)
    duties: DutyLog = field(default_factory=DutyLog)
    results: RoundResults = field(default_factory=RoundResults)
    disclosures: Disclosures = field(default_factory=Disclosures)
    clock: Callable[[], float] = time.time
    """Wall-clock seconds, compared with the core's round start times (tests pass the core's
    virtual clock)."""
    node: P2PNode | None = None
    trainer: Trainer | None = None
    spec: TrainingSpec | None = None
    model_config: ModelConfig | None = None
    data: TokenDataProvider | None = None
    run_id: bytes = b""
    applied: dict[int, int] = field(default_factory=dict)
    """epoch -> highest round of it applied (-1: the epoch started, nothing applied yet)."""
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    """step -> the parameters that step trained from (for verifying its results)."""
    last_loss: float | None = None
    tokens_per_s: float = 0.0
    connected: set[bytes] = field(default_factory=set)
    """Peers dialled (in flight) or connected; peers.watch_reachability drops lost ones."""
    dialing: set[bytes] = field(default_factory=set)
    fetching: set[bytes] = field(default_factory=set)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    scratch: CausalLM | None = None
    """A second model the verifier loads snapshots into (allocated on first use)."""
    shared: tuple[Manifest, bytes, dict[str, bytes]] | None = None
    """The model this client serves now: manifest, config blob, tensor bytes (sharing.py)."""
    behind: int | None = None
    """The first round of this epoch whose agreed results could not be obtained, while the
    client is catching up from peers (resync.py); None when in sync."""
    behind_why: str = ""
    """Why that round could not be applied."""
    absent: bool = False
    """Rounds went on while this client was not a healthy member (dropped, pending, withdrawn):
    its model no longer follows the run, so the next warmup loads the peers' (warmup.py)."""
    resync_failures: int = 0
    """Consecutive resync attempts that found no model a majority of peers agree on."""
    applying: asyncio.Task[None] | None = None
    """The apply under way (apply.py `apply_in_turn`), when it had to wait on peers."""
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by the apply when it starts waiting on peers (a missing result, a resync), so the
    round's other duties go on meanwhile."""

    def event(self, kind: str, **fields: Any) -> None:
        """Append one JSON-line event (tests and operators read these)."""
        if self.options.events_path is None:
            return
        record = {"event": kind, "time": time.time(), **fields}
        with open(self.options.events_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run `coro` in the background; cancelled when the client shuts down."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def send(self, what: str, request: Any) -> bool | None:
        """Send one message: True if accepted, False if refused, None if it may not have
        arrived (connection dropped), in which case the caller may try again."""
        try:
            await request
            return True
        except CoordinatorRejected as e:
            log.info("%s refused: %s", what, e)
            return False
        except (ConnectionLost, TimeoutError) as e:
            log.info("%s not delivered: %s", what, e)
            return None
        except Exception as e:  # noqa: BLE001 - any transport failure (RPC, socket): retry later
            log.warning("%s failed: %r", what, e)
            return None

    def store(self, step: int, rec: Received) -> None:
        self.results.add(step, rec)


def node_key_of(state: _core.Coordinator, slot: int) -> bytes:
    return state.client(slot).node_key


def slot_of(state: _core.Coordinator, node_key: bytes) -> int | None:
    for c in state.clients():
        if c.node_key == node_key:
            return c.slot
    return None


def round_deadline(state: _core.Coordinator, height: int) -> float:
    """When a witness or verifier of `height` stops waiting for results: half the round's train
    window (the core's adaptive choice, see crates/coordinator/src/timing.rs)."""
    r = state.round(height)
    return r.started_at + max(1, r.train_secs // 2)
