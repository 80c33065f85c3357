"""A LiteSVM harness for the coordinator program: the SBF `.so` loaded in-process, a settable
clock, and a run mirrored in the core bindings.

Test-only code (not shipped in the package): used by the program tests (tests/solana) and the
compute-unit report (bench/program_cu.py). Needs `solders` with LiteSVM (0.26); nothing here
touches a network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.sysvar import SLOT_HASHES
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata
from solders.transaction_status import InstructionErrorCustom, TransactionErrorInstructionError

from psyche_client import _core
from psyche_client.solana.program import (
    ANCHOR_ERRORS,
    COORDINATOR_SPACE,
    CoordinatorProgram,
    decode_coordinator,
)

T0 = 1_800_000_000
"""The harness's initial unix time."""

Result = TransactionMetadata | FailedTransactionMetadata


def custom_error(result: Result) -> int:
    """The custom program error code of a failed transaction's instruction error."""
    assert isinstance(result, FailedTransactionMetadata), "the transaction should have failed"
    err = result.err()
    assert isinstance(err, TransactionErrorInstructionError), f"not an instruction error: {err}"
    custom = err.err
    assert isinstance(custom, InstructionErrorCustom), f"not a custom program error: {custom}"
    return int(custom.code)


class Svm:
    """LiteSVM with the program loaded, a controllable clock, and a run mirrored in the core.

    `mirror` is a `_core.Coordinator` that receives the same transitions with the same clock and
    randomness (the SlotHashes sysvar's newest hash) as the program; `check()` asserts the
    account's state bytes equal the mirror's.
    """

    def __init__(self, program: CoordinatorProgram, so: Path) -> None:
        self.p = program
        self.vm = LiteSVM()
        self.vm.add_program(program.program_id, so.read_bytes())
        self.now = T0
        self.set_time(T0)
        self.owner = self.funded()
        self.run = Pubkey.default()
        self.coordinator = Keypair()
        self.mirror: _core.Coordinator | None = None
        self.cu: dict[str, int] = {}
        self.node_signers: dict[bytes, Keypair] = {}
        """Node keypairs by public key (Member registers its own): they co-sign join_run."""

    # -------------------------------------------------------------- plumbing

    def funded(self, lamports: int = 10_000_000_000, seed: bytes | None = None) -> Keypair:
        kp = Keypair() if seed is None else Keypair.from_seed(seed)
        self.vm.airdrop(kp.pubkey(), lamports)
        return kp

    def set_time(self, now: int) -> None:
        clock = self.vm.get_clock()
        clock.unix_timestamp = now
        self.vm.set_clock(clock)
        self.now = now

    def advance(self, secs: int) -> None:
        self.set_time(self.now + secs)

    def randomness(self) -> bytes:
        account = self.vm.get_account(SLOT_HASHES)
        assert account is not None
        return bytes(account.data[16:48])

    def send(
        self, payer: Keypair, ixs: Sequence[Instruction], signers: Sequence[Keypair] = ()
    ) -> Result:
        """Signs with `payer` (fee payer) and `signers`, with a fresh blockhash, and executes."""
        self.vm.expire_blockhash()
        message = Message.new_with_blockhash(list(ixs), payer.pubkey(), self.vm.latest_blockhash())
        unique = {bytes(payer.pubkey()): payer}
        for s in signers:
            unique.setdefault(bytes(s.pubkey()), s)
        return self.vm.send_transaction(VersionedTransaction(message, list(unique.values())))

    def ok(
        self, what: str, payer: Keypair, ixs: Sequence[Instruction], signers: Sequence[Keypair] = ()
    ) -> TransactionMetadata:
        result = self.send(payer, ixs, signers)
        assert isinstance(result, TransactionMetadata), f"{what} failed: {result}"
        self.cu[what] = max(self.cu.get(what, 0), result.compute_units_consumed())
        return result

    def fails(
        self, payer: Keypair, ixs: Sequence[Instruction], signers: Sequence[Keypair] = ()
    ) -> str:
        """Sends a transaction that must fail; returns the error's name (IDL or Anchor)."""
        code = custom_error(self.send(payer, ixs, signers))
        name = self.p.error_name(code) or ANCHOR_ERRORS.get(code)
        assert name, f"unnamed error code {code}"
        return name

    # -------------------------------------------------------------- the run

    def create_run(
        self,
        config: _core.Config,
        model: _core.ModelRef | None = None,
        run_id: bytes | None = None,
        join_authority: Pubkey | None = None,
    ) -> None:
        model = model or _core.ModelRef.hugging_face("org/model", "main")
        run_id = run_id or bytes(Keypair().pubkey())
        self.run = self.p.run_address(run_id)
        self.coordinator = Keypair()
        lamports = self.vm.minimum_balance_for_rent_exemption(COORDINATOR_SPACE)
        ixs = [
            self.p.create_coordinator_account(
                self.owner.pubkey(), self.coordinator.pubkey(), lamports
            ),
            self.p.init_run(
                self.owner.pubkey(),
                self.coordinator.pubkey(),
                run_id,
                config,
                model,
                join_authority,
            ),
        ]
        self.ok("init_run", self.owner, ixs, [self.coordinator])
        self.mirror = _core.Coordinator(run_id, config, model, self.now)
        self.check()

    def state(self) -> _core.Coordinator:
        account = self.vm.get_account(self.coordinator.pubkey())
        assert account is not None, "coordinator account missing"
        assert account.owner == self.p.program_id
        return decode_coordinator(bytes(account.data))

    def check(self) -> _core.Coordinator:
        """Asserts the on-chain state equals the mirror's, byte for byte."""
        state = self.state()
        assert self.mirror is not None
        assert state.to_bytes() == self.mirror.to_bytes(), (
            f"state diverged: chain {state.phase}/{state.nonce}, "
            f"core {self.mirror.phase}/{self.mirror.nonce}"
        )
        return state

    def mirror_tick(self) -> None:
        assert self.mirror is not None
        self.mirror.tick(self.now, self.randomness())

    @property
    def accounts(self) -> tuple[Pubkey, Pubkey]:
        return self.run, self.coordinator.pubkey()

    # -------------------------------------------------------------- instructions + mirror

    def tick(self, payer: Keypair | None = None) -> None:
        self.ok("tick", payer or self.owner, [self.p.tick(*self.accounts)])
        self.mirror_tick()
        self.check()

    def set_paused(self, paused: bool) -> None:
        what = "pause" if paused else "resume"
        self.ok(what, self.owner, [self.p.set_paused(self.owner.pubkey(), *self.accounts, paused)])
        self.mirror_tick()
        assert self.mirror is not None
        if paused:
            self.mirror.pause(self.now)
        else:
            self.mirror.resume(self.now)
        self.check()

    def join(self, user: Keypair, node_key: bytes, authorizer: Keypair | None = None) -> None:
        ix = self.p.join_run(
            user.pubkey(),
            *self.accounts,
            node_key,
            None if authorizer is None else authorizer.pubkey(),
        )
        signers = [self.node_signers[node_key]] + ([] if authorizer is None else [authorizer])
        self.ok("join_run", user, [ix], signers)
        self.mirror_tick()
        assert self.mirror is not None
        self.mirror.join(bytes(user.pubkey()), node_key, self.now)
        self.check()

    def member(self, what: str, user: Keypair, ix: Instruction) -> None:
        """Sends a member instruction; the caller applies the mirror's transition after."""
        self.ok(what, user, [ix])
        self.mirror_tick()


ROLE_WITNESS = 2


class Member:
    """A simulated client: wallet keypair and node key."""

    def __init__(self, svm: Svm, seed: bytes | None = None) -> None:
        """`seed` (32 bytes) makes the wallet and node key deterministic."""
        self.keypair = svm.funded(seed=seed)
        self.node = Keypair() if seed is None else Keypair.from_seed(bytes(b ^ 0xFF for b in seed))
        """The node key's keypair: it co-signs join_run (proof of possession)."""
        self.node_key = bytes(self.node.pubkey())
        svm.node_signers[self.node_key] = self.node

    @property
    def wallet(self) -> bytes:
        return bytes(self.keypair.pubkey())


class EpochDriver:
    """Drives simulated clients through a run on the program, mirroring each step in the core.

    Each `step()` does what honest clients do in the current phase (warmup witnesses, witness
    submissions with salted filters of the previous round's trainers, the checkpoint in
    Cooldown, health checks the core says are due), then advances the clock by `dt` and ticks.
    `silent` members do nothing (they stop submitting, so the core drops them).
    """

    def __init__(self, svm: Svm, members: list[Member], dt: int = 2) -> None:
        self.svm = svm
        self.members = members
        self.dt = dt
        self.silent: set[bytes] = set()
        self.phases: list[_core.Phase] = [self.mirror.phase]

    @property
    def mirror(self) -> _core.Coordinator:
        assert self.svm.mirror is not None
        return self.svm.mirror

    def active(self) -> list[tuple[int, Member]]:
        """(slot, member) of the healthy members that are not silent."""
        out = []
        for m in self.members:
            slot = self.mirror.find_client(m.wallet)
            if slot is None or m.wallet in self.silent:
                continue
            if self.mirror.client(slot).state == _core.ClientState.Healthy:
                out.append((slot, m))
        return out

    def warmup(self) -> None:
        for slot, m in self.active():
            if self.mirror.phase != _core.Phase.Warmup or slot in self.mirror.warmup_ready():
                continue
            ix = self.svm.p.warmup_witness(m.keypair.pubkey(), *self.svm.accounts)
            self.svm.member("warmup_witness", m.keypair, ix)
            if self.mirror.phase == _core.Phase.Warmup:
                self.mirror.warmup_witness(m.wallet, self.svm.now)
            self.svm.check()

    def witnesses(self) -> None:
        if self.mirror.phase not in (_core.Phase.RoundTrain, _core.Phase.RoundWitness):
            return
        h = self.mirror.height
        round_ = self.mirror.round(h)
        done = {s.client for s in round_.submissions}
        for slot, m in self.active():
            if (
                self.mirror.phase not in (_core.Phase.RoundTrain, _core.Phase.RoundWitness)
                or slot in done
            ):
                continue
            pos = self.mirror.position_of(h, slot)
            if pos is None or not self.mirror.roles(h, slot) & ROLE_WITNESS:
                continue
            sent = []
            if h >= 1:
                for trainer, _start, _end in self.mirror.assignments(h - 1):
                    if self.mirror.client(trainer).wallet not in self.silent:  # silent: no result
                        sent.append(trainer)
            results, trainers = self.mirror.witness_filters(h, pos, [bytes(32)], sent)
            ix = self.svm.p.witness(
                m.keypair.pubkey(),
                *self.svm.accounts,
                pos,
                results,
                trainers,
                loss_milli=2500,
                tokens_per_sec=1000,
                download_kib=64,
            )
            self.svm.member("witness", m.keypair, ix)
            if (
                self.mirror.phase in (_core.Phase.RoundTrain, _core.Phase.RoundWitness)
                and self.mirror.height == h
            ):
                self.mirror.witness(m.wallet, pos, results, trainers, self.svm.now, 2500, 1000, 64)
            self.svm.check()

    def health_checks(self) -> None:
        """Health checks the core reports as due for the final data rounds in the ring."""
        actors = self.active()
        if not actors or self.mirror.phase not in (
            _core.Phase.RoundTrain,
            _core.Phase.RoundWitness,
            _core.Phase.Cooldown,
        ):
            return
        _, checker = actors[0]
        top = self.mirror.height
        for h in range(max(0, top - 3), top + 1):
            for m in self.members:
                slot = self.mirror.find_client(m.wallet)
                if slot is None or self.mirror.client(slot).state != _core.ClientState.Healthy:
                    continue
                try:
                    verdict = self.mirror.health_verdict(h, slot)
                except _core.CoordinatorError:
                    continue
                if verdict is None:
                    continue
                ix = self.svm.p.health_check(checker.keypair.pubkey(), *self.svm.accounts, slot, h)
                self.svm.member("health_check", checker.keypair, ix)
                self.mirror.health_check(checker.wallet, slot, h, self.svm.now)
                self.svm.check()

    def checkpoint(self) -> None:
        actors = self.active()
        if self.mirror.phase != _core.Phase.Cooldown or self.mirror.checkpointed or not actors:
            return
        designated = self.mirror.checkpointer()
        if designated is None:
            return
        m = next((m for slot, m in actors if slot == designated), None)
        if m is None:
            return  # the designated checkpointer is not acting: no checkpoint this epoch
        model = _core.ModelRef.hugging_face("org/model", f"epoch-{self.mirror.epoch}")
        ix = self.svm.p.checkpoint(m.keypair.pubkey(), *self.svm.accounts, model)
        self.svm.member("checkpoint", m.keypair, ix)
        self.mirror.checkpoint(m.wallet, model, self.svm.now)
        self.svm.check()

    def step(self) -> str:
        self.warmup()
        self.witnesses()
        self.health_checks()
        self.checkpoint()
        self.svm.advance(self.dt)
        self.svm.tick()
        phase = self.mirror.phase
        if not self.phases or self.phases[-1] != phase:
            self.phases.append(phase)
        return phase

    def run_until(self, phase: _core.Phase, max_steps: int = 500) -> None:
        for _ in range(max_steps):
            if self.mirror.phase == phase:
                return
            self.step()
        raise AssertionError(f"{phase} not reached; phases {self.phases}")
