"""The SDK facade on the coordinator program (solana-test-validator, the tests/solana fixture).

`create_run(backend="solana")` creates the run in one transaction; handles opened by run name
and by run account read the same account; `watch()` sees a change the owner makes afterwards
(the handle polls the account). Bad targets are one-line user errors.
"""

from __future__ import annotations

import asyncio

import pytest
from solders.keypair import Keypair

import psyche_client as psyche
from psyche_client.errors import UserError
from psyche_client.solana.rpc import SolanaCoordinatorClient

pytestmark = pytest.mark.timeout(180)


def test_create_connect_and_watch_a_program_run(rpc_url: str) -> None:
    owner = Keypair()
    name = f"sdk-{bytes(owner.pubkey())[:4].hex()}"
    run = psyche.create_run(
        name,
        backend="solana",
        rpc=rpc_url,
        keypair=owner,
        airdrop_sol=2,
        paused=True,
        config={"min_clients": 2, "total_steps": 5},
        model="org/model@v1",
    )
    try:
        s = run.status()
        assert s.run == name and s.phase == "Paused"
        assert s.config["total_steps"] == 5
        assert (s.model.kind, s.model.location, s.model.revision) == (
            "HuggingFace",
            "org/model",
            "v1",
        )
        by_name = psyche.connect(name, rpc=rpc_url)
        by_account = psyche.connect(run.address, rpc=rpc_url)
        assert by_name.address == by_account.address == run.address
        assert by_name.status() == s

        async def resume_and_watch() -> list[str]:
            watching = by_name.watch(timeout_s=30)
            phases = [(await anext(watching)).phase]  # the snapshot before the change
            sdk = SolanaCoordinatorClient(rpc_url, owner)
            try:
                account = await sdk.run_account(
                    sdk.program.run_address(name.encode().ljust(32, b"\0"))
                )
                await sdk.send(
                    [
                        sdk.program.set_paused(
                            owner.pubkey(), account.address, account.coordinator, False
                        )
                    ]
                )
            finally:
                await sdk.close()
            async for status in watching:
                phases.append(status.phase)
                if status.phase != "Paused":
                    break
            return phases

        phases = asyncio.run(resume_and_watch())
        assert phases[0] == "Paused" and phases[-1] == "WaitingForMembers", phases
        assert by_account.wait(phase="WaitingForMembers", timeout_s=30).phase == "WaitingForMembers"
        assert len(by_name.history()) == 0, "no rounds yet"
        by_name.close()
        by_account.close()
    finally:
        run.close()


def test_unknown_run_and_unreachable_rpc_are_user_errors(rpc_url: str) -> None:
    with pytest.raises(UserError, match="not found"):
        psyche.connect("no-such-run", rpc=rpc_url, timeout_s=10)
    with pytest.raises(UserError, match="cannot reach Solana RPC"):
        psyche.connect("any-run", rpc="http://127.0.0.1:1", timeout_s=10)
    with pytest.raises(UserError, match="holds no SOL"):
        psyche.create_run("sdk-broke", backend="solana", rpc=rpc_url, keypair=Keypair())
    with pytest.raises(UserError, match="creating run sdk-x on http://127.0.0.1:1"):
        psyche.create_run("sdk-x", backend="solana", rpc="http://127.0.0.1:1", keypair=Keypair())
