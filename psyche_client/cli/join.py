"""`psyche-client join`: join a TCP or Solana run and train with the others."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from psyche_client.cli.common import setup_logging
from psyche_client.cli.data import check_data_sources, open_data
from psyche_client.errors import UserError


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
            help="Training data: token file(s) (flat u16), http(s) URL(s) of such files, "
            "or tcp://host:port of a `psyche-client data serve`."
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
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    quiet: Annotated[bool, typer.Option(help="No live status line.")] = False,
    rpc: Annotated[str, typer.Option(help="Solana RPC URL (Solana runs).")] = (
        "http://127.0.0.1:8899"
    ),
    wallet: Annotated[
        Path, typer.Option(help="Funded Solana wallet keypair that signs transactions.")
    ] = Path("~/.config/solana/id.json"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Join a run and train with the others until it finishes (Ctrl-C leaves cleanly)."""
    setup_logging(verbose)
    import torch

    from psyche_client.cli.status_line import StatusLine
    from psyche_client.client import ClientOptions, RunClient
    from psyche_client.identity import load_or_create_keypair

    node_key = load_or_create_keypair(key)
    check_data_sources(data)
    torch.set_num_threads(threads)
    backend = _backend_for(run, node_key, rpc, wallet)
    status = StatusLine(enabled=not quiet)
    options = ClientOptions(
        data=lambda seq_len: open_data(data, seq_len, node_key),
        checkpoint_dir=checkpoint_dir,
        events_path=events,
        max_epochs=max_epochs,
        on_status=status.update,
    )
    client = RunClient(backend, node_key, options)

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


def _looks_like_tcp(run: str) -> bool:
    host, sep, port = run.removeprefix("tcp://").rpartition(":")
    return bool(sep and host and port.isdigit()) or run.startswith("tcp://")


def _backend_for(run: str, node_key: object, rpc: str, wallet: Path) -> object:
    """TCP backend for host:port, else the Solana backend for a run id or run account."""
    from psyche_client.backend.tcp import TcpBackend, parse_address
    from psyche_client.identity import NodeKey, load_keypair

    assert isinstance(node_key, NodeKey)
    if _looks_like_tcp(run) or ":" in run:
        parse_address(run)
        return TcpBackend(run, node_key)
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
    if account is not None:
        return SolanaBackend(rpc, payer, node_key.public, account)
    from psyche_client.runid import run_id_bytes

    run_id_bytes(run)  # validates the name with a clear error
    return SolanaBackend.for_run(rpc, payer, node_key.public, run)
