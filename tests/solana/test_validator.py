"""The program on a real solana-test-validator, driven over JSON-RPC by the SDK.

pytest-xprocess runs localnet/start-validator.sh (the same script as `make localnet`) on free
ports with a throwaway ledger; the script preloads target/deploy/psyche_coordinator.so. This
proves the validator accepts the SBPF version the toolchain emits, that a 64 KB coordinator
account is created and initialized in one transaction, and that rejections come back named.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from solana.rpc.api import Client
from solders.keypair import Keypair
from typer.testing import CliRunner

from psyche_client import _core
from psyche_client.cli.run import run_app
from psyche_client.solana.program import COORDINATOR_SPACE, CoordinatorProgram
from psyche_client.solana.rpc import ProgramRejected, SolanaCoordinatorClient

CONFIG = _core.Config(min_clients=1, max_clients=4, witnesses_per_round=1)


def test_program_is_loaded_and_executable(rpc_url: str) -> None:
    client = Client(rpc_url)
    info = client.get_account_info(CoordinatorProgram().program_id).value
    assert info is not None
    assert info.executable


async def owner_client(rpc_url: str) -> SolanaCoordinatorClient:
    sdk = SolanaCoordinatorClient(rpc_url, Keypair())
    await sdk.airdrop(sdk.payer.pubkey(), 5_000_000_000)
    return sdk


def test_create_run_update_and_reject_over_rpc(rpc_url: str) -> None:
    async def scenario() -> None:
        sdk = await owner_client(rpc_url)
        run_id = os.urandom(32)
        model = _core.ModelRef.hugging_face("org/model", "v1")
        run, coordinator = await sdk.create_run(run_id, CONFIG, model)
        account = await sdk.run_account(run)
        assert account.owner == sdk.payer.pubkey()
        assert account.coordinator == coordinator
        info = (await sdk.rpc.get_account_info(coordinator)).value
        assert info is not None and len(info.data) == COORDINATOR_SPACE
        state = await sdk.state(coordinator)
        assert state.phase == _core.Phase.Paused
        assert state.run_id == run_id
        assert state.model.revision == "v1"

        p = sdk.program
        owner = sdk.payer.pubkey()
        await sdk.send([p.update(owner, run, coordinator, CONFIG.replace(total_steps=7))])
        assert (await sdk.state(coordinator)).config.total_steps == 7

        intruder = await owner_client(rpc_url)
        with pytest.raises(ProgramRejected) as excinfo:
            await intruder.send([p.set_paused(intruder.payer.pubkey(), run, coordinator, False)])
        assert excinfo.value.name == "Unauthorized"

        await sdk.send([p.set_paused(owner, run, coordinator, False)])
        with pytest.raises(ProgramRejected) as excinfo:
            await sdk.send([p.set_paused(owner, run, coordinator, False)])
        assert excinfo.value.name == "NotPaused"
        assert (await sdk.state(coordinator)).phase == _core.Phase.WaitingForMembers

        await sdk.send([p.set_paused(owner, run, coordinator, True)])
        before = (await sdk.rpc.get_balance(owner)).value
        await sdk.send([p.close_run(owner, run, coordinator)])
        assert (await sdk.rpc.get_balance(owner)).value > before
        assert (await sdk.rpc.get_account_info(coordinator)).value is None
        await sdk.close()
        await intruder.close()

    asyncio.run(scenario())


def test_operator_commands(rpc_url: str, tmp_path: Path) -> None:
    """create → status → pause → update → resume → pause → close, as an operator runs them."""
    runner = CliRunner()
    key = tmp_path / "owner.json"
    assert runner.invoke(run_app, ["new-keypair", str(key)]).exit_code == 0
    common = ["--rpc", rpc_url, "--keypair", str(key), "--run-id", "demo-ops"]

    def ok(*args: str) -> str:
        result = runner.invoke(run_app, [*args, *common])
        assert result.exit_code == 0, result.output
        return result.output

    created = json.loads(
        ok(
            "create",
            "--airdrop",
            "2",
            "--set",
            "min_clients=1",
            "--model-kind",
            "hf",
            "--model-location",
            "org/m",
            "--model-revision",
            "r1",
        )
    )
    status = json.loads(ok("status"))
    assert status["run"] == created["run"]
    assert status["phase"] == "Paused"
    assert status["model"] == {"kind": "HuggingFace", "location": "org/m", "revision": "r1"}
    assert status["config"]["min_clients"] == 1
    ok("update", "--set", "total_steps=9")
    assert json.loads(ok("status"))["config"]["total_steps"] == 9
    ok("resume")
    assert json.loads(ok("status"))["phase"] == "WaitingForMembers"
    rejected = runner.invoke(run_app, ["update", "--set", "total_steps=5", *common])
    assert rejected.exit_code == 1
    assert "NotHalted" in rejected.output
    ok("pause")
    ok("close")
    gone = runner.invoke(run_app, ["status", *common])
    assert gone.exit_code == 1
