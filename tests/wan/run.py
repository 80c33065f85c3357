"""A run across the simulated WAN: `psyche-client serve` and `join`, each in its own namespace.

The processes are started exactly as a user starts them (the `psyche-client` entry point with
its flags), only prefixed by `ip netns exec`. Everything that reads a run's files (events, logs,
the persisted state, waiting with early failure) is the loopback e2e harness's (`LocalRun`); only
how processes start differs. Used by `tests/wan/test_wan_run.py` and `bench/wan.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.harness import LocalRun
from tests.wan.netns import Wan

COORDINATOR = "coord"
"""Host name of the coordinator's namespace."""


def cli() -> list[str]:
    """The `psyche-client` command of this environment (the entry point users run)."""
    script = Path(sys.executable).with_name("psyche-client")
    return [str(script)] if script.exists() else [sys.executable, "-m", "psyche_client.cli"]


@dataclass(kw_only=True)
class WanRun(LocalRun):
    """A run whose coordinator is host `COORDINATOR` of `wan` and whose clients are its hosts."""

    wan: Wan
    client_flags: dict[str, list[str]] = field(default_factory=dict)
    """Extra `join` flags per client (e.g. --listen/--public-addr)."""

    def start_server(self) -> None:
        host = self.wan.hosts[COORDINATOR]
        port_file = self.work / "server.port"
        port_file.unlink(missing_ok=True)
        cmd = [
            *cli(),
            "serve",
            f"--run={self.run}",
            f"--state-dir={self.work / 'server'}",
            f"--model={self.model}",
            "--listen=0.0.0.0:0",
            f"--port-file={port_file}",
            *(f"--set={k}={v}" for k, v in self.config.items()),
        ]
        log = (self.work / "server.log").open("ab")
        self.server = self.wan.popen(COORDINATOR, cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if self.server.poll() is not None:
                raise AssertionError(f"coordinator exited early:\n{self.log_tail('server')}")
            if time.time() > deadline:
                raise AssertionError(
                    f"coordinator did not bind in 60 s:\n{self.log_tail('server')}"
                )
            time.sleep(0.1)
        port = port_file.read_text().strip().rsplit(":", 1)[1]
        self.address = f"{host.addr}:{port}"

    def restart_server(self) -> None:
        raise NotImplementedError("the WAN run freezes its coordinator (freeze_server) instead")

    def start_client(self, name: str, extra: list[str] | None = None) -> None:
        work = self.work
        cmd = [
            *cli(),
            "join",
            self.address,
            f"--data={self.data}",
            f"--key={work / (name + '.key.json')}",
            f"--checkpoint-dir={work / name}",
            f"--events={work / (name + '.events.jsonl')}",
            "--quiet",
            *self.client_flags.get(name, []),
            *(extra or []),
        ]
        log = (work / f"{name}.log").open("ab")
        self.clients[name] = self.wan.popen(name, cmd, stdout=log, stderr=subprocess.STDOUT)

    def freeze_server(self, seconds: float) -> None:
        """SIGSTOP the coordinator for `seconds`, then SIGCONT (a stalled host, not a crash)."""
        assert self.server is not None
        os.kill(self.server.pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(self.server.pid, signal.SIGCONT)
