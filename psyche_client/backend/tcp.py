"""Client side of the TCP coordinator: an authenticated connection that survives server restarts.

The connection opens with a short "open" frame (so a server that is not a Psyche coordinator,
e.g. an HTTP server, answers at once and is named as such instead of leaving the client to time
out), answers the server's challenge with the node key, then receives state pushes and replies to
its own signed messages, sending a keepalive ping when it has been quiet for a third of the
server's idle timeout. If the connection drops (server restart, network), it
reconnects with capped exponential backoff; a request in flight at that moment fails with
`ConnectionLost` so the caller (the client loop) can decide whether to resend it, since only the
caller knows whether the message is still meaningful in the new state.

Every frame the server sends from its welcome on is signed by its coordinator key, and checked
here in order (`wire.FrameOpener`); which key is genuine is pinned or trusted on first use
(`pinning.KeyPolicy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from psyche_client import _core
from psyche_client.backend.base import EPOCH_PHASES
from psyche_client.backend.pinning import CoordinatorKeyMismatch, KeyPolicy
from psyche_client.errors import UserError
from psyche_client.identity import NodeKey
from psyche_client.server import wire
from psyche_client.server.join_policy import JOIN_REFUSALS, join_proof

log = logging.getLogger("psyche.backend.tcp")


class ConnectionLost(ConnectionError):
    """The connection to the coordinator dropped before the reply arrived."""


class CoordinatorRejected(Exception):
    """The coordinator refused a message; `name` is the core's error name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"coordinator refused: {name}: {message}")
        self.name = name
        self.message = message


class JoinRefused(UserError):
    """The run's join control (allowlist or join token) refused this node key."""


class NotACoordinator(UserError, ConnectionError):
    """The first connection reached something that is not this run's Psyche coordinator."""


class CoordinatorUnreachable(UserError, ConnectionError):
    """The first connection could not be made at all (refused, no route, unknown host)."""


OPEN_FRAME = wire.encode_frame(
    wire.KIND_CONTROL,
    wire.canonical_json({"type": "open", "protocol": wire.PROTOCOL_TAG.decode()}) + b"\r\n\r\n",
)
"""The client's first bytes. The trailing CRLFs are JSON whitespace to a coordinator, and end a
(bad) request line to an HTTP server, which then answers at once instead of waiting."""


class AddressError(UserError, ValueError):
    """A coordinator address is not host:port."""


def _reason(e: OSError) -> str:
    """ "Connection refused", not asyncio's "Connect call failed ('h', p)"."""
    if isinstance(e, socket.gaierror) or not e.errno or e.errno < 0:
        return e.strerror or str(e) or type(e).__name__
    return os.strerror(e.errno)


def parse_address(address: str) -> tuple[str, int]:
    """Split "host:port" (also "tcp://host:port"), with a clear error for anything else."""
    text = address.removeprefix("tcp://")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AddressError(f"{address!r} is not a coordinator address of the form host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # [IPv6]:port
    return host, int(port)


class TcpCoordinatorClient:
    """An authenticated, self-reconnecting connection to a `CoordinatorServer`."""

    def __init__(
        self,
        address: str,
        key: NodeKey,
        run_id: str | None = None,
        max_state_bytes: int = 64 * 1024 * 1024,
        request_timeout_s: float = 30.0,
        max_backoff_s: float = 5.0,
        join_token: str | None = None,
        retry_first: bool = True,
        key_policy: KeyPolicy | None = None,
    ) -> None:
        self.host, self.port = parse_address(address)
        self.key_policy = key_policy or KeyPolicy()
        self.server_key: bytes | None = None
        """The coordinator key of the current connection (checked against `key_policy`)."""
        self.join_token = join_token
        self.retry_first = retry_first
        self.key = key
        self.run_id = run_id
        self.max_state_bytes = max_state_bytes
        self.request_timeout_s = request_timeout_s
        self.max_backoff_s = max_backoff_s
        self.state: bytes | None = None
        self.on_state: Callable[[bytes], None] | None = None
        """Called with every state frame received (the newest one alone is kept in `state`)."""
        self.peers: dict[bytes, dict[str, str]] = {}
        """Node key → {"p2p_addr", "fast_addr"} as last pushed by the server."""
        self._state_changed = asyncio.Condition()
        self._connected = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._challenge = b""
        self._seq = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._send_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._first_error: BaseException | None = None
        self._last_sent = time.monotonic()
        self.reconnects = 0
        self.welcome: dict[str, Any] = {}
        """The newest welcome (idle timeout; server time, our observed host, version: doctor)."""

    async def start(self, timeout_s: float = 15.0) -> None:
        """Connect and wait for the first state; raises if the first connection cannot be made."""
        self._task = asyncio.create_task(self._run())
        waiter = asyncio.create_task(self._connected.wait())
        done, _ = await asyncio.wait(
            {waiter, self._task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
            await self.stop()
            first = self._first_error
            if isinstance(first, CoordinatorKeyMismatch):
                raise first
            if isinstance(first, wire.WireError):
                raise NotACoordinator(str(first)) from None
            if isinstance(first, OSError):
                reason = _reason(first)
                raise CoordinatorUnreachable(
                    f"cannot reach coordinator {self.host}:{self.port}: {reason}"
                ) from None
            raise ConnectionError(f"no answer from coordinator {self.host}:{self.port}")
        await self.wait_state(lambda s: True, timeout_s)

    async def stop(self) -> None:
        """Close the connection and stop reconnecting; never raises."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._writer:
            self._writer.close()
        self._fail_pending()

    async def wait_state(self, predicate: Any, timeout_s: float | None = None) -> bytes:
        """The first state (current or future) for which `predicate(state_bytes)` is true."""

        async def wait() -> bytes:
            async with self._state_changed:
                await self._state_changed.wait_for(
                    lambda: self.state is not None and predicate(self.state)
                )
                assert self.state is not None
                return self.state

        return await asyncio.wait_for(wait(), timeout_s)

    async def request(self, kind: str, body: dict[str, Any]) -> None:
        """Send one signed message and wait for the coordinator to accept or refuse it."""
        await asyncio.wait_for(self._connected.wait(), self.request_timeout_s)
        loop = asyncio.get_running_loop()
        async with self._send_lock:
            writer = self._writer
            if writer is None:
                raise ConnectionLost("not connected")
            seq = self._seq
            self._seq += 1
            fut: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._pending[seq] = fut
            if kind in ("join", "may_join") and self.join_token:
                proof = join_proof(self.join_token, self._challenge, self.key.public)
                body = {**body, "token_proof": proof.hex()}
            self._last_sent = time.monotonic()
            envelope = wire.sign_envelope(self.key, self._challenge, seq, kind, body)
            writer.write(wire.encode_control(envelope))
        reply = await asyncio.wait_for(fut, self.request_timeout_s)
        if reply["type"] == "error":
            raise CoordinatorRejected(str(reply.get("error")), str(reply.get("message")))

    def _set_peers(self, entries: Any) -> None:
        peers: dict[bytes, dict[str, str]] = {}
        for entry in entries if isinstance(entries, list) else []:
            try:
                key = bytes.fromhex(entry["node_key"])
                peers[key] = {
                    "p2p_addr": str(entry["p2p_addr"]),
                    "fast_addr": str(entry["fast_addr"]),
                }
            except (KeyError, TypeError, ValueError):
                continue
        self.peers = peers

    def _fail_pending(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost("connection to the coordinator dropped"))
        self._pending.clear()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._session()
                backoff = 0.1
            except (OSError, EOFError, wire.WireError, TimeoutError) as e:
                if not self._connected.is_set() and self.reconnects == 0:
                    if isinstance(e, wire.WireError) or not self.retry_first:
                        self._first_error = e
                        return
                if isinstance(e, CoordinatorKeyMismatch):
                    log.warning("%s; not trusting it, retrying", e)
                else:
                    log.info("coordinator connection lost (%s); reconnecting", e)
            finally:
                self._connected.clear()
                self._writer = None
                self._fail_pending()
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(self.max_backoff_s, backoff * 2)

    async def _keepalive(self, interval_s: float) -> None:
        """Ping when nothing was sent for `interval_s`, so the server's idle timeout spares us."""
        while True:
            await asyncio.sleep(max(0.05, interval_s - (time.monotonic() - self._last_sent)))
            if time.monotonic() - self._last_sent >= interval_s:
                with contextlib.suppress(Exception):
                    await self.request("ping", {})

    async def _open(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        """The server's challenge, or a `WireError` saying what answered instead."""
        limit = wire.DEFAULT_MAX_CONTROL_BYTES
        try:
            challenge_msg = wire.decode_control(await wire.read_frame(reader, limit))
        except wire.WireError:
            raise wire.WireError(
                f"{self.host}:{self.port} does not speak the Psyche coordinator protocol "
                "(is it the right address?)"
            ) from None
        if challenge_msg.get("type") != "challenge":
            raise wire.WireError("server did not open with a challenge")
        protocol = challenge_msg.get("protocol")
        if protocol != wire.PROTOCOL_VERSION:
            raise wire.WireError(
                f"the coordinator speaks protocol version {protocol or 1}, this client "
                f"{wire.PROTOCOL_VERSION}: run the same psyche-client version on both"
            )
        return challenge_msg

    async def _session(self) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        keepalive: asyncio.Task[None] | None = None
        try:
            limit = wire.DEFAULT_MAX_CONTROL_BYTES
            writer.write(OPEN_FRAME)
            challenge_msg = await self._open(reader)
            challenge = wire.hex_field(challenge_msg, "nonce", 32)
            run_id = challenge_msg.get("run_id")
            if not isinstance(run_id, str):
                raise wire.WireError("server did not name its run")
            if self.run_id is not None and run_id != self.run_id:
                raise wire.WireError(f"server hosts run {run_id!r}, not {self.run_id!r}")
            server_key = wire.hex_field(challenge_msg, "server_key", 32)
            self.key_policy.check(run_id, server_key)
            client_nonce = os.urandom(32)
            hello = wire.make_hello(self.key, challenge, run_id, client_nonce)
            writer.write(wire.encode_control(hello))
            opener = wire.FrameOpener(server_key, challenge, client_nonce, run_id)
            welcome = _welcome(opener, await wire.read_frame(reader, limit + wire.SIG_BYTES))
            self.key_policy.remember(run_id, server_key)
            self.server_key = server_key
            async with self._send_lock:
                self._challenge, self._seq, self._writer = challenge, 0, writer
            self.run_id = run_id
            self.welcome = welcome
            self._connected.set()
            idle = welcome.get("idle_timeout_s")
            if isinstance(idle, int | float) and not isinstance(idle, bool) and idle > 0:
                keepalive = asyncio.create_task(self._keepalive(idle / 3))
            frame_limit = max(limit, self.max_state_bytes) + wire.SIG_BYTES
            while True:
                frame = opener.open(await wire.read_frame(reader, frame_limit))
                if frame.kind == wire.KIND_STATE:
                    async with self._state_changed:
                        self.state = frame.body
                        if self.on_state is not None:
                            self.on_state(frame.body)
                        self._state_changed.notify_all()
                    continue
                message = wire.decode_control(frame)
                if message["type"] == "peers":
                    self._set_peers(message.get("peers"))
                    continue
                if message["type"] == "fatal":
                    raise wire.WireError(f"server closed the connection: {message.get('message')}")
                seq = message.get("seq")
                fut = self._pending.pop(seq, None) if isinstance(seq, int) else None
                if fut is not None and not fut.done():
                    fut.set_result(message)
        finally:
            if keepalive is not None:
                keepalive.cancel()
                await asyncio.gather(keepalive, return_exceptions=True)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _welcome(opener: wire.FrameOpener, frame: wire.Frame) -> dict[str, Any]:
    """The server's signed welcome; a refusal (sent unsigned, before the handshake completes)
    or a forged welcome is a `WireError` saying so."""
    try:
        welcome = wire.decode_control(opener.open(frame))
    except wire.WireError:
        try:
            refusal = wire.decode_control(frame)
        except wire.WireError:
            refusal = {}
        if refusal.get("type") == "fatal":
            raise wire.WireError(
                f"server refused the handshake: {refusal.get('message')}"
            ) from None
        raise
    if welcome.get("type") != "welcome":
        raise wire.WireError(f"server refused the handshake: {welcome.get('message')}")
    return welcome


async def preflight(
    address: str,
    key: NodeKey,
    join_token: str | None = None,
    timeout_s: float = 10.0,
    key_policy: KeyPolicy | None = None,
) -> None:
    """One attempt, before anything heavy is loaded: is `address` a Psyche coordinator that
    would let `key` join, holding the coordinator key we expect? Raises a one-line `UserError`
    saying what is wrong."""
    conn = TcpCoordinatorClient(
        address, key, join_token=join_token, retry_first=False, key_policy=key_policy
    )
    await conn.start(timeout_s)
    try:
        await conn.request("may_join", {})
    except CoordinatorRejected as e:
        if e.name in JOIN_REFUSALS:
            raise JoinRefused(
                f"the coordinator refused to let this client join: {e.message}"
            ) from None
    finally:
        await conn.stop()


class TcpBackend:
    """`CoordinatorBackend` over a `CoordinatorServer` (wallet = node key in TCP runs)."""

    def __init__(
        self,
        address: str,
        key: NodeKey,
        run_id: str | None = None,
        join_token: str | None = None,
        key_policy: KeyPolicy | None = None,
    ) -> None:
        self.conn = TcpCoordinatorClient(
            address, key, run_id, join_token=join_token, key_policy=key_policy
        )
        self.wallet = key.public
        self._epoch_state: bytes | None = None
        self.conn.on_state = self._remember

    def _remember(self, raw: bytes) -> None:
        try:
            in_epoch = _core.Coordinator.from_bytes(raw).phase in EPOCH_PHASES
        except _core.InvalidState:  # (`state()` says so when the loop reads it)
            return
        if in_epoch:
            self._epoch_state = raw

    async def start(self) -> None:
        await self.conn.start()

    async def stop(self) -> None:
        await self.conn.stop()

    def state(self) -> _core.Coordinator:
        assert self.conn.state is not None, "start() first"
        return _core.Coordinator.from_bytes(self.conn.state)

    def last_epoch_state(self) -> _core.Coordinator | None:
        raw = self._epoch_state
        return None if raw is None else _core.Coordinator.from_bytes(raw)

    async def wait_state(
        self, predicate: Callable[[_core.Coordinator], bool], timeout_s: float | None
    ) -> _core.Coordinator:
        raw = await self.conn.wait_state(
            lambda s: predicate(_core.Coordinator.from_bytes(s)), timeout_s
        )
        return _core.Coordinator.from_bytes(raw)

    def peer_addresses(self) -> dict[bytes, dict[str, str]]:
        return self.conn.peers

    async def advertise(self, p2p_addr: str, fast_addr: str) -> None:
        await self.conn.request("advertise", {"p2p_addr": p2p_addr, "fast_addr": fast_addr})

    async def join(self) -> None:
        """Join; `JoinRefused` (a one-line user error) when the run's join control says no."""
        try:
            await self.conn.request("join", {})
        except CoordinatorRejected as e:
            if e.name in JOIN_REFUSALS:
                raise JoinRefused(
                    f"the coordinator refused to let this client join: {e.message}"
                ) from None
            raise

    async def withdraw(self) -> None:
        await self.conn.request("withdraw", {})

    async def warmup_witness(self) -> None:
        await self.conn.request("warmup_witness", {})

    async def witness(
        self,
        position: int,
        results: bytes,
        trainers: bytes,
        loss_milli: int,
        tokens_per_sec: int,
        download_kib: int,
    ) -> None:
        await self.conn.request(
            "witness",
            {
                "position": position,
                "results": results.hex(),
                "trainers": trainers.hex(),
                "loss_milli": loss_milli,
                "tokens_per_sec": tokens_per_sec,
                "download_kib": download_kib,
            },
        )

    async def health_check(self, target: int, height: int) -> None:
        await self.conn.request("health_check", {"target": target, "height": height})

    async def report(self, target: int) -> None:
        await self.conn.request("report", {"target": target})

    async def checkpoint(self, model: dict[str, str]) -> None:
        await self.conn.request("checkpoint", {"model": model})
