"""Fixtures for the Solana program tests: the built `.so`, the SDK's instruction builders (from
`idl/psyche_coordinator.json` through anchorpy), and a LiteSVM harness that mirrors every
transition in the core bindings.

Transactions are built the way the SDK builds them, so a drift between the IDL and the program
shows up as a failing transaction or a wrong decode, not as a silent mismatch.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anchorpy import Idl
from xprocess import ProcessStarter

from psyche_client.solana.program import CoordinatorProgram, load_idl
from tests.support.litesvm_harness import Svm

ROOT = Path(__file__).resolve().parents[2]
PROGRAM_SO = ROOT / "target" / "deploy" / "psyche_coordinator.so"
IDL_PATH = ROOT / "idl" / "psyche_coordinator.json"
START_SCRIPT = ROOT / "localnet" / "start-validator.sh"
VALIDATOR_BIN = (
    Path.home() / ".cache" / "psyche" / "validator-3.1.12" / "bin" / "solana-test-validator"
)


@pytest.fixture(scope="session")
def program_so() -> Path:
    """The SBF build of the program; `make sbf` (scripts/build-sbf.sh) produces it."""
    if not PROGRAM_SO.is_file():
        pytest.fail(f"{PROGRAM_SO} is missing: run `make sbf` (bash scripts/build-sbf.sh) first")
    return PROGRAM_SO


@pytest.fixture(scope="session")
def idl() -> Idl:
    """The committed IDL (legacy Anchor format, which anchorpy 0.21 reads)."""
    return load_idl(IDL_PATH)


@pytest.fixture(scope="session")
def coordinator(idl: Idl) -> CoordinatorProgram:
    """The SDK's instruction builders for the IDL's program id."""
    return CoordinatorProgram(idl)


@pytest.fixture
def svm(program_so: Path, coordinator: CoordinatorProgram) -> Svm:
    """A fresh LiteSVM with the program loaded and a funded run owner."""
    return Svm(coordinator, program_so)


def free_port(pair: bool = False) -> int:
    """A port free on 127.0.0.1 now (and its successor too if `pair`: the RPC websocket)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not pair:
            return port
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


@pytest.fixture(scope="session")
def rpc_url(
    xprocess: Any, program_so: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Starts localnet/start-validator.sh under xprocess (one validator for the session)."""
    if not VALIDATOR_BIN.exists() and "PSYCHE_VALIDATOR_BIN" not in os.environ:
        pytest.fail(
            f"{VALIDATOR_BIN} is missing: run `make validator` (localnet/install-validator.sh)"
        )
    rpc_port = free_port(pair=True)
    env = dict(os.environ)
    env.update(
        PSYCHE_RPC_PORT=str(rpc_port),
        PSYCHE_FAUCET_PORT=str(free_port()),
        PSYCHE_GOSSIP_PORT=str(free_port()),
        PSYCHE_LEDGER_DIR=str(tmp_path_factory.mktemp("ledger")),
        PSYCHE_PROGRAM_SO=str(program_so),
    )

    class Starter(ProcessStarter):  # type: ignore[misc]
        pattern = "start-validator: ready"
        args = ["bash", str(START_SCRIPT)]
        timeout = 300
        terminate_on_interrupt = True

    Starter.env = env
    name = f"psyche-localnet-{rpc_port}"
    xprocess.ensure(name, Starter, restart=True)
    try:
        yield f"http://127.0.0.1:{rpc_port}"
    finally:
        xprocess.getinfo(name).terminate()
