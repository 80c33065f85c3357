"""Fixtures for the Solana program tests: the built `.so`, the SDK's instruction builders (from
`idl/psyche_coordinator.json` through anchorpy), and a LiteSVM harness that mirrors every
transition in the core bindings.

Transactions are built the way the SDK builds them, so a drift between the IDL and the program
shows up as a failing transaction or a wrong decode, not as a silent mismatch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from anchorpy import Idl

from psyche_client.solana.litesvm import Svm
from psyche_client.solana.program import CoordinatorProgram, load_idl

ROOT = Path(__file__).resolve().parents[2]
PROGRAM_SO = ROOT / "target" / "deploy" / "psyche_coordinator.so"
IDL_PATH = ROOT / "idl" / "psyche_coordinator.json"


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
