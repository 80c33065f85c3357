"""JSON-RPC side of the SDK: send transactions with retries and confirmation, create runs, read
and decode the run and coordinator accounts.

Errors the program returns come back as `ProgramRejected(name, code)`, named from the IDL (core
errors are `6000 + CoreError::code()`, so the name is the core's, e.g. `WrongPhase`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence

from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment, Confirmed
from solana.rpc.core import RPCException
from solana.rpc.types import MemcmpOpts, TxOpts
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_status import (
    InstructionErrorCustom,
    TransactionConfirmationStatus,
    TransactionErrorInstructionError,
)

from psyche_client import _core
from psyche_client.solana.program import (
    ANCHOR_ERRORS,
    COORDINATOR_SPACE,
    PEER_RUN_OFFSET,
    PEER_SPACE,
    CoordinatorProgram,
    PeerEntry,
    RunAccount,
    decode_coordinator,
)


class ProgramRejected(Exception):
    """The program (or the runtime) refused a transaction."""

    def __init__(self, name: str, code: int | None, detail: str = "") -> None:
        super().__init__(f"{name} ({code}): {detail}" if detail else f"{name} ({code})")
        self.name = name
        self.code = code


class SendFailed(Exception):
    """A transaction could not be landed (RPC errors, expiry) after all retries."""


def error_of(err: object, program: CoordinatorProgram) -> ProgramRejected:
    """A `ProgramRejected` for a transaction error (custom codes named from the IDL)."""
    if isinstance(err, TransactionErrorInstructionError) and isinstance(
        err.err, InstructionErrorCustom
    ):
        code = int(err.err.code)
        name = program.error_name(code) or ANCHOR_ERRORS.get(code) or f"Custom{code}"
        return ProgramRejected(name, code)
    m = re.search(r"custom program error: 0x([0-9a-fA-F]+)", str(err))
    if m:
        code = int(m.group(1), 16)
        name = program.error_name(code) or ANCHOR_ERRORS.get(code) or f"Custom{code}"
        return ProgramRejected(name, code)
    return ProgramRejected(type(err).__name__, None, str(err))


class SolanaCoordinatorClient:
    """Talks to the coordinator program over JSON-RPC.

    `send` builds a legacy-format versioned transaction with a fresh blockhash, sends it with
    preflight (so program errors surface at once), and waits for `commitment`; it re-sends on a
    transient RPC failure or an expired blockhash, up to `retries` times.
    """

    def __init__(
        self,
        rpc_url: str,
        payer: Keypair,
        program: CoordinatorProgram | None = None,
        commitment: Commitment = Confirmed,
        retries: int = 4,
        confirm_timeout_s: float = 60.0,
    ) -> None:
        self.rpc = AsyncClient(rpc_url, commitment=commitment, timeout=30)
        self.payer = payer
        self.program = program or CoordinatorProgram()
        self.commitment = commitment
        self.retries = retries
        self.confirm_timeout_s = confirm_timeout_s

    async def close(self) -> None:
        await self.rpc.close()

    # ------------------------------------------------------------------ sending

    async def send(
        self, ixs: Sequence[Instruction], signers: Sequence[Keypair] = (), what: str = "tx"
    ) -> Signature:
        """Signs with the payer and `signers`, sends, confirms; raises `ProgramRejected`."""
        unique = {bytes(self.payer.pubkey()): self.payer}
        for s in signers:
            unique.setdefault(bytes(s.pubkey()), s)
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(0.25 * 2**attempt, 4.0))
            try:
                blockhash = (await self.rpc.get_latest_blockhash()).value.blockhash
                message = Message.new_with_blockhash(list(ixs), self.payer.pubkey(), blockhash)
                tx = VersionedTransaction(message, list(unique.values()))
                opts = TxOpts(preflight_commitment=self.commitment)
                signature = (await self.rpc.send_transaction(tx, opts=opts)).value
            except RPCException as e:
                data = e.args[0] if e.args else None
                if isinstance(data, SendTransactionPreflightFailureMessage):
                    err = data.data.err
                    if err is not None and "BlockhashNotFound" not in str(err):
                        raise error_of(err, self.program) from e
                if "custom program error" in str(e):
                    raise error_of(e, self.program) from e
                last = e
                continue
            except (SolanaRpcException, OSError) as e:
                last = e
                continue
            if await self._confirm(signature):
                return signature
            last = SendFailed(f"{what}: {signature} not confirmed")
        raise SendFailed(f"{what} failed after {self.retries + 1} attempts: {last}")

    async def _confirm(self, signature: Signature) -> bool:
        """True once confirmed; raises `ProgramRejected` if it failed on chain; False on
        timeout (expired blockhash: the caller re-sends)."""
        deadline = time.monotonic() + self.confirm_timeout_s
        while time.monotonic() < deadline:
            resp = await self.rpc.get_signature_statuses([signature])
            status = resp.value[0]
            if status is not None and status.err is not None:
                raise error_of(status.err, self.program)
            if status is not None and status.confirmation_status in (
                TransactionConfirmationStatus.Confirmed,
                TransactionConfirmationStatus.Finalized,
            ):
                return True
            await asyncio.sleep(0.2)
        return False

    # ------------------------------------------------------------------ runs

    async def create_run(
        self,
        run_id: bytes,
        config: _core.Config,
        model: _core.ModelRef,
        join_authority: Pubkey | None = None,
        coordinator: Keypair | None = None,
    ) -> tuple[Pubkey, Pubkey]:
        """Creates the coordinator account and the run in one transaction (the payer owns the
        run). Returns (run PDA, coordinator account)."""
        coordinator = coordinator or Keypair()
        lamports = (await self.rpc.get_minimum_balance_for_rent_exemption(COORDINATOR_SPACE)).value
        p = self.program
        owner = self.payer.pubkey()
        ixs = [
            p.create_coordinator_account(owner, coordinator.pubkey(), lamports),
            p.init_run(owner, coordinator.pubkey(), run_id, config, model, join_authority),
        ]
        await self.send(ixs, [coordinator], "init_run")
        return p.run_address(run_id), coordinator.pubkey()

    async def run_account(self, run: Pubkey) -> RunAccount:
        info = (await self.rpc.get_account_info(run)).value
        if info is None:
            raise LookupError(f"run account {run} not found")
        if info.owner != self.program.program_id:
            raise ValueError(f"{run} is not owned by the coordinator program")
        return self.program.decode_run(run, bytes(info.data))

    async def state(self, coordinator: Pubkey) -> _core.Coordinator:
        """The decoded core state of a coordinator account."""
        info = (await self.rpc.get_account_info(coordinator)).value
        if info is None:
            raise LookupError(f"coordinator account {coordinator} not found")
        if info.owner != self.program.program_id:
            raise ValueError(f"{coordinator} is not owned by the coordinator program")
        return decode_coordinator(bytes(info.data))

    async def peers(self, run: Pubkey) -> list[PeerEntry]:
        """Every peer entry of `run` (getProgramAccounts: size + run filter)."""
        resp = await self.rpc.get_program_accounts(
            self.program.program_id,
            encoding="base64",
            filters=[PEER_SPACE, MemcmpOpts(offset=PEER_RUN_OFFSET, bytes=str(run))],
        )
        out = []
        for keyed in resp.value:
            try:
                out.append(self.program.decode_peer(bytes(keyed.account.data)))
            except Exception:  # noqa: BLE001 - skip anything that does not decode
                continue
        return out

    async def airdrop(self, to: Pubkey, lamports: int) -> None:
        """Localnet/devnet faucet, confirmed."""
        signature = (await self.rpc.request_airdrop(to, lamports)).value
        deadline = time.monotonic() + self.confirm_timeout_s
        while time.monotonic() < deadline:
            if await self._confirm(signature):
                return
        raise SendFailed(f"airdrop to {to} not confirmed")
