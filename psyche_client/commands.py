"""The CLI's commands: serve a TCP coordinator, join a run, prepare a model and data, the demo."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Annotated

import typer

from psyche_client.errors import UserError

log = logging.getLogger("psyche.cli")

data_app = typer.Typer(help="Prepare or serve tokenized training data.", no_args_is_help=True)
model_app = typer.Typer(help="Prepare a model directory for a new run.", no_args_is_help=True)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _parse_config(pairs: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not value.lstrip("-").isdigit():
            raise UserError(f"--set {pair!r}: expected name=integer (e.g. min_clients=3)")
        out[name] = int(value)
    return out


def _make_config(pairs: list[str]) -> object:
    from psyche_client import _core

    fields = _parse_config(pairs)
    try:
        config = _core.Config(**fields)  # type: ignore[arg-type]
    except TypeError as e:
        known = ", ".join(_core.Config().to_dict())
        raise UserError(f"unknown config field ({e}); known fields: {known}") from None
    try:
        config.validate()
    except _core.CoordinatorError as e:
        raise UserError(f"invalid run config: {e.name}: {e}") from None
    return config


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
    _logging(verbose)
    from psyche_client import _core
    from psyche_client.identity import load_keypair
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
        coordinator = _core.Coordinator(run_id, _make_config(set_ or []), _model_ref(model), now)  # type: ignore[arg-type]
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


def _model_ref(model: str) -> object:
    from psyche_client import _core

    if model == "peers":
        return _core.ModelRef.peers()
    if model.startswith(("http://", "https://")):
        return _core.ModelRef.http_url(model)
    path = Path(model)
    if path.is_dir():
        return _core.ModelRef.local_path(str(path.resolve()))
    repo, _, revision = model.partition("@")
    if not path.exists() and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", repo):
        return _core.ModelRef.hugging_face(repo, revision)
    raise UserError(f"--model {model!r}: not a directory, URL, hub repo id, or 'peers'")


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
    fault: Annotated[str | None, typer.Option(hidden=True, help="Fault injection (tests).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Join a run and train with the others until it finishes (Ctrl-C leaves cleanly)."""
    _logging(verbose)
    import torch

    from psyche_client.client import ClientOptions, RunClient
    from psyche_client.identity import load_or_create_keypair
    from psyche_client.status import StatusLine

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
        fault=fault,
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


def check_data_sources(sources: list[str]) -> None:
    """Fail early, with the offending source named, before joining a run."""
    if not sources:
        raise UserError("give at least one --data source")
    kinds = {_data_kind(s) for s in sources}
    if len(kinds) > 1:
        raise UserError("--data sources must all be files, all URLs, or one tcp:// server")
    if kinds == {"tcp"} and len(sources) != 1:
        raise UserError("give exactly one tcp:// data server")
    for source in sources:
        if _data_kind(source) == "file" and not Path(source).is_file():
            raise UserError(f"data file {source} does not exist")


def _data_kind(source: str) -> str:
    if source.startswith("tcp://"):
        return "tcp"
    if source.startswith(("http://", "https://")):
        return "http"
    return "file"


def open_data(sources: list[str], seq_len: int, key: object) -> object:
    """A data provider for the run's sample length over the given sources."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from psyche_client.backend.tcp import parse_address
    from psyche_client.data.http import HttpTokenProvider
    from psyche_client.data.local import LocalTokenProvider
    from psyche_client.data.provider import DataError
    from psyche_client.data.tcp import TcpDataProvider
    from psyche_client.identity import NodeKey

    kind = _data_kind(sources[0])
    if kind == "file":
        return LocalTokenProvider(sources, seq_len)
    if kind == "http":
        return HttpTokenProvider(sources, seq_len)
    assert isinstance(key, NodeKey)
    host, port = parse_address(sources[0])
    provider = TcpDataProvider(host, port, Ed25519PrivateKey.from_private_bytes(key.seed))
    if provider.seq_len != seq_len:
        provider.close()
        raise DataError(
            f"data server {sources[0]} serves samples of {provider.seq_len} tokens, "
            f"the run needs {seq_len}"
        )
    return provider


def data_serve(
    data: Annotated[list[Path], typer.Option(help="Token file(s) to serve (flat u16).")],
    seq_len: Annotated[int, typer.Option(help="Sample length the run trains on.")],
    coordinator: Annotated[
        str, typer.Option(help="host:port of the run's TCP coordinator (who may fetch).")
    ],
    host: str = "127.0.0.1",
    port: int = 0,
    key: Annotated[Path, typer.Option(help="This server's node keypair.")] = Path(
        "~/.config/psyche/data-server.json"
    ),
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve token files to the clients of the current epoch (and nobody else)."""
    _logging(verbose)
    from psyche_client import _core
    from psyche_client.backend.tcp import TcpCoordinatorClient
    from psyche_client.data.local import LocalTokenProvider
    from psyche_client.data.tcp import serve_data
    from psyche_client.identity import load_or_create_keypair

    for path in data:
        if not path.is_file():
            raise UserError(f"data file {path} does not exist")
    provider = LocalTokenProvider(data, seq_len)
    watcher = TcpCoordinatorClient(coordinator, load_or_create_keypair(key))

    def authorize(node_key: bytes) -> bool:
        if watcher.state is None:
            return False
        members = _core.Coordinator.from_bytes(watcher.state).clients()
        return any(c.node_key == node_key and c.state == "Healthy" for c in members)

    async def main() -> None:
        try:
            await watcher.start()
        except ConnectionError as e:
            raise UserError(f"cannot reach coordinator {coordinator}: {e}") from None
        server = await serve_data(provider, authorize, host, port)
        bound = server.sockets[0].getsockname()
        print(f"serving {len(provider)} samples on tcp://{bound[0]}:{bound[1]}", flush=True)
        try:
            await server.serve_forever()
        finally:
            await watcher.stop()

    asyncio.run(main())


def model_init(
    directory: Annotated[Path, typer.Argument(help="Directory to create.")],
    layers: int = 2,
    dim: int = 64,
    heads: int = 4,
    seq_len: int = 64,
    vocab: int = 256,
    lr: float = 3e-3,
    chunk: int = 16,
    topk: int = 4,
    seed: int = 0,
) -> None:
    """Write a freshly initialised model (config.json, model.safetensors, psyche.json)."""
    from psyche_client.checkpoint.io import save_checkpoint
    from psyche_client.runspec import TrainingSpec, save_spec
    from psyche_client.training.model import LlamaConfig, build_model
    from psyche_client.training.optimizer import DeMoConfig

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=dim,
        intermediate_size=dim * 8 // 3 // 8 * 8 or 8,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max(seq_len, 8),
    )
    model = build_model(cfg, seed=seed)
    save_checkpoint(model, directory)
    save_spec(TrainingSpec(seq_len, DeMoConfig(lr=lr, chunk_size=chunk, topk=topk)), directory)
    print(f"model with {model.num_parameters():,} parameters written to {directory}")


def data_make_corpus(
    directory: Annotated[Path, typer.Argument(help="Directory to write token files into.")],
    tokens: int = 200_000,
    seed: int = 0,
) -> None:
    """Write a small byte-level tokenized corpus (generated text) for demos and tests."""
    from psyche_client.data.corpus import make_corpus

    files = make_corpus(directory, n_tokens=tokens, seed=seed)
    for f in files:
        print(f)


def register(app: typer.Typer) -> None:
    """Attach every command to the root app."""
    app.command()(serve)
    app.command()(join)
    model_app.command("init")(model_init)
    data_app.command("make-corpus")(data_make_corpus)
    data_app.command("serve")(data_serve)
    app.add_typer(model_app, name="model")
    app.add_typer(data_app, name="data")
    from psyche_client.demo import demo
    from psyche_client.solana.operator import run_app

    app.command()(demo)
    app.add_typer(run_app, name="run")
