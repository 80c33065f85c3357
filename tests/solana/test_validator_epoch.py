"""One full epoch on solana-test-validator: three clients, each a `SolanaBackend` (the client
loop's backend), an operator using the SDK, short phase times, real clock and SlotHashes.

Clients advertise their endpoints in the program's peer directory and find each other through
it. They act like the client loop does, from the polled state only: warmup witness, witness
submissions with salted filters of the previous round's trainers, the checkpoint in Cooldown.
The run must reach Finished with both data rounds applied. Rejections caused by racing the
clock (a phase that changed between the read and the send) are tolerated and counted; the
outcome is asserted, not the timing.
"""

from __future__ import annotations

import asyncio
import os
import time

from solders.keypair import Keypair

from psyche_client import _core
from psyche_client.backend.solana import SolanaBackend
from psyche_client.backend.tcp import CoordinatorRejected
from psyche_client.identity import NodeKey
from psyche_client.solana.rpc import SolanaCoordinatorClient

CONFIG = _core.Config(
    total_steps=2,
    batch_size_start=6,
    batch_size_end=6,
    batch_ramp_steps=0,
    rounds_per_epoch=2,
    waiting_extra_secs=1,
    warmup_secs=30,
    max_round_train_secs=30,
    round_witness_secs=15,
    witness_grace_secs=1,
    cooldown_secs=6,  # the checkpointer must land its transaction in it, on a loaded machine too
    min_clients=3,
    max_clients=3,
    witnesses_per_round=3,
    witness_quorum_pct=66,
    verification_pct=0,
)
ROLE_WITNESS = 2


async def act(client: SolanaBackend, rejected: list[str]) -> None:
    """What the client loop would do with the current state (one action at most)."""
    s = client.state()
    slot = s.find_client(client.wallet)
    if slot is None:
        return
    try:
        if s.phase == _core.Phase.Warmup and slot not in s.warmup_ready():
            await client.warmup_witness()
        elif s.phase in (_core.Phase.RoundTrain, _core.Phase.RoundWitness):
            h = s.height
            pos = s.position_of(h, slot)
            done = {sub.client for sub in s.round(h).submissions}
            if pos is None or not s.roles(h, slot) & ROLE_WITNESS or slot in done:
                return
            sent = [trainer for trainer, _start, _end in s.assignments(h - 1)] if h >= 1 else []
            results, trainers = s.witness_filters(h, pos, [], sent)
            await client.witness(pos, results, trainers, 2000, 500, 10)
        elif s.phase == _core.Phase.Cooldown and not s.checkpointed and slot == s.checkpointer():
            await client.checkpoint({"kind": "HuggingFace", "location": "org/m", "revision": "e0"})
    except CoordinatorRejected as e:
        rejected.append(e.name)


def test_one_epoch_through_the_validator(rpc_url: str) -> None:
    async def scenario() -> None:
        operator = SolanaCoordinatorClient(rpc_url, Keypair())
        await operator.airdrop(operator.payer.pubkey(), 5_000_000_000)
        run_id = os.urandom(32)
        run, coordinator = await operator.create_run(
            run_id, CONFIG, _core.ModelRef.hugging_face("org/m", "base")
        )
        p = operator.program
        owner = operator.payer.pubkey()
        await operator.send([p.set_paused(owner, run, coordinator, False)], what="resume")

        clients = []
        for _ in range(3):
            wallet = Keypair()
            await operator.airdrop(wallet.pubkey(), 1_000_000_000)
            backend = SolanaBackend.for_run(
                rpc_url, wallet, NodeKey(os.urandom(32)), run_id, poll_s=0.3, tick_s=1.0
            )
            await backend.start()
            await backend.join()
            clients.append(backend)
        assert (await clients[0].refresh()).count(_core.ClientState.Healthy) == 3
        # A program rejection reaches the client loop as the core's error name.
        try:
            await clients[0].join()
        except CoordinatorRejected as e:
            assert e.name == "DuplicateClient"
        else:
            raise AssertionError("a second join was accepted")

        # Peer discovery through the program's directory.
        for i, c in enumerate(clients):
            await c.advertise(f"/ip4/127.0.0.1/tcp/{4000 + i}", f"127.0.0.1:{5000 + i}")
        peers = await clients[0].refresh_peers()
        assert peers == {
            c.node_key: {
                "p2p_addr": f"/ip4/127.0.0.1/tcp/{4000 + i}",
                "fast_addr": f"127.0.0.1:{5000 + i}",
            }
            for i, c in enumerate(clients)
        }

        phases: list[str] = []
        rejected: list[str] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            state = await clients[0].refresh()
            if not phases or phases[-1] != state.phase:
                phases.append(state.phase)
            if state.phase == _core.Phase.Finished:
                break
            await asyncio.gather(*(act(c, rejected) for c in clients))
            await asyncio.sleep(0.3)
        final = await operator.state(coordinator)
        # Another client's poller sees the same final state.
        seen = await clients[1].wait_state(lambda s: s.phase == _core.Phase.Finished, 30)
        assert seen.to_bytes() == final.to_bytes()
        for c in clients:
            await c.stop()
        await operator.close()

        assert final.phase == _core.Phase.Finished, f"phases {phases}, rejected {rejected}"
        assert final.steps_done == 2
        assert final.epochs_completed == 1
        assert final.model.revision == "e0"
        for phase in (
            _core.Phase.Warmup,
            _core.Phase.RoundTrain,
            _core.Phase.Cooldown,
            _core.Phase.Finished,
        ):
            assert phase in phases, phases
        # Only races with the clock may be refused, never a malformed or unauthorized message.
        assert set(rejected) <= {"WrongPhase", "DuplicateWitness", "NotWitness", "BadProof"}

    asyncio.run(scenario())
