"""`psyche-client join`: join a TCP or Solana run and train with the others."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from psyche_client.cli.common import setup_logging
from psyche_client.cli.data import check_data_sources, open_data
from psyche_client.errors import UserError

if TYPE_CHECKING:
    from psyche_client.p2p.endpoints import Endpoints


def join(
    run: Annotated[
        str,
        typer.Argument(
            help="host:port of a TCP run, or a Solana run: its run id or run account pubkey."
        ),
    ],
    data: Annotated[
        list[str],
        typer.Option(
            help="Training data: a `data prepare` directory (DIR:WEIGHT repeated, or a "
            "mixture .json, mixes several), token file(s) (flat u16), http(s) URL(s) of such "
            "files, or tcp://host:port of a `psyche-client data serve`."
        ),
    ],
    key: Annotated[Path, typer.Option(help="Node keypair file (created if missing).")] = Path(
        "~/.config/psyche/node.json"
    ),
    checkpoint_dir: Annotated[Path, typer.Option(help="Where checkpoints are written.")] = Path(
        "checkpoints"
    ),
    events: Annotated[Path | None, typer.Option(help="Append JSON-line events here.")] = None,
    max_epochs: Annotated[int | None, typer.Option(help="Leave after this many epochs.")] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads.", min=1)] = 1,
    join_token: Annotated[
        str | None,
        typer.Option(
            envvar="PSYCHE_JOIN_TOKEN",
            help="The run's join token, if its operator set one (or PSYCHE_JOIN_TOKEN).",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No live status line.")] = False,
    rpc: Annotated[str, typer.Option(help="Solana RPC URL (Solana runs).")] = (
        "http://127.0.0.1:8899"
    ),
    wallet: Annotated[
        Path, typer.Option(help="Funded Solana wallet keypair that signs transactions.")
    ] = Path("~/.config/solana/id.json"),
    listen: Annotated[
        str | None,
        typer.Option(
            help="p2p listen address HOST:PORT ([::]:0 for IPv6). Default: all interfaces, "
            "any port. A fixed PORT puts the payload fast path on PORT+1."
        ),
    ] = None,
    public_addr: Annotated[
        str | None,
        typer.Option(
            help="Address peers are told, HOST[:PORT] (e.g. a forwarded port). Default: this "
            "machine's address on the route to the coordinator."
        ),
    ] = None,
    metrics_port: Annotated[
        str | None,
        typer.Option(help="Serve Prometheus metrics on PORT (127.0.0.1) or HOST:PORT."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Join a run and train with the others until it finishes (Ctrl-C leaves cleanly)."""
    setup_logging(verbose)
    endpoints = _endpoints(run, rpc, listen, public_addr)
    from psyche_client.identity import load_or_create_keypair

    # Every check a user can fail runs before torch loads: a mistake is one line, at once.
    node_key = load_or_create_keypair(key)
    check_data_sources(data)
    backend = _backend_for(run, node_key, rpc, wallet, join_token)
    import torch

    from psyche_client.cli.status_line import StatusLine
    from psyche_client.client import ClientOptions, RunClient
    from psyche_client.p2p.config import P2PConfig

    torch.set_num_threads(threads)
    status = StatusLine(enabled=not quiet)
    options = ClientOptions(
        p2p=endpoints.apply(P2PConfig()),
        data=lambda seq_len: open_data(data, seq_len, node_key),
        checkpoint_dir=checkpoint_dir,
        events_path=events,
        max_epochs=max_epochs,
        on_status=status.update,
    )
    client = RunClient(backend, node_key, options)
    if metrics_port:
        from psyche_client.metrics import serve_client_metrics

        serve_client_metrics(metrics_port, lambda: client.status)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, client.stop)
        try:
            await client.run()
        except ConnectionError as e:
            raise UserError(f"cannot reach coordinator {run}: {e}") from None
        except LookupError as e:
            raise UserError(f"run {run}: {e}") from None
        except Exception as e:
            if type(e).__name__ == "SolanaRpcException":
                raise UserError(f"cannot reach Solana RPC {rpc} for run {run}: {e!r}") from None
            raise

    try:
        asyncio.run(main())
    finally:
        status.close()


def _endpoints(run: str, rpc: str, listen: str | None, public_addr: str | None) -> Endpoints:
    """Check --listen/--public-addr (one-line errors, before anything heavy is imported) and
    aim address detection at the coordinator: the TCP server, or the Solana RPC node."""
    from urllib.parse import urlparse

    from psyche_client.p2p.endpoints import endpoints_from_flags

    if _looks_like_tcp(run) or ":" in run:
        host = run.removeprefix("tcp://").rpartition(":")[0].strip("[]")
    else:
        try:
            host = urlparse(rpc).hostname or ""
        except ValueError:
            host = ""
    if host == "localhost":
        host = "127.0.0.1"
    try:
        return endpoints_from_flags(listen, public_addr, host)
    except UserError as e:
        if "coordinator host" not in str(e):
            raise
        # A name we cannot vouch for (the backend reports bad coordinator addresses itself):
        # detect from the default route instead.
        return endpoints_from_flags(listen, public_addr, "")


def _looks_like_tcp(run: str) -> bool:
    host, sep, port = run.removeprefix("tcp://").rpartition(":")
    return bool(sep and host and port.isdigit()) or run.startswith("tcp://")


def _backend_for(
    run: str, node_key: object, rpc: str, wallet: Path, join_token: str | None = None
) -> object:
    """TCP backend for host:port, else the Solana backend for a run id or run account."""
    from psyche_client.backend.tcp import TcpBackend, parse_address
    from psyche_client.identity import NodeKey, load_keypair

    assert isinstance(node_key, NodeKey)
    if _looks_like_tcp(run) or ":" in run:
        parse_address(run)
        from psyche_client.backend.tcp import preflight

        asyncio.run(preflight(run, node_key, join_token))  # reachable, a coordinator, may join
        return TcpBackend(run, node_key, join_token=join_token)
    from solders.keypair import Keypair
    from solders.pubkey import Pubkey

    from psyche_client.backend.solana import SolanaBackend

    if not wallet.expanduser().exists():
        raise UserError(
            f"{run!r} is not host:port, so it names a Solana run, which needs a funded wallet: "
            f"{wallet} does not exist (pass --wallet)"
        )
    payer = Keypair.from_seed(load_keypair(wallet).seed)
    try:
        account = Pubkey.from_string(run) if len(run) > 32 else None
    except ValueError:
        account = None
    from psyche_client.cli.run import preflight_run

    if account is not None:
        backend = SolanaBackend(rpc, payer, node_key, account)
    else:
        from psyche_client.runid import run_id_bytes

        run_id_bytes(run)  # validates the name with a clear error
        backend = SolanaBackend.for_run(rpc, payer, node_key, run)
    preflight_run(rpc, backend.run, run)  # the RPC answers and the run exists
    return backend
