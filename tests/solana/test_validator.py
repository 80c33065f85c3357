"""The program on a real solana-test-validator, driven over JSON-RPC with solana-py.

pytest-xprocess runs localnet/start-validator.sh (the same script as `make localnet`) on free
ports with a throwaway ledger; the script preloads target/deploy/psyche_coordinator.so and only
prints its "ready" line once the RPC reports healthy. This proves the validator accepts the
SBPF version the toolchain emits and that the SDK's transactions land and read back.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from solana.exceptions import SolanaRpcException
from solana.rpc.api import Client
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.types import TxOpts
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionConfirmationStatus
from xprocess import ProcessStarter

from psyche_client import _core

ROOT = Path(__file__).resolve().parents[2]
START_SCRIPT = ROOT / "localnet" / "start-validator.sh"
VALIDATOR_BIN = (
    Path.home() / ".cache" / "psyche" / "validator-3.1.12" / "bin" / "solana-test-validator"
)


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


@pytest.fixture(scope="module")
def rpc_url(
    xprocess: Any, program_so: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Starts localnet/start-validator.sh under xprocess; yields its RPC URL, stops it after."""
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


@pytest.fixture(scope="module")
def client(rpc_url: str) -> Client:
    """A solana-py RPC client at confirmed commitment."""
    return Client(rpc_url, commitment=Confirmed, timeout=30)


def confirm(client: Client, signature: Signature, what: str, timeout: float = 60.0) -> None:
    """Waits until `signature` is confirmed and succeeded (the validator builds slots ~400 ms).

    "Processed" is not enough: reads and preflight run at confirmed commitment, and would not
    yet see the transaction's effects.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_signature_statuses([signature]).value[0]
        if status is not None and status.err is not None:
            raise AssertionError(f"{what} failed on chain: {status.err}")
        if status is not None and status.confirmation_status in (
            TransactionConfirmationStatus.Confirmed,
            TransactionConfirmationStatus.Finalized,
        ):
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} not confirmed within {timeout} s")


def funded(client: Client, lamports: int = 2_000_000_000) -> Keypair:
    """A new keypair funded by the validator's faucet."""
    kp = Keypair()
    confirm(client, client.request_airdrop(kp.pubkey(), lamports).value, "airdrop")
    return kp


def send(client: Client, payer: Keypair, ix: Instruction, what: str) -> Signature:
    """Signs and sends `ix` through RPC (with preflight) and waits for confirmation."""
    blockhash = client.get_latest_blockhash().value.blockhash
    tx = VersionedTransaction(Message.new_with_blockhash([ix], payer.pubkey(), blockhash), [payer])
    signature = client.send_transaction(tx, opts=TxOpts(preflight_commitment=Confirmed)).value
    confirm(client, signature, what)
    return signature


def read_run(client: Client, coordinator: Any, run: Pubkey) -> Any:
    """Fetches the run account over RPC and decodes it with the IDL."""
    info = client.get_account_info(run).value
    assert info is not None, f"run account {run} not found"
    assert info.owner == coordinator.program_id
    return coordinator.decode_run(bytes(info.data))


def test_program_is_loaded_and_executable(client: Client, coordinator: Any) -> None:
    """--bpf-program put the .so at the IDL's address as an executable account."""
    info = client.get_account_info(coordinator.program_id).value
    assert info is not None
    assert info.executable


def test_init_run_and_bump_through_rpc(client: Client, coordinator: Any) -> None:
    """The SDK path end to end: transactions over RPC, state read back and decoded via the IDL."""
    authority = funded(client)
    run_id = os.urandom(32)
    run = coordinator.run_address(run_id)

    send(client, authority, coordinator.init_run(authority.pubkey(), run_id), "init_run")
    decoded = read_run(client, coordinator, run)
    assert decoded.authority == authority.pubkey()
    assert bytes(decoded.run_id) == run_id
    assert decoded.counter == 0
    assert decoded.state_version == _core.STATE_VERSION

    send(client, authority, coordinator.bump(authority.pubkey(), run), "bump")
    assert read_run(client, coordinator, run).counter == 1


def test_wrong_signer_is_rejected_by_preflight(client: Client, coordinator: Any) -> None:
    """The validator (preflight simulation) refuses a non-authority with the program's 6000."""
    authority = funded(client)
    run_id = os.urandom(32)
    run = coordinator.run_address(run_id)
    send(client, authority, coordinator.init_run(authority.pubkey(), run_id), "init_run")

    intruder = funded(client)
    with pytest.raises((RPCException, SolanaRpcException)) as excinfo:
        send(client, intruder, coordinator.bump(intruder.pubkey(), run), "bump by intruder")
    # 6000 = 0x1770, the IDL's Unauthorized.
    assert "0x1770" in str(excinfo.value)
    assert coordinator.error_name(6000) == "Unauthorized"
    assert read_run(client, coordinator, run).counter == 0
