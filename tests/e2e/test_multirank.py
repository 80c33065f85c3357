"""End to end: a client of two ranks (torchrun, gloo, FSDP2) trains in a TCP run beside two
1-rank clients, and every rank of every client applies identical parameters.

Rank 0 of the torchrun client is the one the coordinator and the peers see; rank 1 writes its
own `applied` events (`<events>.rank1`) with the hash of the full parameters it received.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from psyche_client import _core
from psyche_client.cli.demo import read_events
from tests.e2e.harness import LocalRun, by_step

pytestmark = pytest.mark.timeout(300)

MULTI = "multi"


@pytest.fixture
def local_run(tmp_path: Path) -> Iterator[LocalRun]:
    run = LocalRun(tmp_path / "run")
    yield run
    if MULTI in run.clients and run.clients[MULTI].poll() is None:
        run.kill_group(MULTI)
    run.stop()


def test_two_rank_fsdp_client_applies_what_one_rank_clients_apply(local_run: LocalRun) -> None:
    local_run.config.update(total_steps=8, rounds_per_epoch=8)
    local_run.start_server()
    singles = ["client0", "client1"]
    for n in singles:
        local_run.start_client(n)
    local_run.start_torchrun_client(MULTI, 2, ["--parallel=fsdp"])
    names = [*singles, MULTI]
    local_run.wait_clients(names, timeout=240)

    total = local_run.config["total_steps"]
    steps = by_step({n: local_run.applied_hashes(n) for n in names})
    assert sorted(steps) == list(range(total)), "every step was applied by every client"
    diverged = {s: h for s, h in steps.items() if len(h) != 1}
    assert not diverged, f"clients diverged at steps {sorted(diverged)}"

    events = local_run.events(MULTI)
    assert [(e["world"], e["layout"]) for e in events if e["event"] == "ranks"] == [(2, "fsdp")]
    assert any(e["event"] == "trained" for e in events), "the 2-rank client trained"
    applied = [e["hash"] for e in events if e["event"] == "applied" and int(e["results"]) > 0]  # type: ignore[call-overload]
    rank1 = [
        e["hash"]
        for e in read_events(local_run.work / f"{MULTI}.events.jsonl.rank1")
        if e["event"] == "applied"
    ]
    assert len(applied) == total
    assert rank1 == applied, "rank 1 holds rank 0's parameters after every apply"
    state = local_run.state()
    assert state.phase == _core.Phase.Finished and state.steps_done == total


def test_unknown_parallel_layout_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "psyche_client", "join", "127.0.0.1:1", "--data=x", "--parallel=tp"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--parallel" in proc.stderr, proc.stderr
