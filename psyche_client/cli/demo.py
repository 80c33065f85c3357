"""`psyche-client demo`: a whole run on this machine, as real processes on loopback.

It writes a small corpus and a tiny model, starts a TCP coordinator and three clients (each its
own process, talking libp2p to the others), waits for the run to finish, and prints the loss
curve and whether every client ended with the same parameters.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from psyche_client.errors import UserError

DEMO_CONFIG = {
    "total_steps": 24,
    "rounds_per_epoch": 12,
    "batch_size_start": 12,
    "batch_size_end": 12,
    "batch_ramp_steps": 0,
    "min_clients": 3,
    "max_clients": 16,
    "waiting_extra_secs": 1,
    "warmup_secs": 60,
    "max_round_train_secs": 30,
    "round_witness_secs": 5,
    "witness_grace_secs": 1,
    "cooldown_secs": 2,
    "witnesses_per_round": 3,
    "witness_quorum_pct": 66,
    "verification_pct": 0,
}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "psyche_client.cli", *args]


def start_server(
    work: Path,
    run: str,
    model: Path,
    config: dict[str, int],
    log_path: Path,
    extra: list[str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `psyche-client serve` and wait until it has bound its port."""
    port_file = work / "server.port"
    port_file.unlink(missing_ok=True)
    sets = [f"--set={k}={v}" for k, v in config.items()]
    cmd = _cli(
        "serve",
        f"--run={run}",
        f"--state-dir={work / 'server'}",
        f"--model={model}",
        f"--port-file={port_file}",
        *sets,
        *(extra or []),
    )
    proc = subprocess.Popen(cmd, stdout=log_path.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while not port_file.exists() or not port_file.read_text():
        if proc.poll() is not None:
            raise UserError(f"coordinator exited early; see {log_path}")
        if time.time() > deadline:
            proc.kill()
            raise UserError(f"coordinator did not start within 60 s; see {log_path}")
        time.sleep(0.1)
    return proc, port_file.read_text().strip()


def start_client(
    work: Path, name: str, address: str, data: Path, extra: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `psyche-client join` for one client, logging to `<name>.log`."""
    cmd = _cli(
        "join",
        address,
        f"--data={data}",
        f"--key={work / (name + '.key.json')}",
        f"--checkpoint-dir={work / name}",
        f"--events={work / (name + '.events.jsonl')}",
        "--quiet",
        *(extra or []),
    )
    log = (work / f"{name}.log").open("ab")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def read_events(path: Path) -> list[dict[str, object]]:
    """The JSON-line events a client wrote (empty if none yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def prepare(work: Path) -> tuple[Path, Path]:
    """Corpus and initial model for the demo; returns (data file, model dir)."""
    subprocess.run(
        _cli("data", "make-corpus", str(work / "corpus")), check=True, capture_output=True
    )
    subprocess.run(_cli("model", "init", str(work / "model")), check=True, capture_output=True)
    return work / "corpus" / "tokens_000.u16.bin", work / "model"


def demo(
    clients: Annotated[int, typer.Option(help="Number of client processes.")] = 3,
    workdir: Annotated[Path | None, typer.Option(help="Keep files here (default: temp).")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600,
    dashboard: Annotated[
        bool, typer.Option(help="Serve the run's live dashboard while the demo runs.")
    ] = True,
    keep_dashboard: Annotated[
        bool, typer.Option(help="Keep serving the dashboard after the run, until Ctrl-C.")
    ] = False,
) -> None:
    """Run a coordinator and several clients on loopback; print the loss curve."""
    work = workdir or Path(tempfile.mkdtemp(prefix="psyche-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"demo files in {work}")
    data, model = prepare(work)
    config = {**DEMO_CONFIG, "min_clients": clients}
    server, address = start_server(work, "demo", model, config, work / "server.log")
    print(f"coordinator on {address}; starting {clients} clients")
    dash = _start_dashboard(address, work) if dashboard else None
    procs = {f"client{i}": start_client(work, f"client{i}", address, data) for i in range(clients)}
    shown: set[int] = set()
    deadline = time.time() + timeout
    try:
        while any(p.poll() is None for p in procs.values()):
            if time.time() > deadline:
                raise UserError(f"demo did not finish within {timeout:.0f} s; logs in {work}")
            for ev in read_events(work / "client0.events.jsonl"):
                step = ev.get("step")
                if ev["event"] == "trained" and isinstance(step, int) and step not in shown:
                    shown.add(step)
                    print(f"step {step:3d}  loss {ev['loss']:.4f}", flush=True)
            time.sleep(0.5)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        server.terminate()
        server.wait(10)
        if dash is not None and not keep_dashboard:
            dash.stop()
    failed = [n for n, p in procs.items() if p.returncode != 0]
    if failed:
        raise UserError(f"client(s) {', '.join(failed)} failed; logs in {work}")
    finals = {n: read_events(work / f"{n}.events.jsonl")[-1].get("hash") for n in procs}
    losses = [
        float(ev["loss"])  # type: ignore[arg-type]
        for ev in read_events(work / "client0.events.jsonl")
        if ev["event"] == "trained"
    ]
    print(_curve(losses))
    same = len(set(finals.values())) == 1
    print(f"final parameter hash identical on all {len(finals)} clients: {same}")
    if dash is not None and keep_dashboard:
        print(f"dashboard: {dash.url} (still serving the finished run; Ctrl-C stops)", flush=True)
        dash.serve_until_interrupted()
        dash.stop()
    elif dash is not None:
        print(f"dashboard (served while the demo ran): {dash.url}")
    if not same:
        raise UserError(f"clients diverged: {finals}")


def _start_dashboard(address: str, work: Path) -> Any:
    """The run's dashboard on a free local port (None, with a warning, if it cannot start)."""
    from psyche_client.dashboard import start_dashboard

    try:
        dash = start_dashboard(address, listen="127.0.0.1:0", events_dirs=[work])
    except UserError as e:
        print(f"(no dashboard: {e})")
        return None
    print(f"dashboard: {dash.url}", flush=True)
    return dash


def _curve(losses: list[float], width: int = 40) -> str:
    if not losses:
        return "(no steps trained)"
    lo, hi = min(losses), max(losses)
    rows = []
    for i, loss in enumerate(losses):
        bar = int((loss - lo) / (hi - lo or 1) * width)
        rows.append(f"{i:3d} {loss:7.4f} {'#' * (bar + 1)}")
    return "loss curve (client0):\n" + "\n".join(rows)
