"""The SBF build of the coordinator program, run in-process by LiteSVM (solders).

These are instruction-level tests of the real `.so`: every transaction is signed and executed
by the SVM, account data is read back and decoded with the IDL, and compute units are printed
(run pytest with `-s` to see them) so regressions are visible without timing assertions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata
from solders.transaction_status import InstructionErrorCustom, TransactionErrorInstructionError

from psyche_client import _core

RUN_ACCOUNT_SPACE = 88  # 8-byte discriminator + 80-byte Run


def send(
    svm: LiteSVM, payer: Keypair, ixs: Sequence[Instruction], signers: Sequence[Keypair] = ()
) -> TransactionMetadata | FailedTransactionMetadata:
    """Signs `ixs` with `payer` (fee payer) and `signers`, and executes them."""
    message = Message.new_with_blockhash(list(ixs), payer.pubkey(), svm.latest_blockhash())
    tx = VersionedTransaction(message, [payer, *signers])
    return svm.send_transaction(tx)


def ok(result: TransactionMetadata | FailedTransactionMetadata, what: str) -> TransactionMetadata:
    """Asserts the transaction succeeded, prints its compute units and returns its metadata."""
    assert isinstance(result, TransactionMetadata), f"{what} failed: {result}"
    print(f"CU {what}: {result.compute_units_consumed()}")
    return result


def custom_error(result: TransactionMetadata | FailedTransactionMetadata) -> int:
    """The custom program error code of a failed transaction's first instruction error."""
    assert isinstance(result, FailedTransactionMetadata), "the transaction should have failed"
    err = result.err()
    assert isinstance(err, TransactionErrorInstructionError), f"not an instruction error: {err}"
    custom = err.err
    assert isinstance(custom, InstructionErrorCustom), f"not a custom program error: {custom}"
    return int(custom.code)


@pytest.fixture
def svm(program_so: Path, coordinator: Any) -> LiteSVM:
    """A fresh LiteSVM with the program loaded at the IDL's address."""
    vm = LiteSVM()
    vm.add_program(coordinator.program_id, program_so.read_bytes())
    return vm


@pytest.fixture
def authority(svm: LiteSVM) -> Keypair:
    """A funded keypair that creates runs."""
    kp = Keypair()
    svm.airdrop(kp.pubkey(), 10_000_000_000)
    return kp


def test_init_run_creates_the_pda_with_core_state_version(
    svm: LiteSVM, coordinator: Any, authority: Keypair
) -> None:
    """The run is created at its PDA, rent-exempt, program-owned, with the core's layout version."""
    run_id = os.urandom(32)
    run = coordinator.run_address(run_id)

    ok(send(svm, authority, [coordinator.init_run(authority.pubkey(), run_id)]), "init_run")

    account = svm.get_account(run)
    assert account is not None
    assert account.owner == coordinator.program_id
    assert len(account.data) == RUN_ACCOUNT_SPACE
    assert account.lamports == svm.minimum_balance_for_rent_exemption(RUN_ACCOUNT_SPACE)
    decoded = coordinator.decode_run(bytes(account.data))
    assert decoded.authority == authority.pubkey()
    assert bytes(decoded.run_id) == run_id
    assert decoded.counter == 0
    assert decoded.state_version == _core.STATE_VERSION
    assert decoded.paused is False
    assert decoded.bump == Pubkey.find_program_address([b"run", run_id], coordinator.program_id)[1]


def test_authority_bumps_and_pauses(svm: LiteSVM, coordinator: Any, authority: Keypair) -> None:
    """The state-changing instructions change exactly the fields they own."""
    run_id = os.urandom(32)
    run = coordinator.run_address(run_id)
    ok(send(svm, authority, [coordinator.init_run(authority.pubkey(), run_id)]), "init_run")

    ok(send(svm, authority, [coordinator.bump(authority.pubkey(), run)]), "bump")
    svm.expire_blockhash()
    ok(send(svm, authority, [coordinator.bump(authority.pubkey(), run)]), "bump (2nd)")
    ok(send(svm, authority, [coordinator.set_paused(authority.pubkey(), run, True)]), "set_paused")

    account = svm.get_account(run)
    assert account is not None
    decoded = coordinator.decode_run(bytes(account.data))
    assert decoded.counter == 2
    assert decoded.paused is True

    ok(send(svm, authority, [coordinator.set_paused(authority.pubkey(), run, False)]), "unpause")
    account = svm.get_account(run)
    assert account is not None
    assert coordinator.decode_run(bytes(account.data)).paused is False


def test_wrong_signer_is_rejected_as_unauthorized(
    svm: LiteSVM, coordinator: Any, authority: Keypair
) -> None:
    """A valid signature from someone else is refused with the IDL's named error and no change."""
    run_id = os.urandom(32)
    run = coordinator.run_address(run_id)
    ok(send(svm, authority, [coordinator.init_run(authority.pubkey(), run_id)]), "init_run")

    intruder = Keypair()
    svm.airdrop(intruder.pubkey(), 1_000_000_000)
    for ix in (
        coordinator.bump(intruder.pubkey(), run),
        coordinator.set_paused(intruder.pubkey(), run, True),
    ):
        result = send(svm, intruder, [ix])
        code = custom_error(result)
        assert coordinator.error_name(code) == "Unauthorized"

    account = svm.get_account(run)
    assert account is not None
    decoded = coordinator.decode_run(bytes(account.data))
    assert decoded.counter == 0
    assert decoded.paused is False


def test_authority_that_does_not_sign_is_rejected(
    svm: LiteSVM, coordinator: Any, authority: Keypair
) -> None:
    """The authority's key without its signature: Anchor's AccountNotSigner (3010)."""
    run_id = os.urandom(32)
    run = coordinator.run_address(run_id)
    ok(send(svm, authority, [coordinator.init_run(authority.pubkey(), run_id)]), "init_run")

    payer = Keypair()
    svm.airdrop(payer.pubkey(), 1_000_000_000)
    signed = coordinator.bump(authority.pubkey(), run)
    unsigned = Instruction(
        signed.program_id,
        signed.data,
        [AccountMeta(authority.pubkey(), is_signer=False, is_writable=False), signed.accounts[1]],
    )
    assert custom_error(send(svm, payer, [unsigned])) == 3010


def test_run_at_wrong_address_is_rejected(
    svm: LiteSVM, coordinator: Any, authority: Keypair
) -> None:
    """init_run with an account that is not the run id's PDA: Anchor's ConstraintSeeds."""
    ix = coordinator.init_run(authority.pubkey(), os.urandom(32))
    elsewhere = coordinator.run_address(os.urandom(32))
    metas = list(ix.accounts)
    metas[1] = AccountMeta(elsewhere, is_signer=False, is_writable=True)
    bad = Instruction(ix.program_id, ix.data, metas)
    assert custom_error(send(svm, authority, [bad])) == 2006
    assert svm.get_account(elsewhere) is None


def test_second_init_of_the_same_run_fails(
    svm: LiteSVM, coordinator: Any, authority: Keypair
) -> None:
    """A run id can be claimed once: re-creating its PDA fails in the system program."""
    run_id = os.urandom(32)
    ok(send(svm, authority, [coordinator.init_run(authority.pubkey(), run_id)]), "init_run")
    svm.expire_blockhash()
    result = send(svm, authority, [coordinator.init_run(authority.pubkey(), run_id)])
    assert isinstance(result, FailedTransactionMetadata)
    # The system program refuses to create an account that is already in use.
    assert any("already in use" in line for line in result.meta().logs())


def test_unknown_instruction_is_rejected(
    svm: LiteSVM, coordinator: Any, authority: Keypair
) -> None:
    """Unknown discriminators fail like Anchor's fallback (101), not silently."""
    bad = Instruction(coordinator.program_id, bytes(8), [])
    assert custom_error(send(svm, authority, [bad])) == 101  # InstructionFallbackNotFound
