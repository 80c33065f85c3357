"""End to end on the TCP backend: real server and client processes training a tiny model.

Each test runs a whole (short) run: a coordinator process, client processes that talk libp2p to
each other on loopback, torch training on CPU. Assertions read the events the clients write and
the state the server persists.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from psyche_client import _core
from tests.e2e.harness import LocalRun, by_step

pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def local_run(tmp_path: Path) -> Iterator[LocalRun]:
    run = LocalRun(tmp_path / "run")
    yield run
    run.stop()


def _assert_in_sync(run: LocalRun, names: list[str], from_step: int = 0) -> dict[int, set[str]]:
    steps = by_step({n: run.applied_hashes(n) for n in names})
    diverged = {s: h for s, h in steps.items() if s >= from_step and len(h) != 1}
    assert not diverged, f"clients diverged at steps {sorted(diverged)}"
    return steps


def test_three_clients_two_epochs_and_a_server_restart_stay_identical(
    local_run: LocalRun,
) -> None:
    """The base case and a coordinator SIGKILLed mid-epoch in one run (each run costs ~1 min
    here): the restarted server resumes from its saved state and the run ends as if nothing
    happened."""
    names = ["client0", "client1", "client2"]
    local_run.start_server()
    for n in names:
        local_run.start_client(n)
    local_run.wait_until(
        lambda: len(local_run.applied_hashes("client0")) >= 5, 240, "five applied steps"
    )
    local_run.restart_server()
    local_run.wait_clients(names, timeout=300)

    total = local_run.config["total_steps"]
    steps = _assert_in_sync(local_run, names)
    assert sorted(steps) == list(range(total)), "every step was applied by every client"
    for n in names:
        hashes = local_run.applied_hashes(n)
        assert len(hashes) == total
        applied = [e for e in local_run.events(n) if e["event"] == "applied"]
        assert all(int(e["results"]) >= 1 for e in applied), "a round applied no result"  # type: ignore[arg-type]
        finals = {e["hash"] for e in local_run.events(n) if e["event"] == "finished"}
        assert finals == {hashes[total - 1]}
    losses = local_run.losses("client0")
    first, last = sorted(losses)[:3], sorted(losses)[-3:]
    assert sum(losses[s] for s in last) < sum(losses[s] for s in first) * 0.8, losses
    state = local_run.state()
    assert state.phase == _core.Phase.Finished and state.steps_done == total


def test_killed_client_is_dropped_and_run_continues(local_run: LocalRun) -> None:
    local_run.config.update(min_clients=2)
    names = ["client0", "client1", "client2"]
    local_run.start_server()
    for n in names:
        local_run.start_client(n)
    # Under load a client can join after epoch 0 started and wait as Pending until epoch 1.
    # The kill must hit an epoch all three are members of, after its warmup, so that the
    # survivors' health check (which needs a witness quorum) is what drops the victim.
    common: set[object] = set()

    def all_members() -> bool:
        epochs = [{e["epoch"] for e in local_run.events(n) if e["event"] == "epoch"} for n in names]
        common.update(set.intersection(*epochs))
        return bool(common) and len(local_run.applied_hashes("client2")) >= 3

    local_run.wait_until(all_members, 240, "an epoch with all three members")
    applied = len(local_run.applied_hashes("client2"))
    local_run.wait_until(
        lambda: len(local_run.applied_hashes("client2")) >= applied + 2, 240, "two more steps"
    )
    victim_slot = next(
        int(e["slot"])  # type: ignore[arg-type]
        for e in local_run.events("client2")
        if e["event"] == "epoch" and e["epoch"] == max(common)  # type: ignore[type-var]
    )
    local_run.kill_client("client2", signal.SIGKILL)
    survivors = ["client0", "client1"]
    local_run.wait_clients(survivors, timeout=300)
    total = local_run.config["total_steps"]
    steps = _assert_in_sync(local_run, survivors)
    assert sorted(steps) == list(range(total))
    checks = [
        e
        for n in survivors
        for e in local_run.events(n)
        if e["event"] == "health_check" and e["target"] == victim_slot and e["ok"]
    ]
    assert checks, "a survivor had the dead client dropped"
    state = local_run.state()
    assert state.phase == _core.Phase.Finished
    assert victim_slot not in {c.slot for c in state.clients()}


def test_late_joiner_gets_model_from_peers(local_run: LocalRun) -> None:
    local_run.config.update(min_clients=2, total_steps=36)
    local_run.start_server()
    for n in ["client0", "client1"]:
        local_run.start_client(n)
    local_run.wait_until(lambda: len(local_run.losses("client0")) >= 2, 240, "training to start")
    local_run.start_client("late")
    names = ["client0", "client1", "late"]
    local_run.wait_clients(names, timeout=360)
    sources = [e["source"] for e in local_run.events("late") if e["event"] == "model"]
    assert sources == ["peers"], sources
    late = local_run.applied_hashes("late")
    assert late and min(late) >= 12, "the late joiner trained from the next epoch on"
    steps = _assert_in_sync(local_run, names)
    assert all(len(steps[s]) == 1 for s in late)
    assert local_run.losses("late"), "the late joiner trained"


def test_lying_client_is_caught_and_ejected(local_run: LocalRun) -> None:
    """A client sends well-formed garbage with valid commitments; verifiers recompute, report,
    the core ejects it, and no result of it is applied from the round it was caught."""
    local_run.config.update(
        min_clients=3, verification_pct=50, witness_grace_secs=3, total_steps=24
    )
    honest = ["client0", "client1", "client2"]
    local_run.start_server()
    for n in honest:
        local_run.start_client(n)
    local_run.start_liar("liar")
    local_run.wait_clients(honest, timeout=360)
    liar_slot = next(
        int(e["slot"])
        for e in local_run.events("liar")
        if e["event"] == "epoch"  # type: ignore[arg-type]
    )
    reports = [
        e
        for n in honest
        for e in local_run.events(n)
        if e["event"] == "reported" and e["target"] == liar_slot and e["ok"]
    ]
    assert reports, "an honest verifier reported the liar"
    caught = min(int(e["height"]) for e in reports)  # type: ignore[arg-type]
    caught_epoch = min(int(e["epoch"]) for e in reports)  # type: ignore[arg-type]
    for n in honest:
        for e in local_run.events(n):
            if e["event"] != "applied" or int(e["epoch"]) < caught_epoch:  # type: ignore[arg-type]
                continue
            if int(e["epoch"]) == caught_epoch and int(e["height"]) < caught - 1:  # type: ignore[arg-type]
                continue
            assert liar_slot not in e["trainers"], f"liar's result applied after capture: {e}"  # type: ignore[operator]
    honest_verdicts = [
        e
        for n in honest
        for e in local_run.events(n)
        if e["event"] == "verified" and e["target"] != liar_slot
    ]
    assert all(e["ok"] for e in honest_verdicts), "no honest result failed verification"
    _assert_in_sync(local_run, honest)
    assert local_run.clients["liar"].wait(30) == 2, "the ejected liar exits with a clear error"
    assert "ejected this client" in local_run.log_tail("liar")
    assert liar_slot not in {
        c.slot for c in local_run.state().clients() if c.state == _core.ClientState.Healthy
    }
