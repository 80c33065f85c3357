"""`psyche-client doctor`: check, before joining, what joining needs (see psyche_client.doctor).

Takes `join`'s flags, so the command a user is about to run can be checked by swapping the
verb. Any failed check ends in the usual one-line error and exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from psyche_client.errors import UserError


def doctor(
    run: Annotated[
        str, typer.Argument(help="host:port of a TCP run, or a Solana run id / run account.")
    ],
    data: Annotated[
        list[str] | None, typer.Option(help="The --data sources you will join with.")
    ] = None,
    rpc: Annotated[str, typer.Option(help="Solana RPC URL (Solana runs).")] = (
        "http://127.0.0.1:8899"
    ),
    listen: Annotated[str | None, typer.Option(help="The p2p --listen HOST:PORT.")] = None,
    public_addr: Annotated[str | None, typer.Option(help="The --public-addr HOST[:PORT].")] = None,
    key: Annotated[
        Path, typer.Option(help="Node keypair file (a throwaway key if it does not exist).")
    ] = Path("~/.config/psyche/node.json"),
    join_token: Annotated[
        str | None, typer.Option(envvar="PSYCHE_JOIN_TOKEN", help="The run's join token.")
    ] = None,
    coordinator_key: Annotated[
        str | None, typer.Option(help="The TCP coordinator's key, as for join.")
    ] = None,
    checkpoint_dir: Annotated[Path, typer.Option(help="Where checkpoints will go.")] = Path(
        "checkpoints"
    ),
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each answer.", min=0.1)
    ] = 10.0,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per check.")] = False,
) -> None:
    """Check device, memory, disk, coordinator, p2p reachability, data and clock, then exit
    non-zero if anything would stop `join`."""
    from psyche_client.doctor import DoctorOptions, run_doctor

    opts = DoctorOptions(
        run=run,
        data=list(data or []),
        rpc=rpc,
        listen=listen,
        public_addr=public_addr,
        key=key,
        join_token=join_token,
        coordinator_key=coordinator_key,
        checkpoint_dir=checkpoint_dir,
        timeout_s=timeout,
    )
    checks = run_doctor(opts)
    for c in checks:
        print(json.dumps(c.as_dict()) if json_output else c.line(), flush=True)
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    summary = f"{failed} failed, {warned} warnings, {len(checks)} checks"
    if failed:  # the one-line error and non-zero exit of every user-facing failure
        raise UserError(f"not ready to join: {summary}")
    if not json_output:
        print(f"ready to join: {summary}")
