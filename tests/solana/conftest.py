"""Fixtures for the Solana program tests: the built `.so`, its IDL, and an anchorpy client.

Transactions are built the way the Python SDK will build them: anchorpy's `Program` namespace
from `idl/psyche_coordinator.json`, so a drift between the IDL and the program shows up here as
a failing transaction or a wrong decode, not as a silent mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from anchorpy import Context, Idl, Program, Provider, Wallet
from solana.rpc.async_api import AsyncClient
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID

ROOT = Path(__file__).resolve().parents[2]
PROGRAM_SO = ROOT / "target" / "deploy" / "psyche_coordinator.so"
IDL_PATH = ROOT / "idl" / "psyche_coordinator.json"
RUN_SEED = b"run"


@dataclass
class Coordinator:
    """Builds the program's instructions through anchorpy (no network is touched)."""

    program: Program

    @property
    def program_id(self) -> Pubkey:
        """The program id the IDL declares."""
        return self.program.program_id

    def run_address(self, run_id: bytes) -> Pubkey:
        """The run account's PDA, `["run", run_id]`."""
        return Pubkey.find_program_address([RUN_SEED, run_id], self.program_id)[0]

    def init_run(self, authority: Pubkey, run_id: bytes) -> Instruction:
        """`init_run(run_id)`: creates the run with `authority` as payer and authority."""
        return self.program.instruction["init_run"](
            list(run_id),
            ctx=Context(
                accounts={
                    "authority": authority,
                    "run": self.run_address(run_id),
                    "system_program": SYSTEM_PROGRAM_ID,
                }
            ),
        )

    def bump(self, authority: Pubkey, run: Pubkey) -> Instruction:
        """`bump()`: authority-only counter increment."""
        return self.program.instruction["bump"](
            ctx=Context(accounts={"authority": authority, "run": run})
        )

    def set_paused(self, authority: Pubkey, run: Pubkey, paused: bool) -> Instruction:
        """`set_paused(paused)`: authority-only pause switch."""
        return self.program.instruction["set_paused"](
            paused, ctx=Context(accounts={"authority": authority, "run": run})
        )

    def decode_run(self, data: bytes) -> Any:
        """Decodes a run account with the IDL's account coder (checks the discriminator)."""
        return self.program.coder.accounts.decode(data)

    def error_name(self, code: int) -> str | None:
        """The IDL's name for a custom error code, as Anchor clients report it."""
        for err in self.program.idl.errors or []:
            if err.code == code:
                return err.name
        return None


@pytest.fixture(scope="session")
def program_so() -> Path:
    """The SBF build of the program; `make sbf` (scripts/build-sbf.sh) produces it."""
    if not PROGRAM_SO.is_file():
        pytest.fail(f"{PROGRAM_SO} is missing: run `make sbf` (bash scripts/build-sbf.sh) first")
    return PROGRAM_SO


@pytest.fixture(scope="session")
def idl() -> Idl:
    """The committed IDL (legacy Anchor format, which anchorpy 0.21 reads)."""
    return Idl.from_json(IDL_PATH.read_text())


@pytest.fixture(scope="session")
def coordinator(idl: Idl) -> Coordinator:
    """An anchorpy `Program` for the IDL; its client is never used to send anything."""
    metadata = idl.metadata
    address = metadata.get("address") if isinstance(metadata, dict) else None
    if not isinstance(address, str):
        pytest.fail(f"{IDL_PATH} has no metadata.address (the program id)")
    program_id = Pubkey.from_string(address)
    provider = Provider(AsyncClient("http://127.0.0.1:1"), Wallet(Keypair()))
    return Coordinator(Program(idl, program_id, provider))
