"""Run every core transition inside the SBF probe (LiteSVM) at 256 clients: print the compute
units each one used, and check that the SBF execution leaves exactly the bytes the host bindings
(psyche_client._core) produce for the same transition.

Usage (from the repository root):
    bash crates/coordinator/sbf-probe/check.sh
    .venv/bin/python crates/coordinator/sbf-probe/cu.py
Last line: `max_cu=… tick_round_cu=… witness_cu=… join_cu=… mismatches=0`.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

from solders.account import Account
from solders.compute_budget import set_compute_unit_limit
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import TransactionMetadata

from psyche_client import _core as core

SO = Path(os.environ.get("CARGO_TARGET_DIR", "/tmp/psyche-sbf-probe")) / (
    "bpfel-unknown-none/release/libpsyche_core_sbf_probe.so"
)
PROGRAM = Pubkey.from_string("Psyche1111111111111111111111111111111111111")
STATE = Pubkey.from_string("State11111111111111111111111111111111111111")
N = core.MAX_CLIENTS


def wallet(i: int) -> bytes:
    return hashlib.sha256(b"w%d" % i).digest()


def node(i: int) -> bytes:
    return hashlib.sha256(b"n%d" % i).digest()


def args(
    op: int,
    now: int,
    w: bytes = b"\0" * 32,
    k: bytes = b"\0" * 32,
    a: int = 0,
    height: int = 0,
    body: bytes = b"",
) -> bytes:
    head = struct.pack("<B7xq", op, now) + w + k + struct.pack("<HHHH", a, 0, height, 0)
    return head + body


class Probe:
    def __init__(self) -> None:
        self.svm = LiteSVM()
        self.svm.add_program(PROGRAM, SO.read_bytes())
        self.payer = Keypair()
        self.svm.airdrop(self.payer.pubkey(), 10**10)
        self.results: dict[str, int] = {}
        self.mismatches = 0

    def measure(
        self,
        name: str,
        c: core.Coordinator,
        data: bytes,
        host: Callable[[core.Coordinator], object],
    ) -> None:
        before = c.to_bytes()
        self.svm.set_account(STATE, Account(10**9, before, PROGRAM, False, 0))
        ix = Instruction(PROGRAM, data, [AccountMeta(STATE, False, True)])
        msg = Message.new_with_blockhash(
            [set_compute_unit_limit(1_400_000), ix],
            self.payer.pubkey(),
            self.svm.latest_blockhash(),
        )
        res = self.svm.send_transaction(VersionedTransaction(msg, [self.payer]))
        self.svm.expire_blockhash()
        if isinstance(res, TransactionMetadata):
            ok, cu = True, res.compute_units_consumed()
        else:
            ok, cu = False, res.meta().compute_units_consumed()
            print(name, res.err(), res.meta().logs()[-3:])
        host(c)  # the same transition on the host
        account = self.svm.get_account(STATE)
        after = bytes(account.data) if account is not None else b""
        same = after == c.to_bytes()
        if not (ok and same):
            self.mismatches += 1
        self.results[name] = cu
        print(f"{name:28s} cu={cu:7d} ok={ok} same_bytes={same}")


def main() -> int:
    if not SO.exists():
        print(f"build the probe first: bash crates/coordinator/sbf-probe/check.sh ({SO} missing)")
        return 2
    p = Probe()
    cfg = core.Config(
        max_clients=N,
        min_clients=2,
        witnesses_per_round=core.MAX_WITNESSES,
        verification_pct=10,
        rounds_per_epoch=4,
        total_steps=100,
    )
    c = core.Coordinator(b"\x07" * 32, cfg, core.ModelRef.hugging_face("org/m", "main"), 1000)
    c.resume(1000)
    now = 1000
    for i in range(N - 1):
        c.join(wallet(i), node(i), now)
    p.measure(
        "join (256th)",
        c,
        args(1, now, wallet(N - 1), node(N - 1)),
        lambda x: x.join(wallet(N - 1), node(N - 1), now),
    )
    rnd = hashlib.sha256(b"r").digest()
    p.measure("tick -> Warmup", c, args(0, now, k=rnd), lambda x: x.tick(now, rnd))
    for i in range(N - 1):
        c.warmup_witness(wallet(i), now)
    p.measure(
        "warmup_witness",
        c,
        args(3, now, wallet(N - 1)),
        lambda x: x.warmup_witness(wallet(N - 1), now),
    )
    p.measure("tick -> round 0", c, args(0, now, k=rnd), lambda x: x.tick(now, rnd))

    absent: set[int] = set()  # round-0 trainers whose result "never arrived"

    def witnesses(h: int, now: int, skip_last: bool = False) -> None:
        committee = c.committee(h)
        prev = [a for a in (c.assignments(h - 1) if h > 0 else []) if a[0] not in absent]
        for pos, (slot, roles) in enumerate(committee):
            if not roles & core.ROLE_WITNESS:
                continue
            if skip_last and pos == core.MAX_WITNESSES - 1:
                continue
            sent = [s for s, _lo, _hi in prev]
            coms = [hashlib.sha256(b"c%d" % s).digest() for s in sent]
            r, t = c.witness_filters(h, pos, coms, sent)
            c.witness(c.client(slot).wallet, pos, r, t, now)

    def body_of(h: int, pos: int) -> bytes:
        sent = [s for s, _lo, _hi in c.assignments(h - 1) if s not in absent]
        coms = [hashlib.sha256(b"c%d" % s).digest() for s in sent]
        r, t = c.witness_filters(h, pos, coms, sent)
        return struct.pack("<HH16x", pos, 0) + r + t

    # Round 0 and 1 honest; in round 1 the last witness is measured through the probe.
    witnesses(0, now)
    while c.height == 0:
        now += 1
        c.tick(now, rnd)
    victim = c.assignments(0)[0][0]
    absent.add(victim)
    witnesses(1, now, skip_last=True)
    pos = core.MAX_WITNESSES - 1
    slot = c.committee(1)[pos][0]
    w = c.client(slot).wallet
    body = body_of(1, pos)
    p.measure(
        "witness (16 filters set)",
        c,
        args(4, now, w, body=body),
        lambda x: x.witness(w, pos, body[20:340], body[340:660], now),
    )
    now += 10
    p.measure("tick -> RoundWitness", c, args(0, now, k=rnd), lambda x: x.tick(now, rnd))
    p.measure("tick -> round 2 (new round)", c, args(0, now, k=rnd), lambda x: x.tick(now, rnd))
    # Round 2: a verifier reports its target (round 1); a health check on round 0.
    verifier = next(
        s
        for s, r in c.committee(2)
        if r & core.ROLE_VERIFIER and c.verification_target(2, s) is not None
    )
    target = c.verification_target(2, verifier)
    assert target is not None
    vw = c.client(verifier).wallet
    p.measure("report (ejects)", c, args(6, now, vw, a=target), lambda x: x.report(vw, target, now))
    # Health check: the round-0 trainer no witness of round 1 saw is dropped.
    reporter = next(cl.wallet for cl in c.clients() if cl.state == core.ClientState.Healthy and cl.slot != victim)
    p.measure(
        "health_check (drops)",
        c,
        args(5, now, reporter, a=victim, height=0),
        lambda x: x.health_check(reporter, victim, 0, now),
    )
    p.measure("pause (abort epoch)", c, args(8, now), lambda x: x.pause(now))
    p.measure(
        "update_config", c, args(10, now, body=cfg_bytes(cfg)), lambda x: x.update_config(cfg, now)
    )
    r = p.results
    print(
        f"max_cu={max(r.values())} tick_round_cu={r['tick -> round 2 (new round)']} "
        f"witness_cu={r['witness (16 filters set)']} join_cu={r['join (256th)']} "
        f"report_cu={r['report (ejects)']} health_cu={r['health_check (drops)']} "
        f"mismatches={p.mismatches}"
    )
    return 1 if p.mismatches else 0


def cfg_bytes(cfg: core.Config) -> bytes:
    d = cfg.to_dict()
    return struct.pack(
        "<Q10I3H4BH4x",
        d["total_steps"],
        d["batch_size_start"],
        d["batch_size_end"],
        d["batch_ramp_steps"],
        d["rounds_per_epoch"],
        d["waiting_extra_secs"],
        d["warmup_secs"],
        d["max_round_train_secs"],
        d["round_witness_secs"],
        d["witness_grace_secs"],
        d["cooldown_secs"],
        d["min_clients"],
        d["max_clients"],
        d["witnesses_per_round"],
        d["witness_quorum_pct"],
        d["verification_pct"],
        d["verifiers_per_target"],
        d["eject_reports"],
        d["min_round_train_secs"],
    )


if __name__ == "__main__":
    sys.exit(main())
