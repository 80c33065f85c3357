"""Operator commands for runs on the coordinator program: create, update, pause, resume, status,
close — against any RPC URL with any keypair file (default: localnet and the Solana CLI's
default keypair).

`run_app` is mounted as `psyche-client run …` (`python -m psyche_client.cli run …`). Config and
model options go through the same parsers as `serve` (`runconfig`, `modelref`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from psyche_client.errors import UserError
from psyche_client.identity import load_keypair
from psyche_client.modelref import model_ref_from_kind
from psyche_client.runconfig import config_from_sets
from psyche_client.runid import run_id_bytes

if TYPE_CHECKING:  # the Solana client (anchorpy, httpx, ...) loads inside the commands only
    from solders.keypair import Keypair
    from solders.pubkey import Pubkey

    from psyche_client import _core
    from psyche_client.solana.program import CoordinatorProgram
    from psyche_client.solana.rpc import SolanaCoordinatorClient

DEFAULT_RPC = "http://127.0.0.1:8899"
DEFAULT_KEYPAIR = "~/.config/solana/id.json"

run_app = typer.Typer(help="Create and operate runs on the Solana coordinator program.")

T = TypeVar("T")

Rpc = Annotated[str, typer.Option("--rpc", help="RPC URL (localnet, devnet, mainnet, …)")]
KeyPath = Annotated[str, typer.Option("--keypair", help="owner keypair file (Solana JSON)")]
RunId = Annotated[str, typer.Option("--run-id", help="run id: up to 32 bytes of UTF-8")]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="config field=value (repeatable), e.g. --set min_clients=4"),
]


def keypair(path: str | None) -> Keypair:
    """The owner keypair at `path`; a throwaway one for reads (`None`), which sign nothing."""
    from solders.keypair import Keypair

    if path is None:
        return Keypair()
    key = load_keypair(path)
    return Keypair.from_seed(key.seed)


def run_async(
    fn: Callable[[SolanaCoordinatorClient], Awaitable[T]], rpc: str, key: str | None
) -> T:
    from solana.exceptions import SolanaRpcException

    from psyche_client.solana.rpc import ProgramRejected, SendFailed, SolanaCoordinatorClient

    async def go() -> T:
        sdk = SolanaCoordinatorClient(rpc, keypair(key))
        try:
            return await fn(sdk)
        finally:
            await sdk.close()

    try:
        return asyncio.run(go())
    except SolanaRpcException as e:
        cause = e.__cause__ or e
        raise UserError(f"cannot reach Solana RPC {rpc}: {type(cause).__name__}: {cause}") from None
    except ProgramRejected as e:
        typer.echo(f"rejected: {e.name}", err=True)
        raise typer.Exit(1) from None
    except (SendFailed, LookupError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


def preflight_run(rpc: str, run: Pubkey, label: str) -> None:
    """Before `join` loads torch: the RPC answers and the run account exists (one-line errors)."""
    from solana.exceptions import SolanaRpcException
    from solders.keypair import Keypair

    from psyche_client.solana.rpc import SolanaCoordinatorClient

    async def go() -> None:
        sdk = SolanaCoordinatorClient(rpc, Keypair())
        try:
            await sdk.run_account(run)
        finally:
            await sdk.close()

    try:
        asyncio.run(go())
    except SolanaRpcException as e:
        cause = e.__cause__ or e
        raise UserError(
            f"cannot reach Solana RPC {rpc} for run {label}: {type(cause).__name__}: {cause}"
        ) from None
    except (LookupError, ValueError) as e:
        raise UserError(f"run {label}: {e} on {rpc}") from None


def status_dict(run: Pubkey, state: _core.Coordinator, account: Any) -> dict[str, Any]:
    from psyche_client import _core

    return {
        "run": str(run),
        "coordinator": str(account.coordinator),
        "owner": str(account.owner),
        "join_authority": None if account.join_authority is None else str(account.join_authority),
        "phase": state.phase.name,
        "epoch": state.epoch,
        "height": state.height,
        "step": state.step,
        "steps_done": state.steps_done,
        "clients": {
            s.name: state.count(s)
            for s in (
                _core.ClientState.Healthy,
                _core.ClientState.Pending,
                _core.ClientState.Dropped,
                _core.ClientState.Ejected,
            )
        },
        "config": state.config.to_dict(),
        "model": {
            "kind": state.model.kind.name,
            "location": state.model.location,
            "revision": state.model.revision,
        },
    }


@run_app.command()
def create(
    run_id: RunId,
    rpc: Rpc = DEFAULT_RPC,
    key: KeyPath = DEFAULT_KEYPAIR,
    sets: Sets = None,
    model_kind: Annotated[str, typer.Option(help="hf | http | path | peers")] = "peers",
    model_location: str = "",
    model_revision: str = "",
    join_authority: Annotated[str | None, typer.Option(help="pubkey that co-signs joins")] = None,
    airdrop: Annotated[float, typer.Option(help="SOL to airdrop first (localnet)")] = 0.0,
    resume: Annotated[bool, typer.Option(help="open the run for joins right away")] = False,
) -> None:
    """Create a run (coordinator account + run PDA, one transaction); it starts paused."""
    config = config_from_sets(sets or [])
    model = model_ref_from_kind(model_kind, model_location, model_revision)
    from solders.pubkey import Pubkey

    try:
        gate = None if join_authority is None else Pubkey.from_string(join_authority)
    except ValueError:
        raise UserError(f"--join-authority {join_authority!r} is not a base58 pubkey") from None

    async def go(sdk: SolanaCoordinatorClient) -> tuple[Pubkey, Pubkey]:
        if airdrop:
            await sdk.airdrop(sdk.payer.pubkey(), int(airdrop * 1e9))
        run, coordinator = await sdk.create_run(run_id_bytes(run_id), config, model, gate)
        if resume:
            p = sdk.program
            await sdk.send([p.set_paused(sdk.payer.pubkey(), run, coordinator, False)])
        return run, coordinator

    run, coordinator = run_async(go, rpc, key)
    typer.echo(json.dumps({"run": str(run), "coordinator": str(coordinator)}))


def _owner_op(run_id: str, rpc: str, key: str, build: Callable[..., Any]) -> None:
    async def go(sdk: SolanaCoordinatorClient) -> None:
        run = sdk.program.run_address(run_id_bytes(run_id))
        account = await sdk.run_account(run)
        await sdk.send([build(sdk.program, sdk.payer.pubkey(), run, account.coordinator)])

    run_async(go, rpc, key)


@run_app.command()
def pause(run_id: RunId, rpc: Rpc = DEFAULT_RPC, key: KeyPath = DEFAULT_KEYPAIR) -> None:
    """Pause the run (a running epoch is aborted; its data is requeued)."""
    _owner_op(run_id, rpc, key, lambda p, o, r, c: p.set_paused(o, r, c, True))


@run_app.command()
def resume(run_id: RunId, rpc: Rpc = DEFAULT_RPC, key: KeyPath = DEFAULT_KEYPAIR) -> None:
    """Resume a paused run."""
    _owner_op(run_id, rpc, key, lambda p, o, r, c: p.set_paused(o, r, c, False))


@run_app.command()
def update(
    run_id: RunId,
    rpc: Rpc = DEFAULT_RPC,
    key: KeyPath = DEFAULT_KEYPAIR,
    sets: Sets = None,
    model_kind: Annotated[str | None, typer.Option(help="hf | http | path | peers")] = None,
    model_location: str = "",
    model_revision: str = "",
) -> None:
    """Change config fields and/or the model (the run must be paused)."""

    async def go(sdk: SolanaCoordinatorClient) -> None:
        p: CoordinatorProgram = sdk.program
        run = p.run_address(run_id_bytes(run_id))
        account = await sdk.run_account(run)
        state = await sdk.state(account.coordinator)
        config = config_from_sets(sets, state.config) if sets else None
        model = (
            None
            if model_kind is None
            else model_ref_from_kind(model_kind, model_location, model_revision)
        )
        ix = p.update(sdk.payer.pubkey(), run, account.coordinator, config, model)
        await sdk.send([ix])

    run_async(go, rpc, key)


@run_app.command()
def status(
    run_id: RunId,
    rpc: Rpc = DEFAULT_RPC,
    key: Annotated[
        str | None, typer.Option("--keypair", help="not needed: status only reads")
    ] = None,
) -> None:
    """Print the run's state as JSON (a read: no keypair needed)."""

    async def go(sdk: SolanaCoordinatorClient) -> dict[str, Any]:
        run = sdk.program.run_address(run_id_bytes(run_id))
        account = await sdk.run_account(run)
        return status_dict(run, await sdk.state(account.coordinator), account)

    typer.echo(json.dumps(run_async(go, rpc, key), indent=1))


@run_app.command()
def close(run_id: RunId, rpc: Rpc = DEFAULT_RPC, key: KeyPath = DEFAULT_KEYPAIR) -> None:
    """Close a paused or finished run; the rent of both accounts returns to the owner."""
    _owner_op(run_id, rpc, key, lambda p, o, r, c: p.close_run(o, r, c))


@run_app.command("new-keypair")
def new_keypair(path: Path) -> None:
    """Write a fresh Solana keypair file (for localnet demos)."""
    from solders.keypair import Keypair

    kp = Keypair()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(bytes(kp))))
    typer.echo(str(kp.pubkey()))


if __name__ == "__main__":
    run_app()
