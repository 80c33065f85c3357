"""Compute units of every coordinator-program instruction at 256 clients, and the `.so` size.

Runs the SBF build in LiteSVM (solders): a run with 256 members goes through a full epoch
(joins → warmup → rounds with 16 witnesses → cooldown → finished), with one verifier report
(ejecting its target), one silent client dropped by a health check, a checkpoint, then pause,
update and close. Every transaction's state is checked against the core bindings, as in the
tests. Prints the largest CU seen per instruction; the last line is
`max_cu=… tick_cu=… witness_cu=… join_cu=…`.

Run: `make sbf && .venv/bin/python bench/program_cu.py`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the LiteSVM harness is test-only code under tests/support

from psyche_client import _core  # noqa: E402
from psyche_client.solana.program import CoordinatorProgram  # noqa: E402
from tests.support.litesvm_harness import EpochDriver, Member, Svm  # noqa: E402

SO = ROOT / "target" / "deploy" / "psyche_coordinator.so"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=256)
    args = ap.parse_args()
    n = args.clients

    svm = Svm(CoordinatorProgram(), SO)
    config = _core.Config(
        total_steps=3,
        batch_size_start=1024,
        batch_size_end=1024,
        batch_ramp_steps=0,
        rounds_per_epoch=3,
        waiting_extra_secs=1,
        warmup_secs=30,
        max_round_train_secs=30,
        round_witness_secs=10,
        witness_grace_secs=2,
        cooldown_secs=5,
        min_clients=max(1, n // 2),
        max_clients=n,
        witnesses_per_round=16,
        witness_quorum_pct=66,
        verification_pct=10,
    )
    svm.create_run(config)
    svm.set_paused(False)
    members = [Member(svm) for _ in range(n)]
    for m in members:
        svm.join(m.keypair, m.node_key)
    run, coord = svm.accounts
    for i, m in enumerate(members[:8]):
        user = m.keypair.pubkey()
        addr = f"/ip4/10.0.{i}.1/udp/4001/quic-v1/p2p/12D3KooW{'x' * 44}"
        svm.ok(
            "advertise", m.keypair, [svm.p.advertise(user, run, coord, addr, f"10.0.{i}.1:5000")]
        )
    svm.ok("close_peer", members[0].keypair, [svm.p.close_peer(members[0].keypair.pubkey(), run)])
    driver = EpochDriver(svm, members, dt=3)
    mirror = driver.mirror

    driver.run_until(_core.Phase.RoundTrain)
    while mirror.height < 1:
        driver.step()
    # A verifier of round 1 reports its target (ejecting it: eject_reports = 1).
    h = mirror.height
    for m in members:
        slot = mirror.find_client(m.wallet)
        target = None if slot is None else mirror.verification_target(h, slot)
        if target is not None and mirror.phase in (
            _core.Phase.RoundTrain,
            _core.Phase.RoundWitness,
        ):
            svm.member("report", m.keypair, svm.p.report(m.keypair.pubkey(), *svm.accounts, target))
            mirror.report(m.wallet, target, svm.now)
            svm.check()
            break
    # One trainer goes silent; the driver's health checks drop it once its round is final.
    driver.silent.add(members[-1].wallet)
    driver.run_until(_core.Phase.Finished)

    svm.set_paused(True)
    svm.ok("update", svm.owner, [svm.p.update(svm.owner.pubkey(), *svm.accounts, config)])
    svm.mirror_tick()
    mirror.update_config(config, svm.now)
    svm.check()
    svm.ok("close_run", svm.owner, [svm.p.close_run(svm.owner.pubkey(), *svm.accounts)])

    cu = svm.cu
    width = max(len(k) for k in cu)
    print(f"program: {SO.relative_to(ROOT)} {SO.stat().st_size} bytes (SBPF v0)")
    print(f"clients: {n}, phases: {' → '.join(p.name for p in driver.phases)}")
    for name in sorted(cu, key=lambda k: -cu[k]):
        print(f"  {name:<{width}}  {cu[name]:>7,} CU")
    missing = {"report", "health_check", "checkpoint", "witness", "warmup_witness"} - set(cu)
    assert not missing, f"not exercised: {missing}"
    print(
        f"max_cu={max(cu.values())} tick_cu={cu['tick']} witness_cu={cu['witness']} "
        f"join_cu={cu['join_run']} so_bytes={SO.stat().st_size}"
    )


if __name__ == "__main__":
    main()
