"""Prometheus metrics: one naming scheme, and real scrapes of `serve` and `join` processes.

The scrape test starts `psyche-client serve --metrics-port` and one `psyche-client join
--metrics-port` (the run waits for a second client, so no training happens), scrapes both over
HTTP, parses the exposition text with prometheus_client's parser, and checks that the numbers
follow the run: the joined client is counted Healthy on the server, and the client reports
the phase it sees.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import psyche_client as psyche
from psyche_client.cli.app import main as cli_main
from psyche_client.client import ClientStatus
from psyche_client.metrics import (
    ClientCollector,
    ServerCollector,
    check_name,
    serve_client_metrics,
    serve_server_metrics,
)
from tests.telemetry.otlp_receiver import Receiver, otlp_points, receiver

__all__ = ["receiver"]  # the fixture

pytestmark = pytest.mark.timeout(180)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def test_the_naming_scheme() -> None:
    for good in (
        "psyche_server_run_steps",
        "psyche_client_sent_bytes_total",
        "psyche_client_train_throughput_tokens_per_second",
        "psyche_server_phase_info",
    ):
        assert check_name(good) == good
    for bad in (
        "psyche_run_steps",  # no component
        "psyche_server_steps",  # no what
        "psyche_server_run_furlongs",  # not a unit
        "psyche_client_sent_total",  # counter without a unit
        "Psyche_server_run_steps",
    ):
        with pytest.raises(ValueError, match="does not follow"):
            check_name(bad)


def test_every_exported_name_follows_the_scheme(tmp_path: Path) -> None:
    run = psyche.create_run("metrics-names", config={"min_clients": 2}, state_dir=tmp_path)
    try:
        families = [
            *ServerCollector(run.server).collect(),  # type: ignore[attr-defined]
            *ClientCollector(lambda: ClientStatus(loss=2.5, bytes_out=7)).collect(),
        ]
    finally:
        run.stop()
    names = {s.name for f in families for s in f.samples}
    assert len(names) >= 20
    for name in names:
        check_name(name)


def test_in_process_scrape_follows_the_run(tmp_path: Path) -> None:
    run = psyche.create_run("metrics-live", config={"min_clients": 3}, state_dir=tmp_path)
    status = ClientStatus(phase="RoundTrain", epoch=1, step=5, applied_steps=4, bytes_in=99)
    server_http, server_port = serve_server_metrics("0", run.server)  # type: ignore[attr-defined]
    client_http, client_port = serve_client_metrics("127.0.0.1:0", lambda: status)
    try:
        s = scrape(server_port)
        assert value(s, "psyche_server_phase_info", phase="WaitingForMembers") == 1
        assert value(s, "psyche_server_phase_info", phase="RoundTrain") == 0
        assert value(s, "psyche_server_members_clients", state="Healthy") == 0
        assert value(s, "psyche_server_target_steps") == run.status().total_steps
        c = scrape(client_port)
        assert value(c, "psyche_client_phase_info", phase="RoundTrain") == 1
        assert value(c, "psyche_client_applied_steps_total") == 4
        assert value(c, "psyche_client_received_bytes_total") == 99
        status.applied_steps = 5
        assert value(scrape(client_port), "psyche_client_applied_steps_total") == 5
    finally:
        server_http.shutdown()
        client_http.shutdown()
        run.stop()


def test_scrape_serve_and_join_processes(tmp_path: Path, receiver: Receiver) -> None:
    """Also: both processes push the same names over OTLP (`--otlp-endpoint`)."""
    from psyche_client.data.corpus import make_corpus

    data = make_corpus(tmp_path / "corpus", n_tokens=20_000)[0]
    port_file = tmp_path / "server.port"
    server_metrics, client_metrics = free_port(), free_port()
    cli = [sys.executable, "-m", "psyche_client.cli"]
    procs: list[subprocess.Popen[bytes]] = []
    log = (tmp_path / "log.txt").open("wb")
    env = {**os.environ, "OTEL_METRIC_EXPORT_INTERVAL": "300"}  # ms; the SDK's own setting
    try:
        procs.append(
            subprocess.Popen(
                [
                    *cli,
                    "serve",
                    "--run=metrics-cli",
                    f"--state-dir={tmp_path / 'server'}",
                    "--listen=127.0.0.1:0",
                    f"--port-file={port_file}",
                    "--set=min_clients=2",
                    f"--metrics-port={server_metrics}",
                    f"--otlp-endpoint={receiver.url}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        wait_for(lambda: port_file.exists() and bool(port_file.read_text()), "the server")
        procs.append(
            subprocess.Popen(
                [
                    *cli,
                    "join",
                    port_file.read_text().strip(),
                    f"--data={data}",
                    f"--key={tmp_path / 'node.json'}",
                    f"--checkpoint-dir={tmp_path / 'ckpt'}",
                    "--quiet",
                    f"--metrics-port=127.0.0.1:{client_metrics}",
                    f"--otlp-endpoint={receiver.url}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )

        def server_counts_the_client() -> bool:
            s = scrape(server_metrics)
            return value(s, "psyche_server_members_clients", state="Healthy") == 1

        wait_for(server_counts_the_client, "the server to count the joined client", 120)
        s = scrape(server_metrics)
        assert value(s, "psyche_server_open_connections") >= 1
        assert value(s, "psyche_server_phase_info", phase="WaitingForMembers") == 1

        def client_sees_the_run() -> bool:
            try:
                c = scrape(client_metrics)
            except httpx.HTTPError:
                return False
            return value(c, "psyche_client_phase_info", phase="WaitingForMembers") == 1

        wait_for(client_sees_the_run, "the client's metrics", 60)
        for name, _labels in scrape(client_metrics):
            check_name(name)

        def pushed(prefix: str) -> set[str]:
            return {n for n, _ in otlp_points(list(receiver.posts)) if n.startswith(prefix)}

        wait_for(lambda: bool(pushed("psyche_server_") and pushed("psyche_client_")), "OTLP", 60)
        prometheus = {name for name, _labels in scrape(server_metrics)}
        assert pushed("psyche_server_") <= prometheus  # the same names (NaN ones left out)
        assert "psyche_server_members_clients" in pushed("psyche_server_")
        assert "psyche_client_phase_info" in pushed("psyche_client_")
        assert all(p.poll() is None for p in procs), (tmp_path / "log.txt").read_text()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


def test_a_bad_metrics_address_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(
        ["serve", "--run=m", f"--state-dir={tmp_path}", "--metrics-port=not-an-address"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("psyche-client: error:") and "--metrics-port" in err
    assert len(err.splitlines()) == 1
