"""The per-round client loop: react to each coordinator state with the duties it calls for.

The loop is a reaction to the coordinator's state. Each time the state changes (or every
`poll_s`), `_react` looks at the phase and height and does whatever this client still owes for
it; every duty is remembered per (epoch, height) (`DutyLog`), so reacting twice to the same
state is harmless and a client that falls behind simply skips what is too late. The pipeline
(docs/protocol.md):

    round h:   trainers train batch h and announce it (and the momentum it started from);
               witnesses of h attest which results of round h-1 they hold;
               verifiers of h recompute their target's result of round h-1;
               everyone applies the agreed results of round h-2 before training h.

Results arrive through the p2p node independently of the loop (`peers`) and wait in
`RoundResults` until a witness, verifier or apply awaits them. All consensus decisions (roles,
assignments, the apply set and its order, health verdicts) come from the core through
`psyche_client._core`. Each duty lives in its own module; this one only sequences them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from psyche_client import _core
from psyche_client.backend.base import CoordinatorBackend
from psyche_client.backend.tcp import CoordinatorRejected
from psyche_client.client import peers
from psyche_client.client.apply import apply_in_turn, gather_previous
from psyche_client.client.audit import verify
from psyche_client.client.checkpoint import cooldown, finish
from psyche_client.client.context import (
    ROUND_PHASES,
    ClientContext,
    ClientEjected,
    ClientOptions,
    ClientStatus,
)
from psyche_client.client.duties import Duty
from psyche_client.client.train import snapshot, train
from psyche_client.client.warmup import note_absence, warmup
from psyche_client.client.witness import health_checks, witness
from psyche_client.errors import UserError
from psyche_client.identity import NodeKey

log = logging.getLogger("psyche.client")


class RunClient:
    """One participant of a run. `await run()` until the run finishes or `stop()`."""

    def __init__(self, backend: CoordinatorBackend, key: NodeKey, options: ClientOptions) -> None:
        self.backend = backend
        self.ctx = ClientContext(backend, key, options)
        self._stopping = asyncio.Event()
        self._epochs_seen: set[int] = set()
        self._advertised = False

    @property
    def status(self) -> ClientStatus:
        return self.ctx.status

    # ---- lifecycle ------------------------------------------------------------------------

    async def run(self) -> ClientStatus:
        """Take part in the run until it is Finished, `max_epochs` ended, or `stop()`."""
        await self.backend.start()
        try:
            await peers.start_node(self.ctx)
            while not self._stopping.is_set():
                state = self.backend.state()
                if await self._react(state):
                    break
                nonce = state.nonce
                with contextlib.suppress(TimeoutError):
                    await self.backend.wait_state(
                        lambda s, seen=nonce: s.nonce != seen or self._stopping.is_set(),
                        self.ctx.options.poll_s,
                    )
        finally:
            await self._shutdown()
        return self.status

    def stop(self) -> None:
        """Ask the loop to leave the run cleanly (withdraw) at its next turn."""
        self._stopping.set()

    async def _shutdown(self) -> None:
        state = self.backend.state()
        if (
            state.phase != _core.Phase.Finished
            and state.find_client(self.backend.wallet) is not None
        ):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.backend.withdraw(), 5)
        tasks = list(self.ctx.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.ctx.node is not None:
            await self.ctx.node.stop()
        await self.backend.stop()

    def _publish_status(self, state: _core.Coordinator) -> None:
        st, ctx = self.ctx.status, self.ctx
        st.phase, st.epoch, st.step = state.phase.name, state.epoch, state.step
        st.loss, st.tokens_per_s = ctx.last_loss, ctx.tokens_per_s
        st.peers = len(ctx.connected)
        if ctx.options.on_status:
            ctx.options.on_status(st)

    # ---- the reaction to each state -------------------------------------------------------

    async def _react(self, state: _core.Coordinator) -> bool:
        """Do what is owed for `state`; True when this client is finished with the run."""
        ctx = self.ctx
        self._publish_status(state)
        phase, epoch = state.phase, state.epoch
        if phase == _core.Phase.Finished:
            await finish(ctx, state)
            return True
        max_epochs = ctx.options.max_epochs
        if max_epochs is not None and state.epochs_completed >= max_epochs:
            return True
        slot = state.find_client(self.backend.wallet)
        if slot is None:
            if ctx.duties.once(Duty.JOIN, epoch, state.nonce):
                await self._join()
            return False
        me = state.client(slot)
        if not self._advertised and ctx.node is not None:
            # After joining: the Solana program only lists endpoints of the run's clients.
            sent = await ctx.send(
                "advertise", self.backend.advertise(ctx.node.p2p_addr, ctx.node.fast_addr)
            )
            self._advertised = sent is not None
        await peers.connect_peers(ctx, state)
        if me.state == _core.ClientState.Ejected:
            raise ClientEjected(
                f"the coordinator ejected this client in epoch {epoch}: verifiers found its "
                "results do not match a recomputation (see docs/troubleshooting.md)"
            )
        if me.state != _core.ClientState.Healthy:
            note_absence(ctx, state)
            if ctx.duties.warn_once(f"state-{me.state.name}-{epoch}"):
                log.warning("this client is %s for epoch %d", me.state.name, epoch)
            return False
        if epoch not in self._epochs_seen:
            self._epochs_seen.add(epoch)
            ctx.event("epoch", epoch=epoch, slot=slot)
        if phase == _core.Phase.Warmup:
            await warmup(ctx, state)
        elif phase in ROUND_PHASES:
            await self._round(state, slot)
        elif phase == _core.Phase.Cooldown:
            await cooldown(ctx, state, slot)
        return False

    async def _join(self) -> None:
        """Ask for a slot; a banned wallet stops here, a full run is retried as state changes."""
        try:
            await self.backend.join()
        except CoordinatorRejected as e:
            if e.name == "Banned":
                raise ClientEjected(
                    "this wallet was ejected from the run earlier and may not join again"
                ) from None
            if e.name == "RunFinished":
                return
            if e.name == "DuplicateClient":
                # Our earlier join landed but its reply was lost (or the state lags): the next
                # state shows the slot. Not worth a warning.
                log.info("join: already registered (%s)", e)
                return
            if self.ctx.duties.warn_once(f"join-refused-{e.name}"):
                log.warning("join refused: %s (will retry while the run changes)", e)
        except UserError:  # the run's join control refused this key: retrying cannot help
            raise
        except Exception as e:  # noqa: BLE001 - transport trouble: retried on the next state
            log.info("join not delivered: %r", e)

    def _training_missed(self, state: _core.Coordinator, slot: int, h: int) -> bool:
        """This client skipped its batch of round h (round h-2 was not applied then) and can
        train it now: exactly round h-2 is applied (the parameters verifiers recompute from)
        and its result can still be attested (round h is current or previous)."""
        ctx, epoch = self.ctx, state.epoch
        if h < 0 or state.round(h).kind != _core.RoundKind.Data:
            return False
        if not ctx.duties.done(Duty.TRAIN, epoch, h) or ctx.applied.get(epoch, -1) != h - 2:
            return False
        span = state.assignment(h, slot)
        step = state.round(h).step
        return span is not None and ctx.results.claimed(step, ctx.key.public, span[0]) is None

    async def _round(self, state: _core.Coordinator, slot: int) -> None:
        ctx = self.ctx
        epoch, h = state.epoch, state.height
        rnd = state.round(h)
        if ctx.node is not None:
            ctx.node.set_step(rnd.step)
        if ctx.duties.once(Duty.GATHER, epoch, h):
            ctx.spawn(gather_previous(ctx, state, h))
        await apply_in_turn(ctx, state)
        await health_checks(ctx, state)
        if ctx.trainer is not None and ctx.applied.get(epoch, -1) >= h - 2:
            if ctx.duties.once(Duty.SNAPSHOT, epoch, h):
                snapshot(ctx, rnd.step)
        if rnd.kind == _core.RoundKind.Data:
            if ctx.duties.once(Duty.TRAIN, epoch, h):
                await train(ctx, state, slot, h)
        for late in (h - 1, h):  # a batch skipped while behind, trainable again after a resync
            if self._training_missed(state, slot, late):
                if ctx.duties.once(Duty.LATE_TRAIN, epoch, late):
                    await train(ctx, state, slot, late)
        await witness(ctx, state, slot, h)
        await verify(ctx, state, slot, h)
