"""`CoordinatorBackend` over the Solana coordinator program.

- identity: `wallet` is the Solana keypair's public key (it signs every transaction); the node
  key (ed25519, libp2p identity, signs results) is registered with it by `join_run`, which it
  co-signs (proof of possession: nobody can register another's key), so joining needs the
  `NodeKey`, not only its public half;
- state: polled with `getAccountInfo` on the run's coordinator account every `poll_s` seconds
  and decoded by the core bindings; `wait_state` resolves on the first polled state that
  satisfies the predicate;
- sends: one transaction per message through `SolanaCoordinatorClient` (retries, confirmation);
  a program rejection raises `CoordinatorRejected` with the core's error name;
- ticks: none are needed from clients (every instruction ticks first), but `tick_s` makes this
  client send a permissionless `tick` when the state has not changed for that long, so phase
  timeouts fire even when nobody else is sending;
- peers: an on-chain directory. `advertise()` writes this client's endpoints to its peer PDA
  `["peer", run, wallet]` (the program copies the node key from the client's slot, so an entry
  always names the key the run registered); `peer_addresses()` returns the entries of the run's
  current clients (refreshed with `getProgramAccounts` every `peers_s` seconds and after
  `advertise`), merged over the static `bootstrap_peers` given at construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from psyche_client import _core
from psyche_client.backend.base import EPOCH_PHASES, CoordinatorBackend
from psyche_client.backend.tcp import CoordinatorRejected
from psyche_client.errors import UserError
from psyche_client.identity import NodeKey
from psyche_client.modelref import ModelRefError, model_ref_from_json
from psyche_client.runid import run_id_bytes
from psyche_client.solana.program import CoordinatorProgram
from psyche_client.solana.rpc import ProgramRejected, SolanaCoordinatorClient


def model_ref(model: dict[str, str]) -> _core.ModelRef:
    """A core `ModelRef` from its JSON form (see `psyche_client.modelref`)."""
    try:
        return model_ref_from_json(model)
    except ModelRefError as e:
        raise CoordinatorRejected(e.name, str(e)) from None


class SolanaBackend:
    """A client's view of one run on the coordinator program."""

    def __init__(
        self,
        rpc_url: str,
        wallet: Keypair,
        node_key: bytes | NodeKey,
        run: Pubkey,
        *,
        join_authority: Keypair | None = None,
        bootstrap_peers: dict[bytes, dict[str, str]] | None = None,
        poll_s: float = 0.5,
        tick_s: float | None = 2.0,
        peers_s: float = 5.0,
        program: CoordinatorProgram | None = None,
    ) -> None:
        self.keypair = wallet
        self.wallet = bytes(wallet.pubkey())
        # With the private half (a NodeKey) this backend can join: the node key co-signs.
        self._node_signer = node_key.keypair if isinstance(node_key, NodeKey) else None
        self.node_key = node_key.public if isinstance(node_key, NodeKey) else bytes(node_key)
        self.run = run
        self.join_authority = join_authority
        self.client = SolanaCoordinatorClient(rpc_url, wallet, program)
        self.p = self.client.program
        self.poll_s = poll_s
        self.tick_s = tick_s
        self.peers_s = peers_s
        self.coordinator = Pubkey.default()
        self._bootstrap = dict(bootstrap_peers or {})
        self._peers: dict[bytes, dict[str, str]] = {}
        self._peers_at = 0.0
        self._state: _core.Coordinator | None = None
        self._epoch_state: _core.Coordinator | None = None
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._last_change = time.monotonic()

    @classmethod
    def for_run(
        cls,
        rpc_url: str,
        wallet: Keypair,
        node_key: bytes | NodeKey,
        run_id: str | bytes,
        **options: Any,
    ) -> SolanaBackend:
        """The backend for the run named `run_id` (its PDA is derived from the id)."""
        program = options.pop("program", None) or CoordinatorProgram()
        run = program.run_address(run_id_bytes(run_id))
        return cls(rpc_url, wallet, node_key, run, program=program, **options)

    # ------------------------------------------------------------------ lifecycle and state

    async def start(self) -> None:
        account = await self.client.run_account(self.run)
        self.coordinator = account.coordinator
        self._state = await self.client.state(self.coordinator)
        self._last_change = time.monotonic()
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.client.close()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            if time.monotonic() - self._peers_at > self.peers_s:
                with contextlib.suppress(Exception):
                    await self.refresh_peers()
            try:
                state = await self.client.state(self.coordinator)
            except Exception:  # noqa: BLE001 - transient RPC trouble: poll again
                continue
            if not await self._store(state) and (
                self.tick_s is not None and time.monotonic() - self._last_change > self.tick_s
            ):
                self._last_change = time.monotonic()
                with contextlib.suppress(Exception):
                    await self.client.send([self.p.tick(self.run, self.coordinator)], what="tick")

    def state(self) -> _core.Coordinator:
        assert self._state is not None, "start() first"
        return self._state

    async def wait_state(
        self, predicate: Callable[[_core.Coordinator], bool], timeout_s: float | None
    ) -> _core.Coordinator:
        async def wait() -> _core.Coordinator:
            async with self._changed:
                while self._state is None or not predicate(self._state):
                    await self._changed.wait()
                return self._state

        return await asyncio.wait_for(wait(), timeout_s)

    async def refresh(self) -> _core.Coordinator:
        """Reads the state now (after a send, so the caller sees its own effect)."""
        state = await self.client.state(self.coordinator)
        await self._store(state)
        return state

    async def _store(self, state: _core.Coordinator) -> bool:
        """Keep `state` as the newest (and as the epoch's, in `EPOCH_PHASES`); True if new."""
        if self._state is not None and state.to_bytes() == self._state.to_bytes():
            return False
        self._state = state
        if state.phase in EPOCH_PHASES:
            self._epoch_state = state
        self._last_change = time.monotonic()
        async with self._changed:
            self._changed.notify_all()
        return True

    def last_epoch_state(self) -> _core.Coordinator | None:
        return self._epoch_state

    # ------------------------------------------------------------------ peers

    def peer_addresses(self) -> dict[bytes, dict[str, str]]:
        return {**self._bootstrap, **self._peers}

    async def refresh_peers(self) -> dict[bytes, dict[str, str]]:
        """Reads the run's peer directory now; keeps entries of the state's current clients."""
        self._peers_at = time.monotonic()
        entries = await self.client.peers(self.run)
        state = self._state
        peers = {}
        for e in entries:
            slot = None if state is None else state.find_client(e.wallet)
            if slot is None or state is None or state.client(slot).node_key != e.node_key:
                continue
            peers[e.node_key] = {"p2p_addr": e.p2p_addr, "fast_addr": e.fast_addr}
        self._peers = peers
        return self.peer_addresses()

    async def advertise(self, p2p_addr: str, fast_addr: str) -> None:
        ix = self.p.advertise(self.keypair.pubkey(), *self._accounts, p2p_addr, fast_addr)
        await self._send("advertise", ix)
        await self.refresh_peers()

    # ------------------------------------------------------------------ messages

    async def _send(self, what: str, ix: Instruction, signers: tuple[Keypair, ...] = ()) -> None:
        try:
            await self.client.send([ix], signers, what)
        except ProgramRejected as e:
            raise CoordinatorRejected(e.name, str(e)) from None
        await self.refresh()

    async def join(self) -> None:
        authorizer = self.join_authority
        if self._node_signer is None:
            raise UserError(
                "joining a Solana run needs the node key's private half (it co-signs join_run)"
            )
        ix = self.p.join_run(
            self.keypair.pubkey(),
            self.run,
            self.coordinator,
            self.node_key,
            None if authorizer is None else authorizer.pubkey(),
        )
        signers = (self._node_signer,) + (() if authorizer is None else (authorizer,))
        await self._send("join_run", ix, signers)

    async def withdraw(self) -> None:
        await self._send("withdraw", self.p.withdraw(self.keypair.pubkey(), *self._accounts))

    async def warmup_witness(self) -> None:
        ix = self.p.warmup_witness(self.keypair.pubkey(), *self._accounts)
        await self._send("warmup_witness", ix)

    async def witness(
        self,
        position: int,
        results: bytes,
        trainers: bytes,
        loss_milli: int,
        tokens_per_sec: int,
        download_kib: int,
    ) -> None:
        ix = self.p.witness(
            self.keypair.pubkey(),
            *self._accounts,
            position,
            results,
            trainers,
            loss_milli=loss_milli,
            tokens_per_sec=tokens_per_sec,
            download_kib=download_kib,
        )
        await self._send("witness", ix)

    async def health_check(self, target: int, height: int) -> None:
        ix = self.p.health_check(self.keypair.pubkey(), *self._accounts, target, height)
        await self._send("health_check", ix)

    async def report(self, target: int) -> None:
        await self._send("report", self.p.report(self.keypair.pubkey(), *self._accounts, target))

    async def checkpoint(self, model: dict[str, str]) -> None:
        ix = self.p.checkpoint(self.keypair.pubkey(), *self._accounts, model_ref(model))
        await self._send("checkpoint", ix)

    async def tick(self) -> None:
        """A permissionless tick (phase timeouts)."""
        await self._send("tick", self.p.tick(self.run, self.coordinator))

    @property
    def _accounts(self) -> tuple[Pubkey, Pubkey]:
        return self.run, self.coordinator


def _conforms(backend: SolanaBackend) -> CoordinatorBackend:
    """Type check only: `SolanaBackend` implements the `CoordinatorBackend` protocol."""
    return backend
