"""`psyche-client data …`: prepare or serve tokenized training data; the `--data` sources of
`join` (files, http(s) URLs, or one tcp:// data server)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

from psyche_client.cli.common import setup_logging
from psyche_client.cli.prepare import data_prepare, data_verify
from psyche_client.errors import UserError

data_app = typer.Typer(help="Prepare or serve tokenized training data.", no_args_is_help=True)


def check_data_sources(sources: list[str]) -> None:
    """Fail early, with the offending source named, before joining a run."""
    if not sources:
        raise UserError("give at least one --data source")
    kinds = {_data_kind(s) for s in sources}
    if len(kinds) > 1:
        raise UserError("--data sources must all be files, all URLs, or one tcp:// server")
    if kinds == {"tcp"} and len(sources) != 1:
        raise UserError("give exactly one tcp:// data server")
    if kinds == {"file"}:  # files, prepared directories, a mixture (checked: data/mixture.py)
        from psyche_client.data.mixture import check_sources

        check_sources(sources)


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
    from psyche_client.data.mixture import open_sources
    from psyche_client.data.provider import DataError
    from psyche_client.data.tcp import TcpDataProvider
    from psyche_client.identity import NodeKey

    kind = _data_kind(sources[0])
    if kind == "file":
        return open_sources(sources, seq_len)
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
    data: Annotated[
        list[Path], typer.Option(help="Token file(s) (flat u16) or `data prepare` directories.")
    ],
    seq_len: Annotated[int, typer.Option(help="Sample length the run trains on.", min=1)],
    coordinator: Annotated[
        str, typer.Option(help="host:port of the run's TCP coordinator (who may fetch).")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).", min=0, max=65535)] = 0,
    key: Annotated[Path, typer.Option(help="This server's node keypair.")] = Path(
        "~/.config/psyche/data-server.json"
    ),
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve token files to the clients of the current epoch (and nobody else)."""
    setup_logging(verbose)
    from psyche_client import _core
    from psyche_client.backend.tcp import TcpCoordinatorClient
    from psyche_client.data.mixture import check_sources, open_sources
    from psyche_client.data.tcp import serve_data
    from psyche_client.identity import load_or_create_keypair

    sources = [str(p) for p in data]
    check_sources(sources)  # as `join` does: sizes, and sha256 once, of prepared directories
    provider = open_sources(sources, seq_len)
    watcher = TcpCoordinatorClient(coordinator, load_or_create_keypair(key))

    def authorize(node_key: bytes) -> bool:
        if watcher.state is None:
            return False
        members = _core.Coordinator.from_bytes(watcher.state).clients()
        return any(c.node_key == node_key and c.state == _core.ClientState.Healthy for c in members)

    async def main() -> None:
        try:
            await watcher.start()
        except ConnectionError as e:
            raise UserError(f"cannot reach coordinator {coordinator}: {e}") from None
        try:
            server = await serve_data(provider, authorize, host, port)
        except OSError as e:
            await watcher.stop()
            reason = os.strerror(e.errno) if e.errno else str(e)
            raise UserError(f"cannot listen on {host}:{port}: {reason}") from None
        bound = server.sockets[0].getsockname()
        print(f"serving {len(provider)} samples on tcp://{bound[0]}:{bound[1]}", flush=True)
        try:
            await server.serve_forever()
        finally:
            await watcher.stop()

    asyncio.run(main())


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


data_app.command("make-corpus")(data_make_corpus)
data_app.command("serve")(data_serve)
data_app.command("prepare")(data_prepare)
data_app.command("verify")(data_verify)
