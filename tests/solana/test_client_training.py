"""End to end on Solana: two `psyche-client join` processes train a tiny model for one epoch
against solana-test-validator, with the coordinator program as the run's coordinator.

The operator creates the run with the SDK (model = a local checkpoint directory); each client
is a real process with its own funded wallet and node key, finds the other through the
program's peer directory, exchanges results over libp2p, and applies the agreed set. Asserted:
the run finishes, every step's parameters are identical on both clients, and the loss falls.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from solders.keypair import Keypair

from psyche_client import _core
from psyche_client.cli.demo import prepare, read_events
from psyche_client.identity import NodeKey, save_keypair
from psyche_client.solana.rpc import SolanaCoordinatorClient

CONFIG = _core.Config(
    total_steps=6,
    batch_size_start=8,
    batch_size_end=8,
    batch_ramp_steps=0,
    rounds_per_epoch=6,
    waiting_extra_secs=1,
    warmup_secs=60,
    max_round_train_secs=30,
    round_witness_secs=10,
    witness_grace_secs=2,
    cooldown_secs=2,
    min_clients=2,
    max_clients=4,
    witnesses_per_round=2,
    witness_quorum_pct=50,
    verification_pct=0,
)


@pytest.mark.timeout(480)
def test_two_clients_train_an_epoch_on_the_validator(rpc_url: str, tmp_path: Path) -> None:
    data, model = prepare(tmp_path)
    run_name = f"train-{int(time.time()) % 100000}"
    wallets = [NodeKey.generate() for _ in range(2)]

    async def setup() -> None:
        operator = SolanaCoordinatorClient(rpc_url, Keypair())
        await operator.airdrop(operator.payer.pubkey(), 5_000_000_000)
        for w in wallets:
            await operator.airdrop(w.pubkey, 2_000_000_000)
        run, coordinator = await operator.create_run(
            run_name.encode().ljust(32, b"\0"), CONFIG, _core.ModelRef.local_path(str(model))
        )
        await operator.send(
            [operator.program.set_paused(operator.payer.pubkey(), run, coordinator, False)]
        )
        await operator.close()

    asyncio.run(setup())
    procs = []
    for i, w in enumerate(wallets):
        save_keypair(w, tmp_path / f"wallet{i}.json")
        cmd = [
            sys.executable,
            "-m",
            "psyche_client.cli",
            "join",
            run_name,
            f"--rpc={rpc_url}",
            f"--wallet={tmp_path / f'wallet{i}.json'}",
            f"--key={tmp_path / f'node{i}.json'}",
            f"--data={data}",
            f"--checkpoint-dir={tmp_path / f'ckpt{i}'}",
            f"--events={tmp_path / f'client{i}.jsonl'}",
            "--quiet",
        ]
        log = (tmp_path / f"client{i}.log").open("wb")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.time() + 420
    try:
        while any(p.poll() is None for p in procs):
            assert time.time() < deadline, "clients did not finish the run"
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, p in enumerate(procs):
        assert p.returncode == 0, (tmp_path / f"client{i}.log").read_text()[-3000:]

    events = [read_events(tmp_path / f"client{i}.jsonl") for i in range(2)]
    hashes = [{e["step"]: e["hash"] for e in ev if e["event"] == "applied"} for ev in events]
    assert hashes[0] and hashes[0] == hashes[1], json.dumps(hashes, indent=1)
    assert len(hashes[0]) == CONFIG.total_steps
    losses = sorted((e["step"], e["loss"]) for e in events[0] if e["event"] == "trained")
    assert losses[-1][1] < losses[0][1], losses
    finished = [e for ev in events for e in ev if e["event"] == "finished"]
    assert len(finished) == 2 and finished[0]["hash"] == finished[1]["hash"]
