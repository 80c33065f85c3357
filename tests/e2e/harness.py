"""A run on loopback made of real processes: one `psyche-client serve`, N `psyche-client join`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from psyche_client import _core
from psyche_client.cli.demo import DEMO_CONFIG, prepare, read_events, start_client, start_server
from psyche_client.server.persist import load_state

LIAR = Path(__file__).with_name("liar_client.py")
"""The real CLI with a trainer that sends garbage (the fault stays out of the package)."""


@dataclass
class LocalRun:
    """Processes and files of one run under `work`."""

    work: Path
    config: dict[str, int] = field(default_factory=lambda: dict(DEMO_CONFIG))
    run: str = "e2e"
    server: subprocess.Popen[bytes] | None = None
    address: str = ""
    clients: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    make_inputs: Callable[[Path], tuple[Path, Path]] = prepare
    """(data, model directory) for the run, made under `work` (default: the demo's)."""

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.data, self.model = self.make_inputs(self.work)

    def start_server(self) -> None:
        config = dict(self.config)
        self.server, self.address = start_server(
            self.work, self.run, self.model, config, self.work / "server.log"
        )

    def restart_server(self) -> None:
        """SIGKILL the coordinator and start it again on the same port from its saved state."""
        assert self.server is not None
        self.server.kill()
        self.server.wait(10)
        port = self.address.rsplit(":", 1)[1]
        self.server, self.address = start_server(
            self.work, self.run, self.model, {}, self.work / "server.log", extra=[f"--port={port}"]
        )

    def start_client(self, name: str, extra: list[str] | None = None) -> None:
        self.clients[name] = start_client(self.work, name, self.address, self.data, extra)

    def start_torchrun_client(self, name: str, ranks: int, extra: list[str] | None = None) -> None:
        """Start one client as `ranks` processes under torchrun (in its own process group, so
        `kill_group` ends the ranks too, not only the launcher)."""
        work = self.work
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={ranks}",
            "-m",
            "psyche_client",
            "join",
            self.address,
            f"--data={self.data}",
            f"--key={work / (name + '.key.json')}",
            f"--checkpoint-dir={work / name}",
            f"--events={work / (name + '.events.jsonl')}",
            "--quiet",
            *(extra or []),
        ]
        log = (work / f"{name}.log").open("ab")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.clients[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def kill_group(self, name: str) -> None:
        """SIGKILL a `start_torchrun_client` client's launcher and ranks."""
        proc = self.clients[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def start_liar(self, name: str, craft: bool = False) -> None:
        """Start a client that joins like `start_client` but sends garbage results (`craft`:
        results that follow from a crafted momentum it discloses, liar_client.py)."""
        work = self.work
        cmd = [
            sys.executable,
            str(LIAR),
            *(["--craft"] if craft else []),
            "join",
            self.address,
            f"--data={self.data}",
            f"--key={work / (name + '.key.json')}",
            f"--checkpoint-dir={work / name}",
            f"--events={work / (name + '.events.jsonl')}",
            "--quiet",
        ]
        log = (work / f"{name}.log").open("ab")
        self.clients[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def kill_client(self, name: str, sig: int = signal.SIGKILL) -> None:
        os.kill(self.clients[name].pid, sig)
        self.clients[name].wait(10)

    def events(self, name: str) -> list[dict[str, object]]:
        return read_events(self.work / f"{name}.events.jsonl")

    def state(self) -> _core.Coordinator:
        raw = load_state(self.work / "server" / "state.bin")
        assert raw is not None
        return _core.Coordinator.from_bytes(raw)

    def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float,
        what: str,
        watch: list[str] | None = None,
    ) -> None:
        """Poll `predicate`; fail early if a watched client (default: all) exits abnormally."""
        deadline = time.time() + timeout
        while not predicate():
            for name in watch if watch is not None else list(self.clients):
                code = self.clients[name].poll()
                if code not in (None, 0, -signal.SIGKILL):
                    raise AssertionError(f"{name} exited with {code}:\n{self.log_tail(name)}")
            if time.time() > deadline:
                clients = "\n".join(f"--- {n}\n{self.log_tail(n, 15)}" for n in self.clients)
                raise AssertionError(
                    f"timed out waiting for {what}\n{self.log_tail('server')}\n{clients}"
                )
            time.sleep(0.25)

    def wait_clients(self, names: list[str], timeout: float) -> None:
        self.wait_until(
            lambda: all(self.clients[n].poll() is not None for n in names),
            timeout,
            "clients",
            watch=names,
        )
        for n in names:
            assert self.clients[n].returncode == 0, f"{n} failed:\n{self.log_tail(n)}"

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.work / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        for proc in [*self.clients.values(), self.server]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def applied_hashes(self, name: str) -> dict[int, str]:
        """step → parameter hash after that step's results were applied."""
        return {
            int(e["step"]): str(e["hash"])  # type: ignore[arg-type]
            for e in self.events(name)
            if e["event"] == "applied"
        }

    def losses(self, name: str) -> dict[int, float]:
        out: dict[int, float] = {}
        for e in self.events(name):
            if e["event"] == "trained":
                out[int(e["step"])] = float(e["loss"])  # type: ignore[arg-type]
        return out


def by_step(runs: dict[str, dict[int, str]]) -> dict[int, set[str]]:
    """step → the set of hashes the clients reported for it."""
    out: dict[int, set[str]] = defaultdict(set)
    for hashes in runs.values():
        for step, h in hashes.items():
            out[step].add(h)
    return out
