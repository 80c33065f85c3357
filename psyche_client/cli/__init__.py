"""The `psyche-client` command line, one module per command group.

- `app`: the root typer app and `main` (user errors as one line, exit code 2);
- `serve`: host a TCP coordinator; `join`: join a run and train;
- `data`: prepare or serve training data; `model`: prepare a model directory;
- `run`: operator commands for runs on the Solana program; `demo`: a whole run on loopback.

Command modules import their heavy dependencies (torch, libp2p, solana) inside the commands, so
`psyche-client --help` stays fast.
"""

from psyche_client.cli.app import app, main

__all__ = ["app", "main"]
