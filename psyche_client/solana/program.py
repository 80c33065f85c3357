"""Instruction builders, PDAs and decoders for the coordinator program, from its IDL.

Everything here is pure (no network): instructions are built by anchorpy's instruction coder from
`idl/psyche_coordinator.json`, the coordinator account is decoded by the core bindings
(`psyche_client._core.Coordinator.from_bytes`), and program errors are named from the IDL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anchorpy import Context, Idl, Program, Provider, Wallet
from solana.rpc.async_api import AsyncClient
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import CreateAccountParams, create_account
from solders.sysvar import SLOT_HASHES

from psyche_client import _core

IDL_PATH = Path(__file__).resolve().parent / "psyche_coordinator.json"
"""The package's copy of idl/psyche_coordinator.json (both written by idl/generate.py)."""
# The program's layout, defined once in Rust (psyche_core::layout) and read through `_core`.
RUN_SEED = _core.RUN_SEED
PEER_SEED = _core.PEER_SEED
PEER_SPACE = _core.PEER_SPACE
"""Peer PDA data: discriminator + run, wallet, node key, time, lengths, bump, two addresses."""
PEER_RUN_OFFSET = _core.PEER_RUN_OFFSET
RUN_DISCRIMINATOR_LEN = _core.DISCRIMINATOR_BYTES
RUN_SPACE = _core.RUN_SPACE
"""Run PDA data: discriminator + owner, join authority, coordinator, run id, version, bump."""
COORDINATOR_RUN_OFFSET = _core.COORDINATOR_RUN_OFFSET
COORDINATOR_STATE_OFFSET = _core.COORDINATOR_STATE_OFFSET
"""Coordinator account data: discriminator + run address, then the core state."""
COORDINATOR_SPACE = _core.COORDINATOR_SPACE
CORE_ERROR_BASE = _core.CORE_ERROR_BASE
MODEL_KINDS = {"LocalPath": 1, "HttpUrl": 2, "HuggingFace": 3, "Peers": 4}
ZERO_KEY = Pubkey.default()


def load_idl(path: Path | None = None) -> Idl:
    """The program's IDL (legacy Anchor format); `PSYCHE_IDL` overrides the path."""
    p = path or Path(os.environ.get("PSYCHE_IDL", IDL_PATH))
    return Idl.from_json(p.read_text())


@dataclass(frozen=True)
class RunAccount:
    """A decoded run PDA."""

    address: Pubkey
    owner: Pubkey
    join_authority: Pubkey | None
    coordinator: Pubkey
    run_id: bytes
    state_version: int
    bump: int


@dataclass(frozen=True)
class PeerEntry:
    """A decoded peer PDA: a client's advertised endpoints."""

    run: Pubkey
    wallet: bytes
    node_key: bytes
    p2p_addr: str
    fast_addr: str
    updated_at: int


class CoordinatorProgram:
    """Builds the program's instructions through anchorpy (no network is touched).

    The program id is `program_id`, else `$PSYCHE_PROGRAM_ID`, else the IDL's `metadata.address`
    (the localnet key)."""

    def __init__(self, idl: Idl | None = None, program_id: Pubkey | None = None) -> None:
        self.idl = idl or load_idl()
        metadata = self.idl.metadata if isinstance(self.idl.metadata, dict) else {}
        address = metadata.get("address")
        if program_id is None and os.environ.get("PSYCHE_PROGRAM_ID"):
            program_id = Pubkey.from_string(os.environ["PSYCHE_PROGRAM_ID"])
        if program_id is None:
            if not isinstance(address, str):
                raise ValueError("the IDL has no metadata.address")
            program_id = Pubkey.from_string(address)
        provider = Provider(AsyncClient("http://127.0.0.1:1"), Wallet(Keypair()))
        self.program = Program(self.idl, program_id, provider)
        self.program_id = program_id
        self._errors = {e.code: e.name for e in self.idl.errors or []}

    # ------------------------------------------------------------------ addresses, encoding

    def run_address(self, run_id: bytes) -> Pubkey:
        """The run PDA, `["run", run_id]`."""
        return Pubkey.find_program_address([RUN_SEED, run_id], self.program_id)[0]

    def peer_address(self, run: Pubkey, wallet: Pubkey) -> Pubkey:
        """A client's peer PDA, `["peer", run, wallet]`."""
        return Pubkey.find_program_address([PEER_SEED, bytes(run), bytes(wallet)], self.program_id)[
            0
        ]

    def config_arg(self, config: _core.Config) -> Any:
        """A core `Config` as the IDL's `Config` type."""
        return self.program.type["Config"](**config.to_dict(), reserved=[0] * 4)

    def model_arg(self, model: _core.ModelRef) -> Any:
        """A core `ModelRef` as the IDL's `ModelRef` type (the core's byte layout)."""
        location = model.location.encode()
        revision = model.revision.encode()
        return self.program.type["ModelRef"](
            kind=MODEL_KINDS[model.kind.name],
            pad0=0,
            location_len=len(location),
            revision_len=len(revision),
            pad1=[0, 0],
            location=list(location.ljust(248, b"\0")),
            revision=list(revision.ljust(64, b"\0")),
        )

    def error_name(self, code: int) -> str | None:
        """The IDL's name for a custom error code (core errors are 6000 + their code)."""
        return self._errors.get(code)

    # ------------------------------------------------------------------ instructions

    def _ix(self, name: str, *args: Any, accounts: dict[str, Pubkey]) -> Instruction:
        return self.program.instruction[name](*args, ctx=Context(accounts=accounts))

    def create_coordinator_account(
        self, payer: Pubkey, coordinator: Pubkey, lamports: int
    ) -> Instruction:
        """System `create_account` of the coordinator account (must precede `init_run` in the
        same transaction; `coordinator` signs)."""
        return create_account(
            CreateAccountParams(
                from_pubkey=payer,
                to_pubkey=coordinator,
                lamports=lamports,
                space=COORDINATOR_SPACE,
                owner=self.program_id,
            )
        )

    def init_run(
        self,
        owner: Pubkey,
        coordinator: Pubkey,
        run_id: bytes,
        config: _core.Config,
        model: _core.ModelRef,
        join_authority: Pubkey | None = None,
    ) -> Instruction:
        return self._ix(
            "init_run",
            list(run_id),
            join_authority or ZERO_KEY,
            self.config_arg(config),
            self.model_arg(model),
            accounts={
                "owner": owner,
                "run": self.run_address(run_id),
                "coordinator": coordinator,
                "system_program": SYSTEM_PROGRAM_ID,
            },
        )

    def _owner_accounts(self, owner: Pubkey, run: Pubkey, coordinator: Pubkey) -> Any:
        return {"owner": owner, "run": run, "coordinator": coordinator, "slot_hashes": SLOT_HASHES}

    def _member_accounts(self, user: Pubkey, run: Pubkey, coordinator: Pubkey) -> Any:
        return {"user": user, "run": run, "coordinator": coordinator, "slot_hashes": SLOT_HASHES}

    def update(
        self,
        owner: Pubkey,
        run: Pubkey,
        coordinator: Pubkey,
        config: _core.Config | None = None,
        model: _core.ModelRef | None = None,
        join_authority: Pubkey | None = None,
    ) -> Instruction:
        """Owner only, while paused; `join_authority=Pubkey.default()`: permissionless joins."""
        return self._ix(
            "update",
            None if config is None else self.config_arg(config),
            None if model is None else self.model_arg(model),
            join_authority,
            accounts=self._owner_accounts(owner, run, coordinator),
        )

    def set_paused(
        self, owner: Pubkey, run: Pubkey, coordinator: Pubkey, paused: bool
    ) -> Instruction:
        return self._ix(
            "set_paused", paused, accounts=self._owner_accounts(owner, run, coordinator)
        )

    def join_run(
        self,
        user: Pubkey,
        run: Pubkey,
        coordinator: Pubkey,
        node_key: bytes,
        authorizer: Pubkey | None = None,
    ) -> Instruction:
        """`authorizer`: the run's join authority (co-signs), or None for a permissionless run.
        The node key co-signs too (the program checks possession of the key it registers)."""
        accounts = self._member_accounts(user, run, coordinator)
        accounts["authorizer"] = authorizer or user
        accounts["node"] = Pubkey.from_bytes(bytes(node_key))
        return self._ix("join_run", list(node_key), accounts=accounts)

    def withdraw(self, user: Pubkey, run: Pubkey, coordinator: Pubkey) -> Instruction:
        return self._ix("withdraw", accounts=self._member_accounts(user, run, coordinator))

    def tick(self, run: Pubkey, coordinator: Pubkey) -> Instruction:
        return self._ix(
            "tick", accounts={"run": run, "coordinator": coordinator, "slot_hashes": SLOT_HASHES}
        )

    def warmup_witness(self, user: Pubkey, run: Pubkey, coordinator: Pubkey) -> Instruction:
        return self._ix("warmup_witness", accounts=self._member_accounts(user, run, coordinator))

    def witness(
        self,
        user: Pubkey,
        run: Pubkey,
        coordinator: Pubkey,
        position: int,
        results: bytes,
        trainers: bytes,
        loss_milli: int = 0,
        tokens_per_sec: int = 0,
        download_kib: int = 0,
    ) -> Instruction:
        t = self.program.type
        stats = t["WitnessStats"](
            loss_milli=loss_milli,
            tokens_per_sec=tokens_per_sec,
            download_kib=download_kib,
            reserved=0,
        )
        body = t["WitnessInput"](
            position=position,
            reserved=0,
            stats=stats,
            results=list(results),
            trainers=list(trainers),
        )
        return self._ix("witness", body, accounts=self._member_accounts(user, run, coordinator))

    def health_check(
        self, user: Pubkey, run: Pubkey, coordinator: Pubkey, target: int, height: int
    ) -> Instruction:
        return self._ix(
            "health_check",
            target,
            height,
            accounts=self._member_accounts(user, run, coordinator),
        )

    def report(self, user: Pubkey, run: Pubkey, coordinator: Pubkey, target: int) -> Instruction:
        return self._ix("report", target, accounts=self._member_accounts(user, run, coordinator))

    def checkpoint(
        self, user: Pubkey, run: Pubkey, coordinator: Pubkey, model: _core.ModelRef
    ) -> Instruction:
        return self._ix(
            "checkpoint",
            self.model_arg(model),
            accounts=self._member_accounts(user, run, coordinator),
        )

    def close_run(self, owner: Pubkey, run: Pubkey, coordinator: Pubkey) -> Instruction:
        return self._ix(
            "close_run", accounts={"owner": owner, "run": run, "coordinator": coordinator}
        )

    def advertise(
        self, user: Pubkey, run: Pubkey, coordinator: Pubkey, p2p_addr: str, fast_addr: str
    ) -> Instruction:
        """Publish (or replace) the user's endpoints in its peer PDA."""
        return self._ix(
            "advertise",
            p2p_addr,
            fast_addr,
            accounts={
                "user": user,
                "run": run,
                "coordinator": coordinator,
                "peer": self.peer_address(run, user),
                "system_program": SYSTEM_PROGRAM_ID,
            },
        )

    def close_peer(self, user: Pubkey, run: Pubkey) -> Instruction:
        return self._ix("close_peer", accounts={"user": user, "peer": self.peer_address(run, user)})

    # ------------------------------------------------------------------ decoding

    def decode_peer(self, data: bytes) -> PeerEntry:
        """A peer PDA's data, through the IDL's account coder (checks the discriminator)."""
        peer = self.program.coder.accounts.decode(data)
        return PeerEntry(
            run=peer.run,
            wallet=bytes(peer.wallet),
            node_key=bytes(peer.node_key),
            p2p_addr=bytes(peer.p2p_addr[: peer.p2p_addr_len]).decode(),
            fast_addr=bytes(peer.fast_addr[: peer.fast_addr_len]).decode(),
            updated_at=peer.updated_at,
        )

    def decode_run(self, address: Pubkey, data: bytes) -> RunAccount:
        """A run PDA's data, through the IDL's account coder (checks the discriminator)."""
        run = self.program.coder.accounts.decode(data)
        authority = run.join_authority
        return RunAccount(
            address=address,
            owner=run.owner,
            join_authority=None if authority == ZERO_KEY else authority,
            coordinator=run.coordinator,
            run_id=bytes(run.run_id),
            state_version=run.state_version,
            bump=run.bump,
        )


def decode_coordinator(data: bytes) -> _core.Coordinator:
    """The core state in a coordinator account's data (size and discriminator checked)."""
    if len(data) != COORDINATOR_SPACE:
        raise ValueError(f"coordinator account has {len(data)} bytes, expected {COORDINATOR_SPACE}")
    if data[:8] != COORDINATOR_DISCRIMINATOR:
        raise ValueError("not a coordinator account (discriminator mismatch)")
    return _core.Coordinator.from_bytes(data[COORDINATOR_STATE_OFFSET:])


def coordinator_run(data: bytes) -> Pubkey:
    """The run PDA a coordinator account belongs to."""
    return Pubkey.from_bytes(data[COORDINATOR_RUN_OFFSET:COORDINATOR_STATE_OFFSET])


def _discriminator(name: str) -> bytes:
    import hashlib

    return hashlib.sha256(f"account:{name}".encode()).digest()[:8]


COORDINATOR_DISCRIMINATOR = _discriminator("CoordinatorAccount")


ANCHOR_ERRORS = {
    100: "InstructionMissing",
    101: "InstructionFallbackNotFound",
    102: "InstructionDidNotDeserialize",
    2000: "ConstraintMut",
    2006: "ConstraintSeeds",
    3002: "AccountDiscriminatorMismatch",
    3003: "AccountDidNotDeserialize",
    3005: "AccountNotEnoughKeys",
    3007: "AccountOwnedByWrongProgram",
    3008: "InvalidProgramId",
    3010: "AccountNotSigner",
    3015: "AccountSysvarMismatch",
    4100: "DeclaredProgramIdMismatch",
}
"""Anchor's framework error codes the program returns (anchorpy's `LangErrorCode` names)."""
