"""The dashboard in headless Chromium, following a real run from start to end.

One short real run on loopback, in this process to spare two interpreter and torch start-ups:
the SDK's TCP coordinator and two SDK clients (the real client: libp2p between them, torch
training the demo's tiny model for one 6-step epoch, verification on). The dashboard connects
before anyone joins; Chromium loads the page then (phase WaitingForMembers, no clients), again
once the run has finished (phase Finished, both clients with their bytes, a loss curve with a
point per step), and takes a screenshot. The `dashboard` command itself is run against the
same coordinator, and its one-line errors for a port in use, a bad address and an unreachable
RPC are checked.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import psyche_client as psyche
from psyche_client.cli.app import main as cli_main
from psyche_client.cli.demo import DEMO_CONFIG, read_events
from psyche_client.cli.model import model_init
from psyche_client.dashboard import DashboardServer, start_dashboard
from psyche_client.data.corpus import make_corpus

pytestmark = pytest.mark.timeout(240)

CONFIG = {
    "total_steps": 6,
    "rounds_per_epoch": 6,
    "min_clients": 2,
    "witnesses_per_round": 2,
    "verification_pct": 50,
}
CLIENTS = ["client0", "client1"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium is needed: apt-get install chromium (make system-deps)"
    return found


def browse(url: str, profile: Path, *args: str) -> str:
    """Load `url` in headless Chromium, let its scripts run, return stdout."""
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",  # tests run as root in CI containers
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",  # poll /api/run a few times before the dump
        *args,
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def element(dom: str, id_: str) -> str:
    m = re.search(rf'<[a-z]+ id="{id_}"[^>]*>(.*?)</', dom, re.S)
    assert m, f"no #{id_} in the page"
    return m.group(1)


@dataclass
class Finished:
    """The run, its dashboard, and the page's DOM from before anyone joined."""

    work: Path
    run: psyche.RunHandle
    dash: DashboardServer
    before: str

    def events(self, name: str) -> list[dict[str, object]]:
        return read_events(self.work / f"{name}.events.jsonl")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    work = tmp_path_factory.mktemp("dash")
    (data,) = make_corpus(work / "corpus", n_tokens=100_000)
    model_init(work / "model")
    run = psyche.create_run(
        "dash",
        config={**DEMO_CONFIG, **CONFIG},
        model=str(work / "model"),
        state_dir=work / "server",
    )
    dash = start_dashboard(run.address, listen="127.0.0.1:0", events_dirs=[work])
    clients = []
    try:
        before = browse(dash.url, work / "profile", "--dump-dom")
        for name in CLIENTS:
            clients.append(
                psyche.join(
                    run.address,
                    data=data,
                    events=work / f"{name}.events.jsonl",
                    checkpoint_dir=work / name,
                )
            )
        run.wait(timeout_s=180)
        deadline = time.monotonic() + 30
        while httpx.get(dash.url + "api/run", timeout=10).json()["status"]["phase"] != "Finished":
            assert time.monotonic() < deadline, "the dashboard never saw the run finish"
            time.sleep(0.2)
        yield Finished(work, run, dash, before)
    finally:
        for c in clients:
            c.stop()
        dash.stop()
        run.stop()


def test_the_page_follows_the_run(finished: Finished, tmp_path: Path) -> None:
    dash, before = finished.dash, finished.before
    assert 'data-loaded="1"' in before, "the page rendered the first /api/run"
    assert element(before, "phase") == "WaitingForMembers"
    assert 'class="client"' not in before and "no clients yet" in before
    assert 'data-points="0"' in before

    dom = browse(dash.url, tmp_path / "profile", "--dump-dom")
    doc = httpx.get(dash.url + "api/run", timeout=10).json()
    assert element(dom, "phase") == "Finished"
    assert element(dom, "steps") == "6/6"
    slots = re.findall(r'<tr class="client" data-slot="(\d+)" data-state="Healthy"', dom)
    assert sorted(slots) == ["0", "1"], "both clients listed, Healthy"
    loss_chart = dom[dom.index('id="loss-chart"') : dom.index('id="tps-chart"')]
    assert 'data-points="6"' in loss_chart, "a loss point per step"
    assert len(re.findall(r'<circle class="pt"', loss_chart)) == 6
    points = re.search(r'<polyline class="series"[^>]* points="([^"]+)"', loss_chart)
    assert points and len(points.group(1).split()) == 6
    phases = set(re.findall(r'<rect class="seg" data-phase="(\w+)"', dom))
    assert {"WaitingForMembers", "Warmup", "RoundTrain", "Cooldown", "Finished"} <= phases
    assert len(re.findall(r'class="bar-(in|out)"', dom)) == 4, "bytes in and out per client"
    assert len(re.findall(r'<rect class="qbar"', dom)) == 6, "a quorum bar per data round"
    assert len(re.findall(r'<tr class="round"', dom)) == min(30, len(doc["rounds"]))
    assert len(re.findall(r'<tr class="report"', dom)) == min(30, len(doc["reports"]))

    shot = tmp_path / "dashboard.png"
    browse(dash.url, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,900")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, "a rendered screenshot"
    print(f"screenshot: {shot}")


def test_the_document_of_the_finished_run(
    finished: Finished,
) -> None:
    run, dash = finished, finished.dash
    doc = httpx.get(dash.url + "api/run", timeout=10).json()
    assert doc["status"]["steps_done"] == 6 and doc["connected"]
    losses = [h["loss"] for h in doc["history"] if not h["requeued"]]
    assert len(losses) == 6 and all(x is not None for x in losses)
    assert losses[-1] < losses[0], "the tiny model learns"
    order = [s["phase"] for s in doc["timeline"]]
    seq = ["WaitingForMembers", "Warmup", "RoundTrain", "RoundWitness", "Cooldown", "Finished"]
    positions = [order.index(p) for p in seq]
    assert positions == sorted(positions), order
    data_rounds = [r for r in doc["rounds"] if r["kind"] == "Data"]
    assert len(data_rounds) == 6 and all(r["quorum_reached"] for r in data_rounds)
    for c in doc["clients"]:
        ev = c["events"]
        assert ev is not None, "each client's events file is joined to its slot"
        assert ev["bytes_in"] > 0 and ev["bytes_out"] > 0 and ev["tokens_per_s"] > 0, ev
        assert ev["applied_steps"] == 6 and c["health"] == "ok"
    assert sum(c["events"]["trained_steps"] for c in doc["clients"]) >= 6
    verified = [e for n in CLIENTS for e in run.events(n) if e["event"] == "verified"]
    assert len([r for r in doc["reports"] if r["event"] == "verified"]) == len(verified)


def test_the_command_serves_the_same_run(finished: Finished, tmp_path: Path) -> None:
    run = finished.run
    port_file = tmp_path / "port"
    cmd = [sys.executable, "-m", "psyche_client.cli", "dashboard", run.address]
    cmd += ["--listen=127.0.0.1:0", f"--port-file={port_file}", f"--events-dir={finished.work}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port_file.read_text().strip()}/"
        doc = httpx.get(url + "api/run", timeout=10).json()
        assert doc["status"]["phase"] == "Finished" and len(doc["clients"]) == 2
        assert all(c["events"] for c in doc["clients"])
    finally:
        proc.send_signal(2)  # Ctrl-C: a clean stop
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"dashboard for run dash ({run.address}): {url}" in out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen=127.0.0.1:{busy}"], "cannot serve the dashboard on 127.0.0.1:{busy}: "),
        (["--listen=nowhere:x"], "--listen 'nowhere:x': port 'x' is not a number"),
        (["--run=127.0.0.1:{free}"], "cannot reach coordinator 127.0.0.1:{free}"),
        (["--run=host:notaport"], "not a coordinator address"),
        (["--run=somerun", "--rpc=http://127.0.0.1:{free}"], "cannot reach Solana RPC"),
    ],
)
def test_one_line_errors(
    finished: Finished,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    run, dash = finished.run, finished.dash
    fill = {"busy": dash.port, "free": free_port()}
    target = run.address
    rest = []
    for a in args:
        a = a.format(**fill)
        if a.startswith("--run="):
            target = a.removeprefix("--run=")
        else:
            rest.append(a)
    assert cli_main(["dashboard", target, "--timeout=5", *rest]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(**fill) in err, err
