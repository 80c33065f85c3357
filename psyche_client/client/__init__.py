"""The run client: one participant of a training run (see `loop` for how a round goes).

Modules, one job each: `loop` (react to each coordinator state), `context` (shared state and
helpers), `duties` (what is owed per round), `results` (received results, awaitable), `peers`
(p2p plumbing), `warmup`, `train`, `witness`, `audit` (verification), `apply`, `checkpoint`.
"""

from psyche_client.client.context import (
    ClientDesynced,
    ClientEjected,
    ClientOptions,
    ClientStatus,
)
from psyche_client.client.loop import RunClient

__all__ = ["ClientDesynced", "ClientEjected", "ClientOptions", "ClientStatus", "RunClient"]
