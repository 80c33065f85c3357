"""`psyche-client serve`: host a run's coordinator over TCP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from psyche_client.cli.common import setup_logging
from psyche_client.errors import UserError

if TYPE_CHECKING:
    from psyche_client.p2p.addr import HostPort


def serve(
    run: Annotated[str, typer.Option(help="Run name (1-32 letters, digits, '.', '-', '_').")],
    state_dir: Annotated[Path, typer.Option(help="Where the run's state is persisted.")],
    model: Annotated[
        str | None,
        typer.Option(help="Initial model: a directory, http(s) URL, or 'peers' (the default)."),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT to listen on ([::]:4000 for IPv6; port 0 picks a free one). "
            "Default: all interfaces, any port."
        ),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Deprecated alias: the HOST of --listen.", hidden=True)
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Deprecated alias: the PORT of --listen.", hidden=True)
    ] = None,
    authority: Annotated[
        Path | None, typer.Option(help="Keypair file of the operator (may pause/resume/update).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Config field, e.g. --set min_clients=3.")
    ] = None,
    paused: Annotated[bool, typer.Option(help="Create the run paused.")] = False,
    max_connections: Annotated[
        int,
        typer.Option(min=1, help="Most client connections at once (also kept under ulimit -n)."),
    ] = 1024,
    reconfigure: Annotated[
        bool,
        typer.Option(help="Apply --set/--model to a saved run (pauses it, then resumes)."),
    ] = False,
    allow: Annotated[
        Path | None,
        typer.Option(
            help="Only node keys listed in this file may join (one base58 or hex key a line; "
            "re-read when it changes)."
        ),
    ] = None,
    join_token: Annotated[
        str | None,
        typer.Option(
            envvar="PSYCHE_JOIN_TOKEN",
            help="Only clients given this token (join --join-token) may join.",
        ),
    ] = None,
    port_file: Annotated[Path | None, typer.Option(help="Write host:port here once bound.")] = None,
    metrics_port: Annotated[
        str | None,
        typer.Option(help="Serve Prometheus metrics on PORT (127.0.0.1) or HOST:PORT."),
    ] = None,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(help="Push the same metrics over OTLP/HTTP to URL (e.g. http://host:4318)."),
    ] = None,
    wandb_project: Annotated[
        str | None,
        typer.Option(help="Log the same metrics to this wandb project (WANDB_* env applies)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Host a run's coordinator over TCP (resumes from --state-dir if a state is there)."""
    setup_logging(verbose)
    bind = _listen_address(listen, host, port)
    from psyche_client import _core
    from psyche_client.identity import load_keypair
    from psyche_client.modelref import parse_model_arg
    from psyche_client.runconfig import config_from_sets
    from psyche_client.runid import run_id_bytes
    from psyche_client.server.app import CoordinatorServer, ServerLimits
    from psyche_client.server.core_host import CoreStateHost
    from psyche_client.server.join_policy import AllowList, JoinPolicy
    from psyche_client.server.persist import load_state
    from psyche_client.server.resume import reconcile

    run_id = run_id_bytes(run)
    policy = JoinPolicy(allow=AllowList(allow) if allow else None, token=join_token or None)
    state_path = state_dir / "state.bin"
    saved = load_state(state_path)
    if saved is not None:
        coordinator = _core.Coordinator.from_bytes(saved)
        if coordinator.run_id != run_id:
            raise UserError(f"{state_path} holds another run; use a different --state-dir")
        asked_model = parse_model_arg(model) if model is not None else None
        done = reconcile(coordinator, set_ or [], asked_model, reconfigure, int(time.time()))
        print(f"resuming run {run} at epoch {coordinator.epoch} step {coordinator.step}")
        for note in done.notes:
            print(note)
        if done.applied:
            print(f"applied {', '.join(done.applied)}")
    else:
        now = int(time.time())
        coordinator = _core.Coordinator(
            run_id, config_from_sets(set_ or []), parse_model_arg(model or "peers"), now
        )
        if not paused:
            coordinator.resume(now)
    key = load_keypair(authority).public if authority else None
    server = CoordinatorServer(
        CoreStateHost(coordinator, key),
        run,
        state_path,
        bind.host,
        bind.port,
        limits=ServerLimits(max_connections=max_connections),
        join_policy=policy,
    )

    async def main() -> None:
        if metrics_port:
            from psyche_client.metrics import serve_server_metrics

            _, bound = serve_server_metrics(metrics_port, server)
            print(f"metrics on port {bound} (/metrics)", flush=True)
        if otlp_endpoint or wandb_project:  # the same collector: the same names (telemetry/)
            from psyche_client.metrics import ServerCollector
            from psyche_client.telemetry import start_sinks

            start_sinks(
                ServerCollector(server),
                otlp_endpoint=otlp_endpoint,
                wandb_project=wandb_project,
                service="psyche-server",
            )
        await server.start()
        print(f"coordinator for run {run} listening on {_join_hint(server)}", flush=True)
        # Clients that pass it (`join --coordinator-key`) accept no other server for the run.
        print(f"coordinator key {server.server_key.public.hex()}", flush=True)
        if port_file:
            # An address that works from this machine (scripts, `make demo`).
            port_file.write_text(_local_address(server.host, server.port))
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    asyncio.run(main())


def _listen_address(listen: str | None, host: str | None, port: int | None) -> HostPort:
    """--listen, or the old --host/--port (kept working; mixing both is an error)."""
    from psyche_client.p2p.addr import (
        AddressError,
        HostPort,
        check_host,
        check_port,
        parse_host_port,
    )

    if listen is not None:
        if host is not None or port is not None:
            raise AddressError("give either --listen HOST:PORT or the old --host/--port, not both")
        return parse_host_port(listen, allow_names=False, empty_host="0.0.0.0", what="--listen")
    return HostPort(
        check_host(host, allow_names=False, what="--host") if host is not None else "0.0.0.0",
        check_port(port, "--port") if port is not None else 0,
    )


def _local_address(host: str, port: int) -> str:
    from psyche_client.p2p.addr import is_wildcard, join_host_port

    if is_wildcard(host):
        host = "::1" if ":" in host else "127.0.0.1"
    return join_host_port(host, port)


def _join_hint(server: object) -> str:
    """`0.0.0.0:4000 (clients join 10.1.2.3:4000)` when bound to all interfaces."""
    from psyche_client.p2p.addr import advertised_host, is_wildcard, join_host_port

    host, port = getattr(server, "host", ""), int(getattr(server, "port", 0))
    bound = join_host_port(host, port)
    if not is_wildcard(host):
        return bound
    return f"{bound} (clients join {join_host_port(advertised_host(host, '', ''), port)})"
