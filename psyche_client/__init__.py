"""Psyche client: SDK, CLI, TCP coordinator server and training client.

`import psyche_client as psyche` gives the SDK (`psyche.connect`, `psyche.create_run`,
`psyche.join`, ...; see `psyche_client.sdk`). They are loaded on first use, so importing the
package stays cheap (no torch, no Solana libraries) for the CLI and for tools that only need a
submodule.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "History",
    "JoinHandle",
    "ModelInfo",
    "RunHandle",
    "RunStatus",
    "StepRecord",
    "__version__",
    "aconnect",
    "acreate_run",
    "ajoin",
    "connect",
    "create_run",
    "join",
]
_SDK_NAMES = frozenset(__all__) - {"__version__"}

if TYPE_CHECKING:
    from psyche_client.sdk import (
        History,
        JoinHandle,
        ModelInfo,
        RunHandle,
        RunStatus,
        StepRecord,
        aconnect,
        acreate_run,
        ajoin,
        connect,
        create_run,
        join,
    )


def __getattr__(name: str) -> Any:
    if name in _SDK_NAMES:
        value = getattr(importlib.import_module("psyche_client.sdk"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'psyche_client' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SDK_NAMES])
