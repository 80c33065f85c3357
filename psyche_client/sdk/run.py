"""`create_run`: start a run and get a handle on it.

- TCP: the coordinator either runs in this process (on the SDK loop: nothing to install, stops
  with the handle) or as a `psyche-client serve` subprocess (`process=True`: survives a kernel
  restart's Python state, logs to a file). Either way `handle.stop()` stops it. A `state_dir`
  that already holds this run's state resumes it, as `serve` does.
- Solana: one transaction creates the coordinator account and the run (through
  `SolanaCoordinatorClient`, the operator's keypair pays and owns it); the run is opened for
  joins unless `paused=True`. `handle.stop()` only stops watching; the run lives on chain.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from psyche_client import _core
from psyche_client.errors import UserError
from psyche_client.sdk.handle import RunHandle, open_handle
from psyche_client.sdk.loop import run_async, run_sync
from psyche_client.sdk.source import DEFAULT_RPC, reason_of

ConfigArg = Mapping[str, int] | _core.Config | None
ModelArg = str | Path | _core.ModelRef

DEFAULT_KEYPAIR = "~/.config/solana/id.json"


def _config(config: ConfigArg) -> _core.Config:
    from psyche_client.runconfig import checked, config_with

    if isinstance(config, _core.Config):
        return checked(config)
    return checked(config_with(dict(config or {})))


def _model(model: ModelArg) -> _core.ModelRef:
    from psyche_client.modelref import parse_model_arg

    if isinstance(model, _core.ModelRef):
        return model
    return parse_model_arg(str(model))


def _local(host: str, port: int) -> str:
    """An address of a bound server that works from this machine."""
    from psyche_client.p2p.addr import is_wildcard, join_host_port

    if is_wildcard(host):
        host = "::1" if ":" in host else "127.0.0.1"
    return join_host_port(host, port)


async def _serve_in_process(
    run_id: str,
    config: _core.Config,
    model: _core.ModelRef,
    state_dir: Path,
    listen: str,
    join_token: str | None = None,
) -> RunHandle:
    from psyche_client.p2p.addr import parse_host_port
    from psyche_client.runid import run_id_bytes
    from psyche_client.server.app import CoordinatorServer
    from psyche_client.server.core_host import CoreStateHost
    from psyche_client.server.join_policy import JoinPolicy
    from psyche_client.server.persist import load_state

    bind = parse_host_port(listen, allow_names=False, empty_host="127.0.0.1", what="listen")
    rid = run_id_bytes(run_id)
    state_path = state_dir / "state.bin"
    saved = load_state(state_path)
    if saved is not None:
        coordinator = _core.Coordinator.from_bytes(saved)
        if coordinator.run_id != rid:
            raise UserError(f"{state_path} holds another run; use a different state_dir")
    else:
        now = int(time.time())
        coordinator = _core.Coordinator(rid, config, model, now)
        coordinator.resume(now)
    policy = JoinPolicy(token=join_token or None)
    server = CoordinatorServer(
        CoreStateHost(coordinator), run_id, state_path, bind.host, bind.port, join_policy=policy
    )
    await server.start()
    try:
        handle = await open_handle(_local(server.host, server.port))
    except BaseException:
        await server.stop()
        raise
    handle.server = server  # type: ignore[attr-defined]
    handle._on_close.append(server.stop)
    return handle


def _serve_subprocess(
    run_id: str,
    config: _core.Config,
    model: ModelArg,
    state_dir: Path,
    listen: str,
    join_token: str | None = None,
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port_file = state_dir / "server.port"
    port_file.unlink(missing_ok=True)
    log_path = state_dir / "server.log"
    sets = [f"--set={k}={v}" for k, v in config.to_dict().items()]
    model_arg = "peers" if isinstance(model, _core.ModelRef) else str(model)
    if isinstance(model, _core.ModelRef) and model.kind != _core.ModelKind.Peers:
        raise UserError("with process=True give the model as a path, URL or 'peers'")
    cmd = [
        sys.executable,
        "-m",
        "psyche_client.cli",
        "serve",
        f"--run={run_id}",
        f"--state-dir={state_dir}",
        f"--model={model_arg}",
        f"--listen={listen}",
        f"--port-file={port_file}",
        *sets,
    ]
    env = dict(os.environ)
    if join_token:
        env["PSYCHE_JOIN_TOKEN"] = join_token  # not on the command line, where `ps` shows it
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text().strip():
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
            raise UserError(f"coordinator exited early: {' '.join(tail)} (log: {log_path})")
        if time.monotonic() > deadline:
            proc.kill()
            raise UserError(f"coordinator did not start within 60 s (log: {log_path})")
        time.sleep(0.1)
    return proc, port_file.read_text().strip(), log_path


def _stopper(proc: subprocess.Popen[bytes]) -> Any:
    async def stop() -> None:
        import asyncio

        if proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)

    return stop


async def _create_solana(
    run_id: str,
    config: _core.Config,
    model: _core.ModelRef,
    rpc: str,
    keypair: Any,
    join_authority: str | None,
    airdrop_sol: float,
    paused: bool,
) -> RunHandle:
    from solana.exceptions import SolanaRpcException
    from solders.keypair import Keypair
    from solders.pubkey import Pubkey

    from psyche_client.identity import load_keypair
    from psyche_client.runid import run_id_bytes
    from psyche_client.solana.rpc import ProgramRejected, SendFailed, SolanaCoordinatorClient

    payer = keypair if isinstance(keypair, Keypair) else None
    if payer is None:
        payer = Keypair.from_seed(load_keypair(Path(str(keypair)).expanduser()).seed)
    gate = None if join_authority is None else Pubkey.from_string(join_authority)
    sdk = SolanaCoordinatorClient(rpc, payer)
    try:
        if airdrop_sol:
            await sdk.airdrop(payer.pubkey(), int(airdrop_sol * 1e9))
        run, coordinator = await sdk.create_run(run_id_bytes(run_id), config, model, gate)
        if not paused:
            await sdk.send([sdk.program.set_paused(payer.pubkey(), run, coordinator, False)])
    except ProgramRejected as e:
        hint = ""
        if "AccountNotFound" in str(e):
            hint = " (the owner's wallet holds no SOL: fund it, or pass airdrop_sol= on localnet)"
        raise UserError(f"creating run {run_id}: refused: {e}{hint}") from None
    except (SendFailed, OSError, SolanaRpcException) as e:
        raise UserError(f"creating run {run_id} on {rpc}: {reason_of(e)}") from None
    finally:
        await sdk.close()
    return await open_handle(str(run), rpc)


async def acreate_run(
    run_id: str,
    *,
    config: ConfigArg = None,
    model: ModelArg = "peers",
    backend: str = "tcp",
    state_dir: str | Path | None = None,
    listen: str = "127.0.0.1:0",
    process: bool = False,
    rpc: str = DEFAULT_RPC,
    keypair: Any = DEFAULT_KEYPAIR,
    join_authority: str | None = None,
    airdrop_sol: float = 0.0,
    paused: bool = False,
    join_token: str | None = None,
) -> RunHandle:
    """Async `create_run`."""
    cfg, ref = _config(config), _model(model)
    if backend == "solana":
        return await run_async(
            _create_solana(run_id, cfg, ref, rpc, keypair, join_authority, airdrop_sol, paused)
        )
    if backend != "tcp":
        raise UserError(f"backend must be 'tcp' or 'solana', not {backend!r}")
    if join_token is not None and not join_token:
        raise UserError("join_token must not be empty (leave it out for an open run)")
    directory = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="psyche-run-"))
    directory.mkdir(parents=True, exist_ok=True)
    if not process:
        return await run_async(_serve_in_process(run_id, cfg, ref, directory, listen, join_token))
    import asyncio

    proc, address, log_path = await asyncio.to_thread(
        _serve_subprocess, run_id, cfg, model, directory, listen, join_token
    )
    try:
        handle = await run_async(open_handle(address))
    except BaseException:
        proc.kill()
        raise
    handle.process = proc  # type: ignore[attr-defined]
    handle.log_path = log_path  # type: ignore[attr-defined]
    handle._on_close.append(_stopper(proc))
    return handle


def create_run(
    run_id: str,
    *,
    config: ConfigArg = None,
    model: ModelArg = "peers",
    backend: str = "tcp",
    state_dir: str | Path | None = None,
    listen: str = "127.0.0.1:0",
    process: bool = False,
    rpc: str = DEFAULT_RPC,
    keypair: Any = DEFAULT_KEYPAIR,
    join_authority: str | None = None,
    airdrop_sol: float = 0.0,
    paused: bool = False,
    join_token: str | None = None,
) -> RunHandle:
    """Start a run and return a live handle on it (`handle.stop()` stops a TCP coordinator).

    `config`: config fields (e.g. `{"min_clients": 3, "total_steps": 24}`) or a core Config;
    `model`: a model directory, http(s) URL, `org/repo[@rev]` or "peers" (or a core ModelRef).
    TCP (default): `state_dir` (default: a new temp dir), `listen` host:port, `process`,
    `join_token` (clients must then pass the same token to `join`).
    Solana (`backend="solana"`): `rpc`, the owner's `keypair` (file path or solders Keypair),
    optional `join_authority` pubkey, `airdrop_sol` (localnet), `paused`.
    """
    return run_sync(
        acreate_run(
            run_id,
            config=config,
            model=model,
            backend=backend,
            state_dir=state_dir,
            listen=listen,
            process=process,
            rpc=rpc,
            keypair=keypair,
            join_authority=join_authority,
            airdrop_sol=airdrop_sol,
            paused=paused,
            join_token=join_token,
        )
    )
