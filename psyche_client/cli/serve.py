"""`psyche-client serve`: host a run's coordinator over TCP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer

from psyche_client.cli.common import setup_logging
from psyche_client.errors import UserError


def serve(
    run: Annotated[str, typer.Option(help="Run name (1-32 letters, digits, '.', '-', '_').")],
    state_dir: Annotated[Path, typer.Option(help="Where the run's state is persisted.")],
    model: Annotated[
        str, typer.Option(help="Initial model: a directory, http(s) URL, or 'peers'.")
    ] = "peers",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 0,
    authority: Annotated[
        Path | None, typer.Option(help="Keypair file of the operator (may pause/resume/update).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Config field, e.g. --set min_clients=3.")
    ] = None,
    paused: Annotated[bool, typer.Option(help="Create the run paused.")] = False,
    port_file: Annotated[Path | None, typer.Option(help="Write host:port here once bound.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Host a run's coordinator over TCP (resumes from --state-dir if a state is there)."""
    setup_logging(verbose)
    from psyche_client import _core
    from psyche_client.identity import load_keypair
    from psyche_client.modelref import parse_model_arg
    from psyche_client.runconfig import config_from_sets
    from psyche_client.runid import run_id_bytes
    from psyche_client.server.app import CoordinatorServer
    from psyche_client.server.core_host import CoreStateHost
    from psyche_client.server.persist import load_state

    run_id = run_id_bytes(run)
    state_path = state_dir / "state.bin"
    saved = load_state(state_path)
    if saved is not None:
        coordinator = _core.Coordinator.from_bytes(saved)
        if coordinator.run_id != run_id:
            raise UserError(f"{state_path} holds another run; use a different --state-dir")
        print(f"resuming run {run} at epoch {coordinator.epoch} step {coordinator.step}")
    else:
        now = int(time.time())
        coordinator = _core.Coordinator(
            run_id, config_from_sets(set_ or []), parse_model_arg(model), now
        )
        if not paused:
            coordinator.resume(now)
    key = load_keypair(authority).public if authority else None
    server = CoordinatorServer(CoreStateHost(coordinator, key), run, state_path, host, port)

    async def main() -> None:
        await server.start()
        print(f"coordinator for run {run} listening on {server.address}", flush=True)
        if port_file:
            port_file.write_text(server.address)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    asyncio.run(main())
