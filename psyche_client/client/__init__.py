"""The run client: one participant of a training run (see `loop`)."""

from psyche_client.client.loop import (
    ClientDesynced,
    ClientEjected,
    ClientOptions,
    ClientStatus,
    RunClient,
)

__all__ = ["ClientDesynced", "ClientEjected", "ClientOptions", "ClientStatus", "RunClient"]
