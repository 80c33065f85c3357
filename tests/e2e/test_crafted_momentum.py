"""Issue 14, end to end on the TCP backend: a trainer that crafts its disclosed momentum so its
(steered) results recompute exactly is caught by the momentum chain check (client/audit.py),
reported and ejected; no honest client is reported. Real server and client processes, a tiny
model on CPU.

With verification_pct = 50 and 4 clients every round has 2 trainers and 2 verifiers, one per
trainer, so the liar's link is checked in each round where it trained in the two rounds before
and its verifier is not itself: about 1 round in 5, so it is caught within a few rounds of the
first epoch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from psyche_client import _core
from tests.e2e.harness import LocalRun, by_step

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def local_run(tmp_path: Path) -> Iterator[LocalRun]:
    run = LocalRun(tmp_path / "run")
    yield run
    run.stop()


def test_a_crafted_momentum_is_caught_by_the_chain_check(local_run: LocalRun) -> None:
    local_run.config.update(
        min_clients=3,
        verification_pct=50,
        witness_grace_secs=3,
        total_steps=24,
        rounds_per_epoch=24,
    )
    honest = ["client0", "client1", "client2"]
    local_run.start_server()
    for n in honest:
        local_run.start_client(n)
    local_run.start_liar("liar", craft=True)
    local_run.wait_until(
        lambda: local_run.clients["liar"].poll() is not None, 240, "the liar's ejection", honest
    )
    assert local_run.clients["liar"].returncode == 2, local_run.log_tail("liar")
    assert "ejected this client" in local_run.log_tail("liar")
    liar_slot = next(
        int(e["slot"])  # type: ignore[call-overload]
        for e in local_run.events("liar")
        if e["event"] == "epoch"
    )

    def links() -> list[dict[str, object]]:
        return [e for n in honest for e in local_run.events(n) if e["event"] == "linked"]

    local_run.wait_until(
        lambda: any(e["target"] != liar_slot for e in links()),
        90,
        "an honest link checked",
        honest,
    )
    links_seen = links()
    assert any(not e["ok"] and e["target"] == liar_slot and e["mismatched"] for e in links_seen)
    assert all(e["ok"] for e in links_seen if e["target"] != liar_slot), "honest links hold"
    verdicts = [
        e for n in honest for e in local_run.events(n) if e["event"] in ("verified", "reported")
    ]
    caught = [e for e in verdicts if e["event"] == "verified" and e["target"] == liar_slot]
    failed = [e for e in caught if not e["ok"]]
    assert failed, "an honest verifier failed the liar"
    assert all(e["score"] == 1.0 for e in failed), (
        "its results recompute exactly from its disclosures: only the chain check catches it"
    )
    reported = {e["target"] for e in verdicts if e["event"] == "reported"}
    assert reported == {liar_slot}, "no honest client was reported"
    steps = by_step({n: local_run.applied_hashes(n) for n in honest})
    assert all(len(h) == 1 for h in steps.values()), "honest clients stay bit-identical"
    assert liar_slot not in {
        c.slot for c in local_run.state().clients() if c.state == _core.ClientState.Healthy
    }
