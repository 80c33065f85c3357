"""`psyche-client join`: join a TCP or Solana run and train with the others.

Under `torchrun --nproc-per-node N -m psyche_client join …` rank 0 is the client (coordinator,
p2p, everything below) and ranks > 0 only serve rank 0's training commands over
torch.distributed (training/distributed.py); they open no data, key or network connection.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from psyche_client.cli.common import setup_logging
from psyche_client.cli.data import check_data_sources, open_data
from psyche_client.errors import UserError

if TYPE_CHECKING:
    from psyche_client.identity import NodeKey
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
    coordinator_key: Annotated[
        str | None,
        typer.Option(
            help="The TCP coordinator's key (64 hex, printed by `serve`). Default: trust the "
            "key seen on the first join of the run, remembered next to --key."
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
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(help="Push the same metrics over OTLP/HTTP to URL (e.g. http://host:4318)."),
    ] = None,
    wandb_project: Annotated[
        str | None,
        typer.Option(help="Log the same metrics to this wandb project (WANDB_* env applies)."),
    ] = None,
    parallel: Annotated[
        str,
        typer.Option(
            help="Under torchrun with several processes: dp (every rank holds the model), "
            "fsdp (FSDP2: parameters sharded over the ranks) or auto (fsdp when the model "
            "does not fit one GPU)."
        ),
    ] = "auto",
    rank_check_every: Annotated[
        int,
        typer.Option(
            min=0,
            help="Under torchrun: compare every rank's parameter hash with rank 0's every N "
            "applied steps (0: never).",
        ),
    ] = 1,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Join a run and train with the others until it finishes (Ctrl-C leaves cleanly)."""
    setup_logging(verbose)
    if parallel not in ("auto", "dp", "fsdp"):
        raise UserError(f"--parallel must be auto, dp or fsdp, not {parallel!r}")
    if _torchrun_rank() > 0:
        _serve_rank(parallel, rank_check_every, events, threads)
        return
    endpoints = _endpoints(run, rpc, listen, public_addr)
    from psyche_client.identity import load_or_create_keypair

    # Every check a user can fail runs before torch loads: a mistake is one line, at once.
    node_key = load_or_create_keypair(key)
    check_data_sources(data)
    backend = _backend_for(
        run, node_key, rpc, wallet, join_token, _key_policy(coordinator_key, key)
    )
    import torch

    torch.set_num_threads(threads)
    from psyche_client.training import distributed

    session = distributed.start(parallel, rank_check_every, events)
    try:
        _run_client(
            backend,
            node_key,
            endpoints,
            data,
            checkpoint_dir,
            events,
            max_epochs,
            run,
            rpc,
            quiet,
            metrics_port,
            (otlp_endpoint, wandb_project),
        )
    finally:
        if session is not None:
            session.close()


def _run_client(
    backend: object,
    node_key: NodeKey,
    endpoints: Endpoints,
    data: list[str],
    checkpoint_dir: Path,
    events: Path | None,
    max_epochs: int | None,
    run: str,
    rpc: str,
    quiet: bool,
    metrics_port: str | None,
    sinks: tuple[str | None, str | None] = (None, None),
) -> None:
    from psyche_client.cli.status_line import StatusLine
    from psyche_client.client import ClientOptions, RunClient
    from psyche_client.p2p.config import P2PConfig

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
    if any(sinks):  # OTLP and wandb: the same collector, so the same names (telemetry/)
        from psyche_client.metrics import ClientCollector
        from psyche_client.telemetry import start_sinks

        collector = ClientCollector(lambda: client.status)
        start_sinks(collector, otlp_endpoint=sinks[0], wandb_project=sinks[1])

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


def _torchrun_rank() -> int:
    """This process's rank when torchrun started several (0 otherwise); read from the
    environment so that rank 0's user-error checks still run before torch loads."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return 0
    return int(os.environ.get("RANK", "0") or 0)


def _serve_rank(parallel: str, check_every: int, events: Path | None, threads: int) -> None:
    """Ranks > 0: train what rank 0 sends until it stops (no coordinator, no peers)."""
    import signal

    import torch

    from psyche_client.training import distributed

    # Ctrl-C reaches every rank; only rank 0 acts on it (it leaves the run, then stops us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    session = distributed.start(parallel, check_every, events)
    assert session is not None
    try:
        distributed.serve(session)
    except RuntimeError as e:  # rank 0 went away (its exit or failure is what torchrun reports)
        raise UserError(f"rank {session.rank}: lost rank 0 ({e})") from None
    finally:
        session.close()


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


def _key_policy(coordinator_key: str | None, key_path: Path) -> object:
    """Pinned coordinator key, or trust on first use in known_coordinators.json by the key."""
    from psyche_client.backend.pinning import KeyPolicy, parse_coordinator_key

    if coordinator_key is not None:
        return KeyPolicy(pinned=parse_coordinator_key(coordinator_key))
    return KeyPolicy(known_path=key_path.expanduser().parent / "known_coordinators.json")


def _backend_for(
    run: str,
    node_key: object,
    rpc: str,
    wallet: Path,
    join_token: str | None = None,
    key_policy: object = None,
) -> object:
    """TCP backend for host:port, else the Solana backend for a run id or run account."""
    from psyche_client.backend.tcp import TcpBackend, parse_address
    from psyche_client.identity import NodeKey, load_keypair

    assert isinstance(node_key, NodeKey)
    if _looks_like_tcp(run) or ":" in run:
        parse_address(run)
        from psyche_client.backend.pinning import KeyPolicy
        from psyche_client.backend.tcp import preflight

        policy = key_policy if isinstance(key_policy, KeyPolicy) else None
        # reachable, a coordinator holding the expected key, may join
        asyncio.run(preflight(run, node_key, join_token, key_policy=policy))
        return TcpBackend(run, node_key, join_token=join_token, key_policy=policy)
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
