"""`join`: take part in a run from Python, with a handle that stops the client cleanly.

In-process (default) the client (`RunClient`, the same loop `psyche-client join` runs) lives on
the SDK loop; training runs in worker threads as it does in the CLI, so a notebook stays
responsive. `process=True` starts `psyche-client join` instead (its own process: a crash or a
torch thread setting cannot touch the caller). `stop()` asks the client to withdraw and leave
(SIGTERM for a process, which the CLI maps to the same clean exit).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from psyche_client.errors import UserError
from psyche_client.sdk.loop import run_async, run_sync, sdk_loop
from psyche_client.sdk.source import DEFAULT_RPC, looks_like_tcp

log = logging.getLogger("psyche.sdk")

DataArg = str | Path | list[str] | list[Path]


def _sources(data: DataArg) -> list[str]:
    return [str(d) for d in data] if isinstance(data, list) else [str(data)]


class JoinHandle:
    """One client taking part in a run. `stop()` leaves; `wait()` waits for the run's end."""

    def __init__(self, run: str, node_key: bytes) -> None:
        self.run = run
        self.node_key = node_key
        self.client: Any = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._task: asyncio.Task[Any] | None = None
        self._status: Any = None

    @property
    def status(self) -> Any:
        """A copy of the client's `ClientStatus` (in-process clients; None for a process)."""
        return None if self._status is None else dataclasses.replace(self._status)

    def _on_status(self, status: Any) -> None:
        self._status = status

    @property
    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self._task is not None and not self._task.done()

    async def _wait(self) -> Any:
        if self.process is not None:
            code = await asyncio.to_thread(self.process.wait)
            if code not in (0, -signal.SIGTERM):
                lines: list[str] = []
                if self.log_path is not None and self.log_path.exists():
                    lines = self.log_path.read_text(errors="replace").strip().splitlines()
                last = lines[-1] if lines else "no output"
                raise UserError(f"client for {self.run} exited with {code}: {last}")
            return None
        assert self._task is not None
        return await asyncio.shield(self._task)

    async def _wait_for(self, timeout_s: float | None) -> Any:
        try:
            return await asyncio.wait_for(self._wait(), timeout_s)
        except TimeoutError:
            raise TimeoutError(f"the client is still running after {timeout_s:g} s") from None

    async def wait_async(self, timeout_s: float | None = None) -> Any:
        """Until the client is done (the run finished, `max_epochs`, or `stop()`); returns its
        final `ClientStatus` and raises what ended it otherwise (e.g. `ClientEjected`)."""
        return await run_async(self._wait_for(timeout_s))

    def wait(self, timeout_s: float | None = None) -> Any:
        """Blocking `wait_async`."""
        return run_sync(self._wait_for(timeout_s))

    async def _stop(self, timeout_s: float) -> Any:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
            try:
                return await asyncio.wait_for(self._wait(), timeout_s)
            except TimeoutError:
                self.process.kill()
                await asyncio.to_thread(self.process.wait)
                return None
        if self._task is None or self._task.done():
            return self.status
        self.client.stop()
        try:
            return await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            return self.status

    async def stop_async(self, timeout_s: float = 30.0) -> Any:
        """Leave the run (withdraw) and wait for the client to end (cancelled after
        `timeout_s`)."""
        return await run_async(self._stop(timeout_s))

    def stop(self, timeout_s: float = 30.0) -> Any:
        """Blocking `stop_async`."""
        return run_sync(self._stop(timeout_s))

    def serve_metrics(self, address: str = "127.0.0.1:0") -> int:
        """Serve this in-process client's Prometheus metrics (as `join --metrics-port`) at
        PORT or HOST:PORT; returns the bound port. A process client: pass nothing here, it
        has its own `--metrics-port`."""
        if self.client is None:
            raise UserError("serve_metrics is for in-process clients (process=False)")
        from psyche_client.metrics import serve_client_metrics

        _, port = serve_client_metrics(address, lambda: self.client.status)
        return port

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<JoinHandle {self.node_key.hex()[:12]}… of {self.run}: {state}>"


def _node_key(key: Any) -> Any:
    from psyche_client.identity import NodeKey, load_or_create_keypair

    if key is None:
        return NodeKey.generate()
    if isinstance(key, NodeKey):
        return key
    return load_or_create_keypair(Path(str(key)).expanduser())


async def _backend(
    run: str, key: Any, rpc: str, wallet: Any, airdrop_sol: float, join_token: str | None
) -> Any:
    if looks_like_tcp(run):
        from psyche_client.backend.tcp import TcpBackend, parse_address

        parse_address(run)
        return TcpBackend(run.removeprefix("tcp://"), key, join_token=join_token)
    if join_token:
        raise UserError("join_token is for TCP runs; a Solana run gates joins by its authority")
    from solders.keypair import Keypair
    from solders.pubkey import Pubkey

    from psyche_client.backend.solana import SolanaBackend
    from psyche_client.identity import load_keypair
    from psyche_client.runid import run_id_bytes

    if wallet is None:
        payer = Keypair()
    elif isinstance(wallet, Keypair):
        payer = wallet
    else:
        path = Path(str(wallet)).expanduser()
        if not path.exists():
            raise UserError(f"a Solana run needs a funded wallet: {path} does not exist")
        payer = Keypair.from_seed(load_keypair(path).seed)
    node = key  # the NodeKey itself: it co-signs join_run (proof of possession)
    if len(run) > 32:
        backend = SolanaBackend(rpc, payer, node, Pubkey.from_string(run))
    else:
        run_id_bytes(run)
        backend = SolanaBackend.for_run(rpc, payer, node, run)
    if airdrop_sol:
        await backend.client.airdrop(payer.pubkey(), int(airdrop_sol * 1e9))
    return backend


async def _join_in_process(
    run: str,
    data: list[str],
    key: Any,
    checkpoint_dir: Path,
    events: Path | None,
    rpc: str,
    wallet: Any,
    airdrop_sol: float,
    listen: str | None,
    public_addr: str | None,
    max_epochs: int | None,
    join_token: str | None,
) -> JoinHandle:
    from psyche_client.cli.data import open_data
    from psyche_client.client import ClientOptions, RunClient
    from psyche_client.p2p.config import P2PConfig
    from psyche_client.p2p.endpoints import endpoints_from_flags

    host = run.removeprefix("tcp://").rpartition(":")[0].strip("[]") if looks_like_tcp(run) else ""
    if host == "localhost":
        host = "127.0.0.1"
    endpoints = endpoints_from_flags(listen, public_addr, host)
    handle = JoinHandle(run, key.public)
    backend = await _backend(run, key, rpc, wallet, airdrop_sol, join_token)
    options = ClientOptions(
        p2p=endpoints.apply(P2PConfig()),
        data=lambda seq_len: open_data(data, seq_len, key),  # type: ignore[arg-type,return-value]
        checkpoint_dir=checkpoint_dir,
        events_path=events,
        max_epochs=max_epochs,
        on_status=handle._on_status,
    )
    handle.client = RunClient(backend, key, options)
    handle._task = asyncio.get_running_loop().create_task(handle.client.run())
    handle._task.add_done_callback(_report_end)
    return handle


def _report_end(task: asyncio.Task[Any]) -> None:
    """Log how an in-process client ended badly (`wait()` re-raises it too)."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.warning("client stopped: %s", error)


def _join_process(
    run: str,
    data: list[str],
    key_path: Path,
    checkpoint_dir: Path,
    events: Path | None,
    rpc: str,
    wallet: Any,
    listen: str | None,
    max_epochs: int | None,
    threads: int,
    join_token: str | None,
) -> JoinHandle:
    from psyche_client.identity import load_or_create_keypair

    key = load_or_create_keypair(key_path)
    cmd = [sys.executable, "-m", "psyche_client.cli", "join", run, "--quiet"]
    cmd += [f"--data={d}" for d in data]
    cmd += [f"--key={key_path}", f"--checkpoint-dir={checkpoint_dir}", f"--threads={threads}"]
    cmd += [f"--rpc={rpc}"] + ([f"--wallet={wallet}"] if wallet is not None else [])
    cmd += [f"--events={events}"] if events is not None else []
    cmd += [f"--listen={listen}"] if listen is not None else []
    cmd += [f"--max-epochs={max_epochs}"] if max_epochs is not None else []
    handle = JoinHandle(run, key.public)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    handle.log_path = checkpoint_dir / "client.log"
    env = dict(os.environ)
    if join_token:
        env["PSYCHE_JOIN_TOKEN"] = join_token  # not on the command line, where `ps` shows it
    with handle.log_path.open("ab") as log:
        handle.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    return handle


async def ajoin(
    run: str,
    *,
    data: DataArg,
    key: Any = None,
    checkpoint_dir: str | Path | None = None,
    events: str | Path | None = None,
    rpc: str = DEFAULT_RPC,
    wallet: Any = None,
    airdrop_sol: float = 0.0,
    listen: str | None = None,
    public_addr: str | None = None,
    max_epochs: int | None = None,
    process: bool = False,
    threads: int = 1,
    join_token: str | None = None,
) -> JoinHandle:
    """Async `join`."""
    from psyche_client.cli.data import check_data_sources

    sources = _sources(data)
    check_data_sources(sources)
    ckpt = Path(checkpoint_dir) if checkpoint_dir else Path(tempfile.mkdtemp(prefix="psyche-"))
    events_path = Path(events) if events is not None else None
    if process:
        if key is None or not isinstance(key, str | Path):
            raise UserError("with process=True give key as a key file path (created if missing)")
        if airdrop_sol:
            raise UserError("airdrop_sol needs an in-process client (process=False)")
        if wallet is not None and not isinstance(wallet, str | Path):
            raise UserError("with process=True give wallet as a keypair file path")
        return await asyncio.to_thread(
            _join_process,
            run,
            sources,
            Path(key).expanduser(),
            ckpt,
            events_path,
            rpc,
            wallet,
            listen,
            max_epochs,
            threads,
            join_token,
        )
    node_key = _node_key(key)
    return await run_async(
        _join_in_process(
            run,
            sources,
            node_key,
            ckpt,
            events_path,
            rpc,
            wallet,
            airdrop_sol,
            listen,
            public_addr,
            max_epochs,
            join_token,
        )
    )


def join(
    run: str,
    *,
    data: DataArg,
    key: Any = None,
    checkpoint_dir: str | Path | None = None,
    events: str | Path | None = None,
    rpc: str = DEFAULT_RPC,
    wallet: Any = None,
    airdrop_sol: float = 0.0,
    listen: str | None = None,
    public_addr: str | None = None,
    max_epochs: int | None = None,
    process: bool = False,
    threads: int = 1,
    join_token: str | None = None,
) -> JoinHandle:
    """Join a run (TCP `host:port`, or a Solana run name/account on `rpc`) and train.

    `data`: token file(s), http(s) URL(s) or one tcp:// data server (as `join --data`);
    `key`: the node key (a NodeKey, or a key file created if missing; default: a fresh key);
    `wallet` (Solana): a keypair file or solders Keypair (default: a fresh one, fund it with
    `airdrop_sol` on localnet); `process=True` runs `psyche-client join` (then `key` must be a
    file path, and `threads` sets its torch threads; in-process clients share this process's
    torch settings). `join_token`: the TCP run's join token, if its operator set one.
    Returns at once; the client trains in the background.
    """
    sdk_loop()
    return run_sync(
        ajoin(
            run,
            data=data,
            key=key,
            checkpoint_dir=checkpoint_dir,
            events=events,
            rpc=rpc,
            wallet=wallet,
            airdrop_sol=airdrop_sol,
            listen=listen,
            public_addr=public_addr,
            max_epochs=max_epochs,
            process=process,
            threads=threads,
            join_token=join_token,
        )
    )
