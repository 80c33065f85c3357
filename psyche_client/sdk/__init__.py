"""The Python SDK: `import psyche_client as psyche`, then `psyche.connect`, `create_run`, `join`.

Modules, one job each: `loop` (the SDK's background event loop, so blocking calls work inside
Jupyter), `source` (coordinator states from a TCP server or the Solana program), `status` (the
typed snapshot), `history` (loss, tokens/s, clients per step from witness submissions),
`handle` (`RunHandle`, `connect`), `run` (`create_run`), `joining` (`join`, `JoinHandle`).
Guide: docs/user-guide.md, "Python SDK"; example: examples/quickstart.ipynb.
"""

from psyche_client.sdk.handle import RunHandle, aconnect, connect
from psyche_client.sdk.history import History, StepRecord
from psyche_client.sdk.joining import JoinHandle, ajoin, join
from psyche_client.sdk.run import acreate_run, create_run
from psyche_client.sdk.status import ModelInfo, RunStatus

__all__ = [
    "History",
    "JoinHandle",
    "ModelInfo",
    "RunHandle",
    "RunStatus",
    "StepRecord",
    "aconnect",
    "acreate_run",
    "ajoin",
    "connect",
    "create_run",
    "join",
]
