"""`psyche-client dashboard`: serve a live web page on one run (see psyche_client/dashboard)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from psyche_client.cli.common import setup_logging


def dashboard(
    run: Annotated[
        str,
        typer.Argument(
            help="host:port of a TCP run, or a Solana run: its run id or run account pubkey."
        ),
    ],
    rpc: Annotated[str | None, typer.Option(help="Solana RPC URL (Solana runs).")] = None,
    listen: Annotated[
        str,
        typer.Option(help="Serve the page on PORT (127.0.0.1) or HOST:PORT (0 = any port)."),
    ] = "127.0.0.1:8765",
    events: Annotated[
        list[Path] | None,
        typer.Option(help="A client's `join --events` file (repeat for several clients)."),
    ] = None,
    events_dir: Annotated[
        list[Path] | None,
        typer.Option(help="A directory whose *.events.jsonl files are clients' event files."),
    ] = None,
    port_file: Annotated[
        Path | None, typer.Option(help="Write the bound port here once serving.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the run.", min=0.1)] = 15,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve a live page on a run: phases, clients, loss, tokens/s, bytes, witnesses, reports."""
    setup_logging(verbose)
    from psyche_client.dashboard import start_dashboard

    dash = start_dashboard(
        run, rpc=rpc, listen=listen, events=events, events_dirs=events_dir, timeout_s=timeout
    )
    try:
        status = dash.handle.status()
        print(f"dashboard for run {status.run} ({dash.handle.address}): {dash.url}", flush=True)
        if port_file is not None:
            port_file.write_text(f"{dash.port}\n")
        print("Ctrl-C stops", flush=True)
        dash.serve_until_interrupted()
    finally:
        dash.stop()
