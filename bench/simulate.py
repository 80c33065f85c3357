"""Simulate a large Psyche run against the coordinator core (psyche_client._core).

256-client cap, many epochs, with random joins, clients that die mid-epoch, clean withdrawals,
late witnesses, lying witnesses and cheating trainers caught by verifiers. Every round the
simulation checks the protocol invariants of docs/protocol.md and counts violations. The last
line is:

    clients=… epochs=… rounds=… invariant_violations=0 rounds_per_s=…

Usage: .venv/bin/python bench/simulate.py [--epochs 20] [--clients 256] [--seed 1]
Exit status is 1 when any invariant was violated.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from dataclasses import dataclass, field

from psyche_client import _core as core


@dataclass
class Sim:
    rng: random.Random
    coord: core.Coordinator
    now: int
    p_liar: float = 0.04
    p_late: float = 0.04
    p_cheat: float = 0.02
    next_id: int = 0
    dead: set[bytes] = field(default_factory=set)
    liars: set[bytes] = field(default_factory=set)
    late: set[bytes] = field(default_factory=set)
    cheaters: set[bytes] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)
    rounds: int = 0
    joins: int = 0
    drops: int = 0
    withdrawals: int = 0
    ejections: int = 0
    applied: int = 0
    dishonest_majority_forgeries: int = 0
    fp_assisted_forgeries: int = 0
    rejected: int = 0
    max_members: int = 0
    last_step: int = 0
    last_nonce: int = 0
    applied_spans: list[tuple[int, int]] = field(default_factory=list)
    requeued_rounds: int = 0
    empty_rounds: int = 0

    # -------------------------------------------------------------- helpers

    def violate(self, what: str) -> None:
        self.violations.append(f"epoch={self.coord.epoch} height={self.coord.height}: {what}")

    def rand32(self) -> bytes:
        return self.rng.randbytes(32)

    def new_wallet(self) -> tuple[bytes, bytes]:
        self.next_id += 1
        w = hashlib.sha256(b"wallet-%d" % self.next_id).digest()
        k = hashlib.sha256(b"node-%d" % self.next_id).digest()
        roll = self.rng.random()
        if roll < self.p_liar:
            self.liars.add(w)
        elif roll < self.p_liar + self.p_late:
            self.late.add(w)
        elif roll < self.p_liar + self.p_late + self.p_cheat:
            self.cheaters.add(w)
        return w, k

    def alive(self, wallet: bytes) -> bool:
        return wallet not in self.dead

    def commitment(self, epoch: int, height: int, slot: int, wallet: bytes) -> bytes:
        return hashlib.sha256(b"%d/%d/%d/" % (epoch, height, slot) + wallet).digest()

    def tick(self) -> str:
        out = self.coord.tick(self.now, self.rand32())
        self.check_monotonic()
        return out

    def check_monotonic(self) -> None:
        c = self.coord
        if c.step < self.last_step:
            self.violate("step went backwards")
        if c.nonce < self.last_nonce:
            self.violate("nonce went backwards")
        self.last_step, self.last_nonce = c.step, c.nonce

    def try_join(self, count: int) -> None:
        for _ in range(count):
            w, k = self.new_wallet()
            try:
                self.coord.join(w, k, self.now)
                self.joins += 1
            except core.Full:
                return

    # -------------------------------------------------------------- invariants

    def check_round(self, h: int) -> None:
        c = self.coord
        info = c.round(h)
        spans = c.assignments(h)
        if info.kind == core.RoundKind.Data:
            pos = info.data_index
            for _slot, lo, hi in spans:
                if lo != pos or hi <= lo:
                    self.violate(f"assignment gap/overlap at {lo}")
                pos = hi
            if pos != info.data_index + info.batch_size:
                self.violate("batch not fully assigned")
        elif spans:
            self.violate("drain round assigned data")
        trainers = {s for s, _lo, _hi in spans}
        for slot, roles in c.committee(h):
            if roles & core.ROLE_VERIFIER and slot in trainers:
                self.violate("verifier also trains")
        states = {cl.slot: cl.state for cl in c.clients()}
        for hh in range(max(0, h - 3), h + 1):
            for slot in c.round(hh).ejected:
                if states.get(slot) != core.ClientState.Ejected:
                    self.violate(f"slot {slot} ejected but {states.get(slot)}")
        data = c.to_bytes()
        if len(data) != core.STATE_SIZE or core.Coordinator.from_bytes(data).to_bytes() != data:
            self.violate("state bytes do not round-trip")

    def check_coverage(self) -> None:
        """Applied rounds and the requeue tile [0, data_index): no sample lost or repeated."""
        c = self.coord
        spans = sorted(self.applied_spans + c.requeue())
        pos = 0
        for start, length in spans:
            if start != pos:
                self.violate(f"data {'gap' if start > pos else 'overlap'} at {min(start, pos)}")
                return
            pos = start + length
        if pos != c.data_index or c.lost_samples:
            self.violate(f"coverage ends at {pos}, data_index {c.data_index}")

    def check_apply(self, h: int) -> None:
        """At the start of round h+2 every client applies round h's results."""
        c = self.coord
        epoch = c.epoch
        spans = c.assignments(h)
        cands: list[tuple[int, int, bytes]] = []
        genuine: dict[int, bytes] = {}
        for slot, lo, _hi in spans:
            cl = c.client(slot)
            com = self.commitment(epoch, h, slot, cl.wallet)
            genuine[lo] = com
            cands.append((lo, slot, com))
            # A forged result for the same batch that a liar tries to get applied.
            cands.append((lo, slot, hashlib.sha256(b"forged" + com).digest()))
        try:
            accepted = c.apply_set(h, cands)
        except (core.NotEnoughWitnesses, core.NothingWitnessed) as e:
            # No quorum, or no trainer attested by a majority: the round applies nothing, does
            # not count as a step, and its span must be back on the requeue.
            info = c.round(h)
            if not info.requeued:
                self.violate(f"round {h} refused with {e.name} was not requeued")
            self.requeued_rounds += 1
            if isinstance(e, core.NothingWitnessed):
                self.empty_rounds += 1
            self.rejected += len(spans)
            return
        info = c.round(h)
        self.applied_spans.append((info.data_index, info.batch_size))
        seen: set[int] = set()
        ejected = set(c.round(h).ejected) | set(c.round(h + 1).ejected)
        for lo, slot, com, _votes in accepted:
            if lo in seen:
                self.violate("batch applied twice")
            seen.add(lo)
            if genuine.get(lo) != com:
                subs = c.round(h + 1).submissions
                liars = sum(1 for x in subs if c.client(x.client).wallet in self.liars)
                if liars == 0:
                    # Only honest (salted, independent) filters: must never happen.
                    self.violate(f"forged result applied votes={_votes} S={len(subs)}")
                elif liars * 2 >= len(subs):
                    self.dishonest_majority_forgeries += 1
                else:
                    # A lying minority topped up by honest false positives (docs: threat model).
                    self.fp_assisted_forgeries += 1
            if slot in ejected:
                self.violate("ejected trainer's result applied")
        subs = c.round(h + 1).submissions
        lying = sum(1 for s in subs if c.client(s.client).wallet in self.liars)
        for slot, lo, _hi in spans:
            w = c.client(slot).wallet
            delivered = self.delivered.get((epoch, h), set())
            honest_majority = lying * 2 < len(subs)
            if slot in delivered and slot not in ejected and honest_majority and lo not in seen:
                self.violate(f"honest result of slot {slot} not applied")
            del w
        self.applied += len(accepted)
        self.rejected += len(spans) - len(accepted)

    # -------------------------------------------------------------- phases

    def run_epoch(self) -> None:
        c = self.coord
        # Waiting: let the timer run out.
        waited = 0
        while c.phase == core.Phase.WaitingForMembers:
            self.now += 1
            waited += 1
            if waited % 10 == 0:
                self.try_join(1)
            self.tick()
        if c.phase != core.Phase.Warmup:
            return
        for cl in c.clients():
            if cl.state == core.ClientState.Healthy and self.alive(cl.wallet):
                c.warmup_witness(cl.wallet, self.now)
        self.now += 1
        while c.phase == core.Phase.Warmup:
            self.now += 1
            self.tick()
        self.max_members = max(self.max_members, c.count(core.ClientState.Healthy))
        while c.phase in (core.Phase.RoundTrain, core.Phase.RoundWitness):
            self.run_round()
        if c.phase == core.Phase.Cooldown:
            last = c.epoch_rounds - 1
            if last >= 0:
                self.check_apply(last)  # applied as Cooldown starts
            self.check_coverage()
            # Only the designated checkpointer may record it; a dead one means no checkpoint.
            slot = c.checkpointer()
            assert slot is not None, "Cooldown with healthy members has a checkpointer"
            writer = c.client(slot)
            assert writer.state == core.ClientState.Healthy
            for other in c.clients():
                if other.slot != slot and other.state == core.ClientState.Healthy:
                    try:
                        c.checkpoint(other.wallet, core.ModelRef.peers("0" * 64), self.now)
                    except core.NotCheckpointer:
                        pass
                    else:
                        raise AssertionError("a non-designated member recorded the checkpoint")
                    break
            if self.alive(writer.wallet):
                rev = f"epoch-{c.epoch}"
                c.checkpoint(writer.wallet, core.ModelRef.hugging_face("org/sim", rev), self.now)
            while c.phase == core.Phase.Cooldown:
                self.now += 5
                self.tick()
        if c.phase in (core.Phase.WaitingForMembers, core.Phase.Paused, core.Phase.Finished):
            self.check_coverage()
        # Leavers freed: the dead ones are gone for good.
        members = {cl.wallet for cl in c.clients()}
        self.dead &= members

    def run_round(self) -> None:
        c = self.coord
        h = c.height
        epoch = c.epoch
        self.rounds += 1
        self.check_round(h)
        if h >= 2:
            self.check_apply(h - 2)
            self.health_checks(h - 2)
        info = c.round(h)
        committee = c.committee(h)
        # Trainers that are alive deliver their result to everyone (this round's broadcast).
        delivered: set[int] = set()
        for slot, _lo, _hi in c.assignments(h):
            if self.alive(c.client(slot).wallet):
                delivered.add(slot)
        self.delivered[(epoch, h)] = delivered
        # Random events during the round.
        self.chaos()
        # Verifiers recompute their target's previous result.
        for slot, roles in committee:
            w = c.client(slot).wallet
            if not roles & core.ROLE_VERIFIER or not self.alive(w):
                continue
            if c.client(slot).state != core.ClientState.Healthy:
                continue
            target = c.verification_target(h, slot)
            if target is None:
                continue
            if c.client(target).wallet in self.cheaters:
                try:
                    if c.report(w, target, self.now):
                        self.ejections += 1
                except (core.NotHealthy, core.DuplicateReport) as e:
                    self.violate(f"report failed: {e.name}")
        # Witnesses attest what they received of round h-1.
        prev = self.delivered.get((epoch, h - 1), set()) if h > 0 else set()
        received = [(self.commitment(epoch, h - 1, s, c.client(s).wallet), s) for s in prev]
        late: list[tuple[int, bytes]] = []
        self.now += 10
        for pos, (slot, roles) in enumerate(committee):
            if not roles & core.ROLE_WITNESS:
                continue
            w = c.client(slot).wallet
            if not self.alive(w) or c.client(slot).state != core.ClientState.Healthy:
                continue
            if w in self.late:
                late.append((pos, w))
                continue
            self.submit(pos, w, received)
        # Training runs until quorum + grace, or the limit.
        while c.phase == core.Phase.RoundTrain and c.height == h:
            self.now += 1
            self.tick()
        for pos, w in late:
            if c.height == h and c.phase == core.Phase.RoundWitness:
                self.submit(pos, w, received)
        while c.phase == core.Phase.RoundWitness and c.height == h:
            self.now += 1
            self.tick()
        if info.kind == core.RoundKind.Data and c.step < info.step + 1:
            self.violate("step did not advance past a data round")

    def submit(self, pos: int, w: bytes, received: list[tuple[bytes, int]]) -> None:
        """Witness `received` (commitment, trainer slot) pairs; the core builds the filters."""
        c = self.coord
        if w in self.liars:
            # Lie: claim nothing arrived (tries to get honest trainers dropped), but vouch
            # for forged results.
            forged = [hashlib.sha256(b"forged" + com).digest() for com, _ in received]
            results, trainers = c.witness_filters(c.height, pos, forged, [])
        else:
            coms, slots = [com for com, _ in received], [s for _, s in received]
            results, trainers = c.witness_filters(c.height, pos, coms, slots)
        try:
            c.witness(w, pos, results, trainers, self.now, loss_milli=2000, tokens_per_sec=5000)
        except core.CoordinatorError as e:
            self.violate(f"witness rejected: {e.name}")

    def health_checks(self, h: int) -> None:
        c = self.coord
        candidates = {s for s, _lo, _hi in c.assignments(h)} | {s for s, _r in c.committee(h + 1)}
        for slot in sorted(candidates):
            if c.client(slot).state != core.ClientState.Healthy:
                continue
            try:
                verdict = c.health_verdict(h, slot)
            except core.NotEnoughWitnesses:
                return
            if verdict is None:
                continue
            w = c.client(slot).wallet
            reporter = next(
                (
                    cl.wallet
                    for cl in c.clients()
                    if cl.state == core.ClientState.Healthy
                    and self.alive(cl.wallet)
                    and cl.slot != slot
                ),
                None,
            )
            if reporter is None:
                return
            c.health_check(reporter, slot, h, self.now)
            self.drops += 1
            honest_alive = self.alive(w) and w not in self.late
            subs = c.round(h + 1).submissions
            lying = sum(1 for s in subs if c.client(s.client).wallet in self.liars)
            if (
                honest_alive
                and slot in self.delivered.get((c.epoch, h), set())
                and lying * 2 < len(subs)
            ):
                self.violate(f"honest live slot {slot} dropped ({verdict})")

    def chaos(self) -> None:
        c = self.coord
        healthy = [
            cl
            for cl in c.clients()
            if cl.state == core.ClientState.Healthy and self.alive(cl.wallet)
        ]
        for cl in healthy:
            r = self.rng.random()
            if r < 0.004:
                self.dead.add(cl.wallet)  # crashes silently
            elif r < 0.006:
                c.withdraw(cl.wallet, self.now)
                self.withdrawals += 1
        if self.rng.random() < 0.5:
            self.try_join(self.rng.randint(1, 6))

    delivered: dict[tuple[int, int], set[int]] = field(default_factory=dict)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--clients", type=int, default=256)
    ap.add_argument("--initial", type=int, default=200)
    ap.add_argument("--rounds-per-epoch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--liars", type=float, default=0.04, help="share of lying witnesses")
    ap.add_argument("--late", type=float, default=0.04, help="share of late witnesses")
    ap.add_argument("--cheaters", type=float, default=0.02, help="share of cheating trainers")
    args = ap.parse_args()

    cfg = core.Config(
        total_steps=args.epochs * args.rounds_per_epoch,
        batch_size_start=1024,
        batch_size_end=4096,
        batch_ramp_steps=40,
        rounds_per_epoch=args.rounds_per_epoch,
        waiting_extra_secs=10,
        warmup_secs=30,
        max_round_train_secs=60,
        round_witness_secs=10,
        witness_grace_secs=3,
        cooldown_secs=20,
        min_clients=16,
        max_clients=args.clients,
        witnesses_per_round=core.MAX_WITNESSES,
        witness_quorum_pct=66,
        verification_pct=10,
        verifiers_per_target=1,
        eject_reports=1,
    )
    cfg.validate()
    rng = random.Random(args.seed)
    coord = core.Coordinator(rng.randbytes(32), cfg, core.ModelRef.hugging_face("org/sim"), 1_000)
    sim = Sim(
        rng=rng,
        coord=coord,
        now=1_000,
        p_liar=args.liars,
        p_late=args.late,
        p_cheat=args.cheaters,
    )
    coord.resume(sim.now)
    sim.try_join(args.initial)
    t0 = time.perf_counter()
    completed = 0
    while completed < args.epochs and coord.phase != core.Phase.Finished:
        before = coord.epochs_completed
        sim.run_epoch()
        completed += coord.epochs_completed - before
        if coord.phase == core.Phase.Finished:
            break
        # Between epochs new clients arrive to fill freed slots.
        sim.try_join(rng.randint(0, 30))
    elapsed = time.perf_counter() - t0
    for v in sim.violations[:20]:
        print("VIOLATION", v)
    print(
        f"joins={sim.joins} drops={sim.drops} withdrawals={sim.withdrawals} "
        f"ejections={sim.ejections} applied={sim.applied} not_applied={sim.rejected} "
        f"requeued_rounds={sim.requeued_rounds} empty_rounds={sim.empty_rounds} "
        f"requeue_now={len(coord.requeue())} "
        f"forged_dishonest_majority={sim.dishonest_majority_forgeries} "
        f"forged_minority_plus_fp={sim.fp_assisted_forgeries} "
        f"max_members={sim.max_members} steps={coord.steps_done}/{coord.step} "
        f"data_index={coord.data_index} "
        f"state_bytes={core.STATE_SIZE}"
    )
    print(
        f"clients={args.clients} epochs={coord.epochs_completed} rounds={sim.rounds} "
        f"invariant_violations={len(sim.violations)} rounds_per_s={sim.rounds / elapsed:.1f}"
    )
    return 1 if sim.violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
