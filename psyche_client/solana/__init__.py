"""Python SDK for the Psyche coordinator program on Solana.

- `program`: instruction builders from the IDL (anchorpy), PDAs, decoding through the core;
- `rpc`: `SolanaCoordinatorClient`, sending transactions over JSON-RPC with retries and
  confirmation, creating runs (system `create_account` + `init_run` in one transaction) and
  reading the decoded state.
"""

from psyche_client.runid import run_id_bytes
from psyche_client.solana.program import (
    COORDINATOR_SPACE,
    CoordinatorProgram,
    RunAccount,
    decode_coordinator,
    load_idl,
)
from psyche_client.solana.rpc import ProgramRejected, SendFailed, SolanaCoordinatorClient

__all__ = [
    "ProgramRejected",
    "SendFailed",
    "SolanaCoordinatorClient",
    "COORDINATOR_SPACE",
    "CoordinatorProgram",
    "RunAccount",
    "decode_coordinator",
    "load_idl",
    "run_id_bytes",
]
