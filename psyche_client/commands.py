"""The CLI's commands: serve a TCP coordinator, join a run, prepare a model and data, the demo."""

from __future__ import annotations

import asyncio
import logging
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
    if "/" in model and not path.exists():
        repo, _, revision = model.partition("@")
        return _core.ModelRef.hugging_face(repo, revision)
    raise UserError(f"--model {model!r}: not a directory, URL, hub repo id, or 'peers'")


def join(
    run: Annotated[str, typer.Argument(help="Coordinator address (host:port) of a TCP run.")],
    data: Annotated[list[Path], typer.Option(help="Tokenized data file(s) (flat u16).")],
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
    fault: Annotated[str | None, typer.Option(hidden=True, help="Fault injection (tests).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Join a run and train with the others until it finishes (Ctrl-C leaves cleanly)."""
    _logging(verbose)
    import torch

    from psyche_client.backend.tcp import TcpBackend, parse_address
    from psyche_client.client import ClientOptions, RunClient
    from psyche_client.data.local import LocalTokenProvider
    from psyche_client.identity import load_or_create_keypair
    from psyche_client.status import StatusLine

    parse_address(run)
    node_key = load_or_create_keypair(key)
    for path in data:
        if not path.is_file():
            raise UserError(f"data file {path} does not exist")
    torch.set_num_threads(threads)
    status = StatusLine(enabled=not quiet)
    options = ClientOptions(
        data=lambda seq_len: LocalTokenProvider(data, seq_len),
        checkpoint_dir=checkpoint_dir,
        events_path=events,
        max_epochs=max_epochs,
        on_status=status.update,
        fault=fault,
    )
    client = RunClient(TcpBackend(run, node_key), node_key, options)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, client.stop)
        try:
            await client.run()
        except ConnectionError as e:
            raise UserError(f"cannot reach coordinator {run}: {e}") from None

    try:
        asyncio.run(main())
    finally:
        status.close()


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
    from psyche_client.training.demo import DeMoConfig
    from psyche_client.training.model import LlamaConfig, build_model

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
    app.add_typer(model_app, name="model")
    app.add_typer(data_app, name="data")
    from psyche_client.demo import demo

    app.command()(demo)
