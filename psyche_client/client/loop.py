"""The per-round client loop: join, warm up, train, share, witness, apply, checkpoint.

The loop is a reaction to the coordinator's state. Each time the state changes (or every
`poll_s`), `_react` looks at the phase and height and does whatever this client still owes for
it; every duty is remembered per (epoch, height), so reacting twice to the same state is harmless
and a client that falls behind simply skips what is too late. The pipeline (docs/protocol.md):

    round h:   trainers train batch h and announce it;
               witnesses of h attest which results of round h-1 they hold;
               everyone applies the agreed results of round h-2 before training h.

Results arrive through the p2p node independently of the loop: each announcement is fetched,
checked against its commitment and decoded in a background task, and waits in `_results` until
a witness filter or an apply needs it. All consensus decisions (roles, assignments, the apply
set and its order, health verdicts) come from the core through `psyche_client._core`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from psyche_client import _core
from psyche_client.backend.base import CoordinatorBackend
from psyche_client.backend.tcp import ConnectionLost, CoordinatorRejected
from psyche_client.checkpoint.io import load_checkpoint, save_checkpoint
from psyche_client.data.provider import TokenDataProvider
from psyche_client.errors import UserError
from psyche_client.identity import NodeKey
from psyche_client.p2p.config import P2PConfig
from psyche_client.p2p.identity import NodeKey as P2PKey
from psyche_client.p2p.messages import KIND_ANNOUNCE, Announcement
from psyche_client.p2p.node import P2PNode
from psyche_client.runspec import TrainingSpec, load_spec, save_spec
from psyche_client.training.hashing import param_hash
from psyche_client.training.model import LlamaConfig, LlamaForCausalLM
from psyche_client.training.momentum_codec import (
    MOMENTUM_FLAG,
    decode_momentum,
    encode_momentum,
    garbage_like,
)
from psyche_client.training.recompute import verify_result
from psyche_client.training.result import (
    DeMoResult,
    ResultFormatError,
    check_matches,
    commitment,
    decode_result,
)
from psyche_client.training.trainer import Trainer

log = logging.getLogger("psyche.client")

ROUND_PHASES = (_core.Phase.RoundTrain, _core.Phase.RoundWitness)


@dataclass
class ClientOptions:
    """How this client runs (the run's shared settings come from the model directory)."""

    data: Callable[[int], TokenDataProvider]
    """Opens the run's data for a sample length (known once the model and its spec are in)."""
    checkpoint_dir: Path
    events_path: Path | None = None
    """JSON lines of what happened (applied steps with parameter hashes, losses): for tests and
    for operators who want a machine-readable log."""
    max_epochs: int | None = None
    poll_s: float = 0.25
    p2p: P2PConfig = field(default_factory=P2PConfig)
    on_status: Callable[[ClientStatus], None] | None = None
    fault: str | None = None
    """Fault injection for tests: "garbage" sends well-formed random results (a liar)."""


class ClientEjected(UserError, RuntimeError):
    """Verifiers reported this client's results and the coordinator ejected it."""


class ClientDesynced(UserError, RuntimeError):
    """An agreed result could not be obtained, so this client's model can no longer match."""


@dataclass
class ClientStatus:
    """What the live status line shows."""

    phase: str = "connecting"
    epoch: int = 0
    step: int = 0
    loss: float | None = None
    tokens_per_s: float = 0.0
    peers: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    applied_steps: int = 0


@dataclass
class _Received:
    """A peer's verified and decoded result for one round."""

    sender: bytes
    batch_start: int
    commitment: bytes
    result: DeMoResult
    size: int


class RunClient:
    """One participant of a run. `await run()` until the run finishes or `stop()`."""

    def __init__(self, backend: CoordinatorBackend, key: NodeKey, options: ClientOptions) -> None:
        self.backend = backend
        self.key = key
        self.options = options
        self.status = ClientStatus()
        self.trainer: Trainer | None = None
        self.spec: TrainingSpec | None = None
        self.model_config: LlamaConfig | None = None
        self.node: P2PNode | None = None
        self.data: TokenDataProvider | None = None
        self._run_id = b""
        self._done: set[tuple[str, int, int]] = set()  # (duty, epoch, height)
        self._applied: dict[int, int] = {}  # epoch -> highest data round applied
        self._results: dict[int, dict[tuple[bytes, int, bytes], _Received]] = {}  # by step
        self._fetching: set[bytes] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connected: set[bytes] = set()
        self._stopping = asyncio.Event()
        self._last_loss: float | None = None
        self._tokens_per_s = 0.0
        self._epochs_seen: set[int] = set()
        self._snapshots: dict[int, dict[str, torch.Tensor]] = {}  # step -> params at its start
        self._momentum_anns: dict[tuple[bytes, int], Announcement] = {}
        self._scratch: LlamaForCausalLM | None = None
        self._advertised = False

    # ---- lifecycle ------------------------------------------------------------------------

    async def run(self) -> ClientStatus:
        """Take part in the run until it is Finished, `max_epochs` ended, or `stop()`."""
        await self.backend.start()
        try:
            await self._start_p2p()
            while not self._stopping.is_set():
                state = self.backend.state()
                if await self._react(state):
                    break
                nonce = state.nonce
                with contextlib.suppress(TimeoutError):
                    await self.backend.wait_state(
                        lambda s, seen=nonce: s.nonce != seen or self._stopping.is_set(),
                        self.options.poll_s,
                    )
        finally:
            await self._shutdown()
        return self.status

    async def _start_p2p(self) -> None:
        self._run_id = self.backend.state().run_id
        run_name = self._run_id.rstrip(b"\0").hex()
        self.node = P2PNode(
            P2PKey(self.key.seed),
            run_name,
            is_member=self._is_member,
            validate_announcement=self._validate_announcement,
            payload_hasher=self._payload_hasher,
            commit=lambda step, batch, payload: commitment(
                self._run_id, step, batch, bytes(payload)
            ),
            config=self.options.p2p,
        )
        await self.node.start()
        self._spawn(self._consume_announcements())

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
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.node is not None:
            await self.node.stop()
        await self.backend.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _once(self, duty: str, epoch: int, height: int) -> bool:
        """True the first time a duty comes up for (epoch, height)."""
        key = (duty, epoch, height)
        if key in self._done:
            return False
        self._done.add(key)
        return True

    def _event(self, kind: str, **fields: Any) -> None:
        if self.options.events_path is None:
            return
        record = {"event": kind, "time": time.time(), **fields}
        with open(self.options.events_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _publish_status(self, state: _core.Coordinator) -> None:
        st = self.status
        st.phase, st.epoch, st.step = state.phase.name, state.epoch, state.step
        st.loss, st.tokens_per_s = self._last_loss, self._tokens_per_s
        st.peers = len(self._connected)
        if self.options.on_status:
            self.options.on_status(st)

    # ---- the reaction to each state -------------------------------------------------------

    async def _react(self, state: _core.Coordinator) -> bool:
        """Do what is owed for `state`; True when this client is finished with the run."""
        self._publish_status(state)
        phase, epoch = state.phase, state.epoch
        if phase == _core.Phase.Finished:
            await self._finish(state)
            return True
        if (
            self.options.max_epochs is not None
            and state.epochs_completed >= self.options.max_epochs
        ):
            return True
        slot = state.find_client(self.backend.wallet)
        if slot is None:
            if self._once("join", epoch, state.nonce):
                await self._join()
            return False
        me = state.client(slot)
        if not self._advertised and self.node is not None:
            # After joining: the Solana program only lists endpoints of the run's clients.
            sent = await self._send(
                "advertise", self.backend.advertise(self.node.p2p_addr, self.node.fast_addr)
            )
            self._advertised = sent is not None
        await self._connect_peers(state)
        if me.state == _core.ClientState.Ejected:
            raise ClientEjected(
                f"the coordinator ejected this client in epoch {epoch}: verifiers found its "
                "results do not match a recomputation (see docs/troubleshooting.md)"
            )
        if me.state != _core.ClientState.Healthy:
            if self._once(f"state-{me.state}", epoch, 0):
                log.warning("this client is %s for epoch %d", me.state, epoch)
            return False
        if epoch not in self._epochs_seen:
            self._epochs_seen.add(epoch)
            self._event("epoch", epoch=epoch, slot=slot)
        if phase == _core.Phase.Warmup:
            await self._warmup(state, slot)
        elif phase in ROUND_PHASES:
            await self._round(state, slot)
        elif phase == _core.Phase.Cooldown:
            await self._cooldown(state, slot)
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
            if self._once(f"join-refused-{e.name}", 0, 0):
                log.warning("join refused: %s (will retry while the run changes)", e)
        except Exception as e:  # noqa: BLE001 - transport trouble: retried on the next state
            log.info("join not delivered: %r", e)

    async def _send(self, what: str, request: Any) -> bool | None:
        """Send one message: True if accepted, False if refused, None if it may not have
        arrived (connection dropped), in which case the caller may try again."""
        try:
            await request
            return True
        except CoordinatorRejected as e:
            log.info("%s refused: %s", what, e)
            return False
        except (ConnectionLost, TimeoutError) as e:
            log.info("%s not delivered: %s", what, e)
            return None
        except Exception as e:  # noqa: BLE001 - any transport failure (RPC, socket): retry later
            log.warning("%s failed: %r", what, e)
            return None

    # ---- warmup: get the model ------------------------------------------------------------

    async def _warmup(self, state: _core.Coordinator, slot: int) -> None:
        if not self._once("warmup", state.epoch, 0):
            return
        if self.trainer is None:
            await self._load_model(state)
        assert self.trainer is not None
        self._share_model()
        self._applied[state.epoch] = -1
        if await self._send("warmup_witness", self.backend.warmup_witness()) is None:
            self._done.discard(("warmup", state.epoch, 0))

    async def _load_model(self, state: _core.Coordinator) -> None:
        ref = state.model
        peers = [
            c.node_key
            for c in state.clients()
            if c.state == _core.ClientState.Healthy
            and c.node_key != self.key.public
            and c.joined_epoch < state.epoch
        ]
        model: LlamaForCausalLM | None = None
        if peers and self.node is not None:
            try:
                model, spec = await self._model_from_peers(peers)
                self._event("model", source="peers", hash=param_hash(model))
            except Exception as e:  # noqa: BLE001 - fall back to the checkpoint below
                log.warning("model from peers failed (%r); using the checkpoint", e)
        if model is None:
            if ref.kind == _core.ModelKind.Peers:
                raise RuntimeError("the run's model lives with its peers and none could serve it")
            location = ref.location
            model = await asyncio.to_thread(load_checkpoint, location, ref.revision or None)
            spec = load_spec(location) if ref.kind == _core.ModelKind.LocalPath else TrainingSpec()
            self._event("model", source=ref.kind.name, hash=param_hash(model))
        self.spec = spec
        self.model_config = model.config
        self.data = self.options.data(spec.seq_len)
        self.trainer = Trainer(model, spec.demo, self.data, spec.micro_batch)

    async def _model_from_peers(self, peers: list[bytes]) -> tuple[LlamaForCausalLM, TrainingSpec]:
        assert self.node is not None
        snap = await self.node.fetch_model(peers)
        meta = json.loads(bytes(snap.config))
        cfg = LlamaConfig.from_hf_dict(meta["model"])
        spec = TrainingSpec.from_json(meta["spec"], "peer model")
        model = LlamaForCausalLM(cfg)
        tensors = {}
        for name, p in model.state_dict().items():
            raw = bytearray(snap.tensors[name])
            tensors[name] = torch.frombuffer(raw, dtype=p.dtype).view(p.shape).clone()
        model.load_state_dict(tensors, strict=True)
        return model, spec

    def _share_model(self) -> None:
        """Serve our current model for joiners (the state every member starts the epoch from)."""
        if self.node is None or self.trainer is None or self.spec is None:
            return
        meta = {"model": self.trainer.model.config.to_hf_dict(), "spec": self.spec.to_json()}
        tensors = {
            name: t.detach().contiguous().cpu().numpy().tobytes()
            for name, t in self.trainer.model.state_dict().items()
        }
        self.node.share_model(json.dumps(meta).encode(), tensors)

    # ---- rounds ---------------------------------------------------------------------------

    async def _round(self, state: _core.Coordinator, slot: int) -> None:
        epoch, h = state.epoch, state.height
        rnd = state.round(h)
        if self.node is not None:
            self.node.set_step(rnd.step)
        await self._apply_ready(state)
        await self._health_checks(state)
        if self.trainer is not None and self._applied.get(epoch, -1) >= h - 2:
            if self._once("snapshot", epoch, h):
                self._snapshot(rnd.step)
        if rnd.kind == _core.RoundKind.Data and self._once("train", epoch, h):
            await self._train(state, slot, h)
        await self._witness(state, slot, h)
        await self._verify(state, slot, h)

    def _snapshot(self, step: int) -> None:
        """Keep the parameters this round trains from, for verifying its results next round."""
        assert self.trainer is not None
        self._snapshots[step] = {
            n: p.detach().clone() for n, p in self.trainer.model.named_parameters()
        }
        for old in [s for s in self._snapshots if s < step - 2]:
            del self._snapshots[old]

    async def _train(self, state: _core.Coordinator, slot: int, h: int) -> None:
        span = state.assignment(h, slot)
        if span is None or self.trainer is None or self.node is None:
            return
        applied = self._applied.get(state.epoch, -1)
        if h >= 2 and applied < h - 2:
            log.warning("round %d: results of round %d not applied; skipping training", h, h - 2)
            return
        rnd = state.round(h)
        size = len(self.trainer.data)
        indices = [i % size for i in range(span[0], span[1])]
        momentum = encode_momentum(self.trainer.demo.momentum)
        out = await asyncio.to_thread(self.trainer.train_step, indices)
        if self.options.fault == "garbage":
            out.result = garbage_like(out.result, seed=rnd.step)
        payload = out.result.to_bytes()
        self._last_loss, self._tokens_per_s = out.loss, out.tokens_per_s
        self.status.bytes_out += len(payload)
        ann = await self.node.publish(rnd.step, span[0], payload)
        await self.node.publish(rnd.step, MOMENTUM_FLAG | span[0], momentum)
        self._store(rnd.step, self.key.public, span[0], ann.commitment, out.result, len(payload))
        self._event(
            "trained",
            epoch=state.epoch,
            height=h,
            step=rnd.step,
            batch=span[0],
            samples=len(indices),
            loss=out.loss,
            bytes=len(payload),
            seconds=out.seconds,
        )

    async def _witness(self, state: _core.Coordinator, slot: int, h: int) -> None:
        """As a witness of round h, attest the results of round h-1 we hold."""
        if not state.roles(h, slot) & _core.ROLE_WITNESS:
            return
        if ("witness", state.epoch, h) in self._done:
            return
        rnd = state.round(h)
        if rnd.kind == _core.RoundKind.Data and ("train", state.epoch, h) not in self._done:
            return
        position = state.position_of(h, slot)
        if position is None:
            return
        expected = state.assignments(h - 1) if h >= 1 else []
        prev_step = state.round(h - 1).step if h >= 1 else -1
        have = self._results.get(prev_step, {})
        deadline = rnd.started_at + max(1, state.config.max_round_train_secs // 2)
        complete = all(
            any(
                r.batch_start == start and r.sender == self._node_key_of(state, s)
                for r in have.values()
            )
            for s, start, _ in expected
        )
        if not complete and time.time() < deadline:
            if self._once("pull", state.epoch, h) and self.node is not None and h >= 1:
                self._spawn(self.node.pull(prev_step))
            return
        assigned = {(self._node_key_of(state, s), start): s for s, start, _ in expected}
        received = [
            (r.commitment, assigned[(r.sender, r.batch_start)])
            for r in have.values()
            if (r.sender, r.batch_start) in assigned
        ]
        got = len(received)
        results, trainers = state.witness_filters(
            h, position, [c for c, _ in received], [s for _, s in received]
        )
        self._done.add(("witness", state.epoch, h))
        loss = int((self._last_loss or 0.0) * 1000)
        ok = await self._send(
            "witness",
            self.backend.witness(
                position,
                results,
                trainers,
                max(0, min(loss, 2**32 - 1)),
                int(self._tokens_per_s),
                0,
            ),
        )
        if ok is None:
            self._done.discard(("witness", state.epoch, h))
        self._event(
            "witnessed", epoch=state.epoch, height=h, results=got, expected=len(expected), ok=ok
        )

    async def _apply_ready(self, state: _core.Coordinator) -> None:
        """Apply, in order, every data round of this epoch whose witness round is final."""
        if self.trainer is None:
            return
        epoch = state.epoch
        applied = self._applied.get(epoch)
        if applied is None:
            return
        limit = state.height - 2 if state.phase in ROUND_PHASES else state.epoch_rounds - 1
        for r in range(applied + 1, limit + 1):
            rnd = state.round(r)
            if rnd.kind != _core.RoundKind.Data:
                self._applied[epoch] = r
                continue
            have = self._results.get(rnd.step, {})
            candidates = [
                (rec.batch_start, self._slot_of(state, rec.sender), rec.commitment)
                for rec in have.values()
                if self._slot_of(state, rec.sender) is not None
            ]
            try:
                accepted = state.apply_set(r, candidates)  # type: ignore[arg-type]
            except _core.RoundNotFinal:
                return
            except _core.NotEnoughWitnesses:
                # Its witnesses missed quorum: the core requeued its data; nothing applies.
                self._applied[epoch] = r
                self._event("skipped", epoch=epoch, height=r, step=rnd.step)
                continue
            results = []
            trainers = []
            for batch_start, trainer_slot, digest, _votes in accepted:
                trainers.append(trainer_slot)
                sender = state.client(trainer_slot).node_key
                rec = have.get((sender, batch_start, digest))
                if rec is None:
                    rec = await self._fetch_missing(state, rnd.step, sender, batch_start, digest)
                results.append(rec.result)
            await asyncio.to_thread(self.trainer.apply, results)
            self._applied[epoch] = r
            self.status.applied_steps += 1
            digest_hex = param_hash(self.trainer.model)
            self._event(
                "applied",
                epoch=epoch,
                height=r,
                step=rnd.step,
                results=len(results),
                candidates=len(candidates),
                trainers=trainers,
                hash=digest_hex,
                loss=self._last_loss,
            )

    async def _fetch_missing(
        self, state: _core.Coordinator, step: int, sender: bytes, batch: int, digest: bytes
    ) -> _Received:
        """An accepted result we never received: ask peers for its announcement, then fetch."""
        assert self.node is not None
        for _ in range(20):
            await self.node.pull(step)
            await asyncio.sleep(0.25)
            rec = self._results.get(step, {}).get((sender, batch, digest))
            if rec is not None:
                return rec
        raise ClientDesynced(
            f"accepted result of step {step} batch {batch} could not be fetched; "
            "this client can no longer follow the run (restart it to rejoin from peers)"
        )

    async def _health_checks(self, state: _core.Coordinator) -> None:
        """Ask the coordinator to drop members the witnesses of a final round found missing."""
        r = state.height - 2
        if (
            r < 0
            or state.round(r).kind != _core.RoundKind.Data
            or not self._once("health", state.epoch, r)
        ):
            return
        for target in state.round(r).members:
            try:
                verdict = state.health_verdict(r, target)
            except _core.CoordinatorError:
                return
            if verdict is not None:
                sent = await self._send("health_check", self.backend.health_check(target, r))
                self._event("health_check", height=r, target=target, reason=verdict.name, ok=sent)

    # ---- verification ---------------------------------------------------------------------

    async def _verify(self, state: _core.Coordinator, slot: int, h: int) -> None:
        """As a verifier of round h, recompute the assigned target's round h-1 result."""
        if h < 1 or not state.roles(h, slot) & _core.ROLE_VERIFIER:
            return
        if ("verify", state.epoch, h) in self._done or self.trainer is None:
            return
        target = state.verification_target(h, slot)
        span = state.assignment(h - 1, target) if target is not None else None
        if target is None or span is None:
            self._done.add(("verify", state.epoch, h))
            return
        prev_step = state.round(h - 1).step
        target_key = state.client(target).node_key
        claimed = next(
            (
                r
                for r in self._results.get(prev_step, {}).values()
                if r.sender == target_key and r.batch_start == span[0]
            ),
            None,
        )
        momentum_ann = self._momentum_anns.get((target_key, prev_step))
        deadline = state.round(h).started_at + max(1, state.config.max_round_train_secs // 2)
        if (claimed is None or momentum_ann is None) and time.time() < deadline:
            return
        self._done.add(("verify", state.epoch, h))
        if claimed is None:
            return  # no result to judge: the witnesses and health checks handle absence
        self._spawn(
            self._verify_one(state.epoch, h, target, prev_step, span, claimed, momentum_ann)
        )

    async def _verify_one(
        self,
        epoch: int,
        h: int,
        target: int,
        step: int,
        span: tuple[int, int],
        claimed: _Received,
        momentum_ann: Announcement | None,
    ) -> None:
        assert self.trainer is not None and self.node is not None and self.spec is not None
        params = self._snapshots.get(step)
        if params is None:
            log.info("no parameter snapshot for step %d; cannot verify", step)
            return
        if momentum_ann is None:
            score, passed, detail = 0.0, False, "momentum withheld"
        else:
            try:
                raw = bytes(await self.node.fetch(momentum_ann))
                shapes = {n: tuple(t.shape) for n, t in self.trainer.demo.momentum.items()}
                momentum = decode_momentum(raw, shapes)
            except Exception as e:  # noqa: BLE001 - an unfetchable disclosure counts as withheld
                momentum = None
                score, passed, detail = 0.0, False, f"momentum unavailable ({e!r})"
            if momentum is not None:
                size = len(self.trainer.data)
                indices = [i % size for i in range(span[0], span[1])]
                report = await asyncio.to_thread(
                    self._recompute, params, indices, momentum, claimed.result
                )
                score, passed, detail = report.score, report.passed, report.detail
        self._event(
            "verified", epoch=epoch, height=h, target=target, step=step, score=score, ok=passed
        )
        if not passed:
            log.warning(
                "result of slot %d at step %d failed verification: %s", target, step, detail
            )
            sent = await self._send("report", self.backend.report(target))
            self._event("reported", epoch=epoch, height=h, target=target, ok=sent)

    def _recompute(
        self,
        params: dict[str, torch.Tensor],
        indices: list[int],
        momentum: dict[str, torch.Tensor],
        claimed: DeMoResult,
    ) -> Any:
        assert self.trainer is not None and self.spec is not None
        if self._scratch is None:
            self._scratch = LlamaForCausalLM(self.trainer.model.config)
        with torch.no_grad():
            for name, p in self._scratch.named_parameters():
                p.copy_(params[name])
        batch = self.trainer.data.get_batch(indices)
        return verify_result(
            self._scratch,
            batch,
            momentum,
            claimed,
            self.spec.demo,
            micro_batch=self.spec.micro_batch,
        )

    # ---- cooldown and the end -------------------------------------------------------------

    async def _cooldown(self, state: _core.Coordinator, slot: int) -> None:
        await self._apply_ready(state)
        if self.trainer is None or not self._once("cooldown", state.epoch, 0):
            return
        if self._applied.get(state.epoch, -1) < state.epoch_rounds - 1:
            self._done.discard(("cooldown", state.epoch, 0))
            return
        directory = self._save_checkpoint(state.epoch)
        self._share_model()
        healthy = [c.slot for c in state.clients() if c.state == _core.ClientState.Healthy]
        if healthy and slot == min(healthy) and not state.checkpointed:
            ref = {"kind": "LocalPath", "location": str(directory.resolve()), "revision": ""}
            if await self._send("checkpoint", self.backend.checkpoint(ref)) is None:
                self._done.discard(("cooldown", state.epoch, 0))
        self._event("checkpoint", epoch=state.epoch, path=str(directory))

    def _save_checkpoint(self, epoch: int) -> Path:
        assert self.trainer is not None and self.spec is not None
        directory = self.options.checkpoint_dir / f"epoch-{epoch:05d}"
        save_checkpoint(self.trainer.model, directory)
        save_spec(self.spec, directory)
        return directory

    async def _finish(self, state: _core.Coordinator) -> None:
        if self.trainer is not None and self._once("finish", state.epoch, 0):
            directory = self.options.checkpoint_dir / "final"
            save_checkpoint(self.trainer.model, directory)
            if self.spec is not None:
                save_spec(self.spec, directory)
            self._event("finished", step=state.step, hash=param_hash(self.trainer.model))

    # ---- p2p plumbing ---------------------------------------------------------------------

    def _is_member(self, node_id: bytes) -> bool:
        state = self.backend.state()
        return any(c.node_key == node_id for c in state.clients())

    def _validate_announcement(self, ann: Announcement) -> str | None:
        state = self.backend.state()
        if not self._is_member(ann.sender):
            return "sender is not a member"
        if ann.step > state.step + 1:
            return "step is in the future"
        return None

    def _payload_hasher(self, ann: Announcement) -> Any:
        h = hashlib.sha256()
        h.update(struct.pack("<I", len(self._run_id)))
        h.update(self._run_id)
        h.update(struct.pack("<QQQ", ann.step, ann.batch_id, ann.payload_size))
        return h

    def _node_key_of(self, state: _core.Coordinator, slot: int) -> bytes:
        return state.client(slot).node_key

    def _slot_of(self, state: _core.Coordinator, node_key: bytes) -> int | None:
        for c in state.clients():
            if c.node_key == node_key:
                return c.slot
        return None

    async def _connect_peers(self, state: _core.Coordinator) -> None:
        if self.node is None:
            return
        members = {c.node_key for c in state.clients()}
        for node_key, addrs in self.backend.peer_addresses().items():
            if node_key == self.key.public or node_key in self._connected:
                continue
            if node_key in members and addrs.get("p2p_addr"):
                self._connected.add(node_key)
                self._spawn(self._dial(node_key, addrs["p2p_addr"]))

    async def _dial(self, node_key: bytes, addr: str) -> None:
        assert self.node is not None
        try:
            await self.node.connect(addr)
        except Exception as e:  # noqa: BLE001 - a peer that is down is retried later
            log.info("connect to %s failed: %r", node_key.hex()[:8], e)
            self._connected.discard(node_key)

    async def _consume_announcements(self) -> None:
        assert self.node is not None
        while True:
            ann = await self.node.announcements.get()
            if ann.kind != KIND_ANNOUNCE or ann.sender == self.key.public:
                continue
            if ann.batch_id & MOMENTUM_FLAG:
                self._momentum_anns[(ann.sender, ann.step)] = ann
                for old in [k for k in self._momentum_anns if k[1] < ann.step - 4]:
                    del self._momentum_anns[old]
                continue
            if ann.commitment in self._fetching:
                continue
            self._fetching.add(ann.commitment)
            self._spawn(self._fetch(ann))

    async def _fetch(self, ann: Announcement) -> None:
        assert self.node is not None
        try:
            payload = await self.node.fetch(ann)
            result = decode_result(bytes(payload))
            if self.trainer is not None:
                check_matches(result, self.trainer.demo.layout())
        except ResultFormatError as e:
            log.warning("result from %s rejected: %s", ann.sender.hex()[:8], e)
            return
        except Exception as e:  # noqa: BLE001 - a failed fetch is retried by the pull path
            log.info("fetch from %s failed: %r", ann.sender.hex()[:8], e)
            self._fetching.discard(ann.commitment)
            return
        self.status.bytes_in += len(payload)
        self._store(ann.step, ann.sender, ann.batch_id, ann.commitment, result, len(payload))

    def _store(
        self, step: int, sender: bytes, batch: int, digest: bytes, result: DeMoResult, size: int
    ) -> None:
        per_step = self._results.setdefault(step, {})
        per_step[(sender, batch, digest)] = _Received(sender, batch, digest, result, size)
        for old in [s for s in self._results if s < step - 4]:
            del self._results[old]
