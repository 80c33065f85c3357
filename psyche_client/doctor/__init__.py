"""`psyche-client doctor`: before joining, check what joining needs, one line per check.

Order matters: the coordinator is asked first, because the run's state names the model, and
the model's config sizes the memory, disk and vocabulary checks. Each check is independent
past that point, so one failure does not hide the others.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from psyche_client.doctor.report import Check, fail

__all__ = ["Check", "DoctorOptions", "run_doctor"]


@dataclass
class DoctorOptions:
    """The `join` flags that doctor checks (same names, same meaning)."""

    run: str
    data: list[str] = field(default_factory=list)
    rpc: str = "http://127.0.0.1:8899"
    listen: str | None = None
    public_addr: str | None = None
    key: Path | None = None
    join_token: str | None = None
    coordinator_key: str | None = None
    checkpoint_dir: Path = Path("checkpoints")
    timeout_s: float = 10.0


def _looks_like_tcp(run: str) -> bool:
    host, sep, port = run.removeprefix("tcp://").rpartition(":")
    return bool(sep and host and port.isdigit()) or run.startswith("tcp://") or ":" in run


def _node_key(path: Path | None) -> object:
    """The node key `join` would use, else a throwaway one (doctor creates no files)."""
    from psyche_client.identity import NodeKey, load_keypair

    if path is not None and path.expanduser().exists():
        return load_keypair(path.expanduser())
    return NodeKey.generate()


def run_doctor(opts: DoctorOptions) -> list[Check]:
    """Every check, in order (see the module docstring)."""
    from psyche_client.doctor.coordinator import clock_check, probe_solana, probe_tcp
    from psyche_client.doctor.data import data_checks
    from psyche_client.doctor.gpu import gpu_check, list_gpus
    from psyche_client.doctor.model import ModelFacts, model_facts, training_bytes
    from psyche_client.doctor.network import p2p_checks
    from psyche_client.doctor.system import device_check, disk_check
    from psyche_client.identity import NodeKey

    key = _node_key(opts.key)
    assert isinstance(key, NodeKey)
    if _looks_like_tcp(opts.run):
        from psyche_client.backend.pinning import KeyPolicy, parse_coordinator_key

        if opts.coordinator_key is not None:
            policy = KeyPolicy(pinned=parse_coordinator_key(opts.coordinator_key))
        else:  # what `join` remembered for the run, checked but not recorded
            where = (opts.key or Path("~/.config/psyche/node.json")).expanduser().parent
            policy = KeyPolicy(known_path=where / "known_coordinators.json", record=False)
        facts, checks = asyncio.run(
            probe_tcp(opts.run, key, opts.join_token, opts.timeout_s, policy)
        )
    else:
        facts, checks = asyncio.run(probe_solana(opts.run, opts.rpc, opts.timeout_s))
    model: ModelFacts | None = None
    batch = 1
    if facts is not None:
        model, model_check = model_facts(facts.state.model, opts.timeout_s)
        checks.append(model_check)
        # One forward/backward holds this client's share of the batch (or its micro-batch).
        cfg = facts.state.config
        share = -(-cfg.batch_size_start // max(1, cfg.min_clients))
        batch = model.micro_batch or share
    else:
        checks.append(fail("model", "not checked: no run state", "fix the coordinator first"))
    checks.append(device_check(model, batch))
    gpus = list_gpus()
    if gpus is not None:
        checks.append(
            gpu_check(gpus, training_bytes(model, batch) if model and model.config else None)
        )
    data_dirs = [Path(s) for s in opts.data if not s.startswith(("tcp://", "http"))]
    checks.append(disk_check(opts.checkpoint_dir, [d for d in data_dirs if d.is_dir()], model))
    host = facts.host if facts is not None else _coordinator_host(opts)
    observed = facts.observed_host if facts is not None else ""
    checks.extend(p2p_checks(opts.listen, opts.public_addr, host, observed))
    checks.extend(data_checks(opts.data, model, key, opts.timeout_s))
    checks.append(clock_check(facts))
    return checks


def _coordinator_host(opts: DoctorOptions) -> str:
    """The host the coordinator is at, from the flags alone (when it did not answer)."""
    from urllib.parse import urlparse

    if _looks_like_tcp(opts.run):
        host = opts.run.removeprefix("tcp://").rpartition(":")[0].strip("[]")
    else:
        try:
            host = urlparse(opts.rpc).hostname or ""
        except ValueError:
            host = ""
    return "127.0.0.1" if host == "localhost" else host
