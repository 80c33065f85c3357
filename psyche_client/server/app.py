"""The TCP coordinator server: hosts the core state machine for a centralized run.

One asyncio process owns the run's state. It ticks the core on a timer with OS randomness,
accepts authenticated client connections (see `wire`), applies their signed messages to the core,
persists the state atomically after every change, and pushes the new state bytes and the peer
directory to every connected client.

What a stranger or a slow peer can cost is bounded (docs/protocol.md, "Threat model"):
- connections are capped (`max_connections`, also kept under the process's fd limit); the
  handshake has one deadline and an authenticated connection that sends nothing for
  `idle_timeout_s` is closed (clients send a keepalive; the welcome says how often);
- pushes are coalesced per connection (a slow reader gets the newest state and directory, never
  a backlog), and a connection whose unsent bytes pass `max_send_buffer_bytes`, or whose reader
  stalls for `send_timeout_s`, is closed;
- the peer directory lists members only and forgets leavers (`directory`);
- each kind of refusal is one rate-limited log line (`guard`), never a traceback per event.
A restarted server loads the persisted state and the run resumes where it stopped. Its
coordinator key (`coordinator.key.json` next to the state) signs every frame it sends after the
handshake (`wire.FrameSealer`), so clients that pin the key detect a server impersonated or a
frame altered on the path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from psyche_client import __version__
from psyche_client.errors import UserError
from psyche_client.identity import NodeKey, load_or_create_keypair
from psyche_client.server import wire
from psyche_client.server.directory import PeerDirectory
from psyche_client.server.guard import RefusalLog, fd_bounded, install_accept_guard
from psyche_client.server.join_policy import JoinPolicy
from psyche_client.server.persist import load_state, save_state
from psyche_client.server.rejection import CoreRejection

log = logging.getLogger("psyche.server")

__all__ = ["CoordinatorServer", "CoreHost", "CoreRejection", "ListenError", "ServerLimits"]


class ListenError(UserError, OSError):
    """The server cannot bind its address (in use, not local, no permission)."""


class CoreHost(Protocol):
    """What the server needs from the state machine (implemented over `psyche_client._core`)."""

    def state_bytes(self) -> bytes:
        """The state exactly as the core serializes it."""
        ...

    def tick(self, now: int, randomness: bytes) -> None:
        """Advance timeouts to unix time `now`."""
        ...

    def apply(self, node_key: bytes, kind: str, body: dict[str, Any], now: int) -> None:
        """Apply one authenticated client message; raise `CoreRejection` to refuse it."""
        ...

    def members(self) -> frozenset[bytes]:
        """Node keys of the run's current clients (Pending or Healthy): who may advertise."""
        ...


@dataclass
class ServerLimits:
    """Bounds on what connections may cost; the defaults fit a 256-client run."""

    max_control_bytes: int = wire.DEFAULT_MAX_CONTROL_BYTES
    handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 120.0
    messages_per_s: float = 50.0
    burst: int = 200
    max_connections: int = 1024
    max_send_buffer_bytes: int = 1 << 20
    send_timeout_s: float = 30.0
    log_interval_s: float = 60.0


@dataclass(eq=False)
class _Connection:
    node_key: bytes
    writer: asyncio.StreamWriter
    sealer: wire.FrameSealer
    latest: bytes | None = None
    directory_sent: int = -1
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class _SlowReader(Exception):
    """A connection's unsent bytes passed the limit, or its reader stalled."""


class CoordinatorServer:
    """Serve one run over TCP. `await start()`, then `await stop()` (or `serve_forever`)."""

    def __init__(
        self,
        core: CoreHost,
        run_id: str,
        state_path: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        tick_interval_s: float = 0.25,
        limits: ServerLimits | None = None,
        clock: Callable[[], float] = time.time,
        join_policy: JoinPolicy | None = None,
        server_key: NodeKey | None = None,
    ) -> None:
        self.core = core
        self.run_id = run_id
        self.state_path = Path(state_path)
        self.host = host
        self.port = port
        self.tick_interval_s = tick_interval_s
        self.limits = limits or ServerLimits()
        self.clock = clock
        self.join_policy = join_policy or JoinPolicy()
        self.server_key = server_key or load_or_create_keypair(
            self.state_path.parent / "coordinator.key.json"
        )
        """The run's coordinator key: clients pin its public half (`join --coordinator-key`)."""
        self.refusals = RefusalLog(log, self.limits.log_interval_s)
        self.max_connections = self.limits.max_connections
        self._connections: set[_Connection] = set()
        self._open = 0
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._unguard: Callable[[], None] | None = None
        self._last_state = b""
        self._directory = PeerDirectory()

    @property
    def address(self) -> str:
        """host:port actually bound (useful with port 0); an IPv6 host in brackets."""
        from psyche_client.p2p.addr import join_host_port

        return join_host_port(self.host, self.port)

    def directory_size(self) -> int:
        """Entries in the peer directory (members that advertised)."""
        return len(self._directory)

    async def start(self) -> None:
        """Bind, then persist the initial state and start ticking.

        Binding comes first so that a start that cannot listen leaves no state behind for the
        next start to resume. `ListenError` (a `UserError`) says why it cannot.
        """
        self.max_connections = fd_bounded(self.limits.max_connections, log)
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as e:
            reason = os.strerror(e.errno) if e.errno else str(e)
            raise ListenError(f"cannot listen on {self.host}:{self.port}: {reason}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        self._last_state = self.core.state_bytes()
        save_state(self.state_path, self._last_state)
        self._unguard = install_accept_guard(asyncio.get_running_loop(), self.refusals)
        self._ticker = asyncio.create_task(self._tick_loop())
        log.info("serving run %s on %s", self.run_id, self.address)

    async def stop(self) -> None:
        """Stop ticking, close every connection and the listener; never raises."""
        if self._ticker:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        for conn in list(self._connections):
            conn.writer.close()
        if self._handlers:  # let each handler finish, rather than be cancelled at loop exit
            _, pending = await asyncio.wait(set(self._handlers), timeout=2.0)
            for task in pending:
                task.cancel()
        if self._server:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except (TimeoutError, OSError):
                pass
        if self._unguard:
            self._unguard()
            self._unguard = None

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    def _now(self) -> int:
        return int(self.clock())

    def _commit(self) -> None:
        """Persist the state if it changed; wake every connection that has something new."""
        state = self.core.state_bytes()
        changed = state != self._last_state
        if changed:
            save_state(self.state_path, state)
            self._last_state = state
            self._directory.prune(self.core.members())
        for conn in self._connections:
            if changed:
                conn.latest = state
            if changed or conn.directory_sent != self._directory.version:
                conn.wake.set()

    async def _tick_loop(self) -> None:
        while True:
            try:
                self.core.tick(self._now(), os.urandom(32))
            except CoreRejection as e:
                log.debug("tick refused: %s", e)
            self._commit()
            await asyncio.sleep(self.tick_interval_s)

    async def _send(self, conn: _Connection, frame: bytes) -> None:
        """Sign and write one frame, then wait until the reader takes it, bounded in bytes and
        time. Sealing and writing happen with no await between, so signatures follow the order
        frames are written in, whichever task sends."""
        transport = conn.writer.transport
        if transport.get_write_buffer_size() + len(frame) > self.limits.max_send_buffer_bytes:
            raise _SlowReader(f"over {self.limits.max_send_buffer_bytes} bytes unread")
        conn.writer.write(conn.sealer.seal(frame))
        try:
            await asyncio.wait_for(conn.writer.drain(), self.limits.send_timeout_s)
        except TimeoutError:
            raise _SlowReader(f"nothing read for {self.limits.send_timeout_s:.0f} s") from None

    async def _push_loop(self, conn: _Connection) -> None:
        """Send the newest state and directory; versions that arrive meanwhile coalesce."""
        while True:
            await conn.wake.wait()
            conn.wake.clear()
            state, conn.latest = conn.latest, None
            if state is not None:
                await self._send(conn, wire.encode_frame(wire.KIND_STATE, state))
            if conn.directory_sent != self._directory.version:
                conn.directory_sent = self._directory.version
                await self._send(conn, self._directory.frame())

    async def _refuse(
        self,
        writer: asyncio.StreamWriter,
        kind: str,
        message: str,
        level: int = logging.WARNING,
        conn: _Connection | None = None,
    ) -> None:
        """Log (rate-limited) and tell the peer why it is being closed (signed once the
        handshake is done: the client then accepts nothing unsigned)."""
        self.refusals.note(kind, message, level)
        try:
            frame = wire.encode_control({"type": "fatal", "message": message})
            writer.write(conn.sealer.seal(frame) if conn is not None else frame)
            await asyncio.wait_for(writer.drain(), 1.0)
        except (OSError, TimeoutError):
            pass

    async def _handshake(
        self, reader: asyncio.StreamReader, challenge: bytes
    ) -> tuple[bytes, bytes]:
        """The proven node key of the peer and its nonce (an optional "open" preamble frame is
        skipped)."""
        message = wire.decode_control(await wire.read_frame(reader, self.limits.max_control_bytes))
        if message.get("type") == "open":
            frame = await wire.read_frame(reader, self.limits.max_control_bytes)
            message = wire.decode_control(frame)
        return wire.check_hello(message, challenge, self.run_id)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        pusher: asyncio.Task[None] | None = None
        conn: _Connection | None = None
        self._open += 1
        me = asyncio.current_task()
        if me is not None:
            self._handlers.add(me)
        try:
            if self._open > self.max_connections:
                await self._refuse(
                    writer,
                    "cap",
                    f"refused a connection from {_host(peer)}: the server is at its connection "
                    f"cap of {self.max_connections} connections",
                )
                return
            challenge = wire.new_challenge()
            writer.write(
                wire.encode_control(
                    {
                        "type": "challenge",
                        "nonce": challenge.hex(),
                        "run_id": self.run_id,
                        "protocol": wire.PROTOCOL_VERSION,
                        "server_key": self.server_key.public.hex(),
                    }
                )
            )
            try:
                node_key, client_nonce = await asyncio.wait_for(
                    self._handshake(reader, challenge), self.limits.handshake_timeout_s
                )
            except TimeoutError:
                self.refusals.note(
                    "handshake-timeout",
                    f"closed {_host(peer)}: no handshake within "
                    f"{self.limits.handshake_timeout_s:.0f} s",
                    logging.INFO,
                )
                return
            sealer = wire.FrameSealer(self.server_key, challenge, client_nonce, self.run_id)
            conn = _Connection(node_key, writer, sealer, latest=self._last_state)
            conn.wake.set()
            self._connections.add(conn)
            welcome = {
                "type": "welcome",
                "idle_timeout_s": self.limits.idle_timeout_s,
                # for `psyche-client doctor`: clock skew, and the address the server sees
                "server_time": round(float(self.clock()), 3),
                "observed_host": str(peer[0]) if isinstance(peer, tuple) and peer else "",
                "version": __version__,
            }
            writer.write(sealer.seal(wire.encode_control(welcome)))
            pusher = asyncio.create_task(self._push_loop(conn))
            serving = asyncio.create_task(self._serve_messages(reader, conn, challenge))
            done, _ = await asyncio.wait({pusher, serving}, return_when=asyncio.FIRST_COMPLETED)
            if serving not in done:
                serving.cancel()
                await asyncio.gather(serving, return_exceptions=True)
            for task in done:
                task.result()  # re-raise what ended the connection
        except (EOFError, OSError):
            pass  # the peer went away
        except _SlowReader as e:
            self.refusals.note("slow", f"closed {_host(peer)}, a slow reader: {e}", logging.INFO)
        except _Idle as e:
            await self._refuse(writer, "idle", f"closing {_host(peer)}: {e}", logging.INFO, conn)
        except wire.WireError as e:
            await self._refuse(writer, "protocol", f"closing {_host(peer)}: {e}", conn=conn)
        except Exception as e:  # a bug must not kill the server, nor log a traceback per peer
            self.refusals.note("internal", f"closing {_host(peer)} after {e!r}", logging.ERROR)
            log.debug("unexpected error serving %s", _host(peer), exc_info=True)
        finally:
            self._open -= 1
            self._handlers.discard(me)  # type: ignore[arg-type]
            if conn is not None:
                self._connections.discard(conn)
            if pusher:
                pusher.cancel()
                await asyncio.gather(pusher, return_exceptions=True)
            writer.close()

    async def _serve_messages(
        self, reader: asyncio.StreamReader, conn: _Connection, challenge: bytes
    ) -> None:
        seq = 0
        tokens = float(self.limits.burst)
        last = time.monotonic()
        idle = self.limits.idle_timeout_s
        while True:
            try:
                frame = await asyncio.wait_for(
                    wire.read_frame(reader, self.limits.max_control_bytes), idle
                )
            except TimeoutError:
                raise _Idle(f"nothing received for {idle:g} s (idle timeout)") from None
            now_m = time.monotonic()
            tokens = min(self.limits.burst, tokens + (now_m - last) * self.limits.messages_per_s)
            last = now_m
            if tokens < 1:
                raise wire.WireError("rate limit exceeded")
            tokens -= 1
            kind, body = wire.open_envelope(
                wire.decode_control(frame), conn.node_key, challenge, seq
            )
            try:
                self._dispatch(conn.node_key, kind, body, challenge)
                reply: dict[str, Any] = {"type": "ok", "seq": seq}
            except CoreRejection as e:
                reply = {"type": "error", "seq": seq, "error": e.name, "message": e.message}
            seq += 1
            self._commit()
            await self._send(conn, wire.encode_control(reply))

    def _dispatch(self, node_key: bytes, kind: str, body: dict[str, Any], challenge: bytes) -> None:
        if kind == "ping":
            return  # keepalive; the core need not see it
        if kind == "advertise":
            self._directory.advertise(node_key, body, self.core.members())
            return
        if kind == "may_join":  # a client's preflight: would its join pass join control?
            self.join_policy.check(node_key, challenge, body)
            return
        if kind == "join":
            self.join_policy.check(node_key, challenge, body)
            body = {k: v for k, v in body.items() if k != "token_proof"}
        self.core.apply(node_key, kind, body, self._now())


class _Idle(Exception):
    """An authenticated connection sent nothing for the idle timeout."""


def _host(peer: Any) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else "a peer"


def load_persisted_state(state_path: str | Path) -> bytes | None:
    """The state a previous server left at `state_path` (None if it left none)."""
    return load_state(state_path)
