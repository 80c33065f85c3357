"""The dashboard's JSON document and endpoint, without a browser.

The document is built from the real core driven in memory (rounds, a verifier's report that
ejects a client) and from real event files; the endpoint is served for a real in-process TCP
coordinator that a real client connection joins.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest

import psyche_client as psyche
from psyche_client import _core
from psyche_client.backend.tcp import TcpBackend
from psyche_client.dashboard import DashboardServer
from psyche_client.dashboard.events import ClientEvents
from psyche_client.dashboard.recorder import RunRecorder
from psyche_client.dashboard.server import page_html
from psyche_client.dashboard.snapshot import build_snapshot
from psyche_client.identity import NodeKey
from psyche_client.sdk.history import History
from psyche_client.sdk.status import status_of
from tests.core.test_core import T0, honest_round, new_run, start_epoch

pytestmark = pytest.mark.timeout(60)


def document(c: _core.Coordinator, recorder: RunRecorder, events: ClientEvents) -> dict:
    history = History()
    history.observe(c)
    recorder.observe(c)
    events.refresh()
    doc = build_snapshot(
        address="test",
        backend="tcp",
        status=status_of(c, history.latest()),
        state=c,
        history=history,
        recorder=recorder,
        events=events,
        now=float(T0),
    )
    return json.loads(json.dumps(doc, allow_nan=False))  # what the endpoint sends


def test_rounds_quorum_reports_and_ejections(tmp_path: Path) -> None:
    c = new_run(8, verification_pct=40, witnesses_per_round=3)
    recorder, events = RunRecorder(), ClientEvents(dirs=[tmp_path])
    recorder.observe(c)
    now = start_epoch(c, T0)
    recorder.observe(c)
    now = honest_round(c, now)
    recorder.observe(c)
    pairs = [(s, c.verification_target(1, s)) for s, r in c.committee(1) if r & _core.ROLE_VERIFIER]
    verifier, target = next((s, t) for s, t in pairs if t is not None)
    assert c.report(c.client(verifier).wallet, target, now) is True
    doc = document(c, recorder, events)

    timeline = doc["timeline"]
    assert [s["phase"] for s in timeline[:2]] == ["WaitingForMembers", "RoundTrain"]
    assert timeline[1]["height"] == 0 and timeline[-1]["height"] == 1, "one segment per round"
    assert all(a != b for a, b in zip(timeline, timeline[1:], strict=False))
    first = doc["rounds"][0]
    assert (first["epoch"], first["height"], first["kind"]) == (0, 0, "Data")
    assert first["submitted"] == first["witnesses"] == 3 and first["quorum_reached"]
    assert first["loss"] == 2.5 and {s["loss"] for s in first["submissions"]} == {2.5}
    assert doc["ejections"] == [{"slot": target, "epoch": 0, "height": 1, "step": 1}]
    rows = {r["slot"]: r for r in doc["clients"]}
    assert len(rows) == 8
    assert rows[target]["state"] == "Ejected" and rows[target]["health"] == "ejected"
    assert rows[target]["ejected_at"] == {"epoch": 0, "height": 1, "step": 1}
    assert rows[verifier]["reports_sent"] == 1
    assert rows[verifier]["health"] == "ok" and rows[verifier]["events"] is None
    assert doc["banned"] == 1
    assert doc["status"]["phase"] == "RoundTrain" and doc["status"]["clients"]["Ejected"] == 1


def test_event_files_join_clients_by_slot(tmp_path: Path) -> None:
    c = new_run(2)
    lines = [
        {"event": "epoch", "time": 1.0, "epoch": 0, "slot": 1},
        {"event": "trained", "time": 2.0, "step": 0, "loss": 5.5, "bytes": 10,
         "tokens_per_s": 900.0, "bytes_in": 300, "bytes_out": 400},
        {"event": "verified", "time": 3.0, "step": 0, "target": 0, "score": 0.5, "ok": False},
        {"event": "reported", "time": 3.1, "target": 0, "ok": True},
        {"event": "desynced", "time": 4.0},
    ]  # fmt: skip
    path = tmp_path / "alice.events.jsonl"
    text = "".join(json.dumps(e) + "\n" for e in lines)
    path.write_text(text[:-20])  # a line still being written waits for its end
    old = tmp_path / "bob.events.jsonl"  # a client from before the byte counters
    old.write_text(json.dumps({"event": "trained", "loss": float("nan"), "bytes": 7}) + "\n")
    (tmp_path / "other.log").write_text("not an events file\n")
    recorder, events = RunRecorder(), ClientEvents(dirs=[tmp_path])
    doc = document(c, recorder, events)
    row = next(r for r in doc["clients"] if r["slot"] == 1)
    assert row["events"]["bytes_in"] == 300 and row["events"]["bytes_out"] == 400
    assert row["events"]["note"] == "" and len(doc["reports"]) == 2, "desynced: not yet whole"
    path.write_text(text)
    doc = document(c, recorder, events)
    row = next(r for r in doc["clients"] if r["slot"] == 1)
    assert row["events"]["name"] == "alice" and row["events"]["loss"] == 5.5
    assert row["events"]["tokens_per_s"] == 900.0
    assert row["health"] == "desynced", "a Healthy slot whose client says it is desynced"
    assert [r["event"] for r in doc["reports"]] == ["verified", "reported"]
    assert doc["reports"][0]["client"] == "alice" and doc["reports"][0]["verifier_slot"] == 1
    with path.open("a") as f:
        f.write(json.dumps({"event": "resynced", "time": 5.0}) + "\n")
    doc = document(c, recorder, events)
    assert next(r for r in doc["clients"] if r["slot"] == 1)["health"] == "ok", "caught up"
    (unmatched,) = doc["unmatched_clients"]
    assert unmatched["name"] == "bob" and unmatched["bytes_out"] == 7
    assert unmatched["loss"] is None, "NaN is sent as null"


def test_the_page_fetches_nothing_from_elsewhere() -> None:
    page = page_html().decode()
    assert "/api/run" in page or "api/run" in page
    assert not re.search(r"""(src|href)\s*=|@import|url\(|<link""", page, re.I)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)


def test_endpoint_follows_a_live_tcp_run(tmp_path: Path) -> None:
    run = psyche.create_run(
        "dash-unit", config={"min_clients": 2, "total_steps": 4}, state_dir=tmp_path
    )
    dash = DashboardServer(run, ClientEvents()).start("127.0.0.1:0")
    try:
        assert dash.url == f"http://127.0.0.1:{dash.port}/"
        page = httpx.get(dash.url, timeout=10)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert httpx.get(dash.url + "nope", timeout=10).status_code == 404
        doc = httpx.get(dash.url + "api/run", timeout=10).json()
        assert doc["status"]["run"] == "dash-unit" and doc["backend"] == "tcp"
        assert doc["status"]["phase"] == "WaitingForMembers" and doc["clients"] == []
        assert doc["connected"] and doc["timeline"][0]["phase"] == "WaitingForMembers"

        async def join_one() -> None:
            member = TcpBackend(run.address, NodeKey.generate())
            await member.start()
            await member.join()
            await member.stop()

        asyncio.run(join_one())
        run.wait(lambda s: sum(s.clients.values()) == 1, timeout_s=30)
        doc = httpx.get(dash.url + "api/run", timeout=10).json()
        (client,) = doc["clients"]
        assert client["slot"] == 0 and client["state"] in ("Pending", "Healthy")
        assert len(client["wallet"]) == 64
    finally:
        dash.stop()
        run.stop()
    with pytest.raises(httpx.HTTPError):
        httpx.get(dash.url + "api/run", timeout=2)


def test_a_lost_run_stays_shown_marked_disconnected(tmp_path: Path) -> None:
    run = psyche.create_run("dash-lost", config={"min_clients": 2}, state_dir=tmp_path)
    viewer = psyche.connect(run.address)
    dash = DashboardServer(viewer, owns_handle=True).start("127.0.0.1:0")
    try:
        run.stop()
        deadline = time.monotonic() + 30
        while (doc := httpx.get(dash.url + "api/run", timeout=10).json())["connected"]:
            assert time.monotonic() < deadline, "the dashboard never noticed the run was lost"
            time.sleep(0.2)
        assert "reconnecting" in doc["error"] and doc["status"]["run"] == "dash-lost"
    finally:
        dash.stop()
    assert viewer.closed


def test_the_demo_serves_its_runs_dashboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from psyche_client.cli.demo import _start_dashboard

    run = psyche.create_run("dash-demo", state_dir=tmp_path)
    dash = _start_dashboard(run.address, tmp_path)
    try:
        assert capsys.readouterr().out == f"dashboard: {dash.url}\n"
        assert httpx.get(dash.url + "api/run", timeout=10).json()["status"]["run"] == "dash-demo"
    finally:
        dash.stop()
        run.stop()
