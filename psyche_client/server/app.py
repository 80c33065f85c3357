"""The TCP coordinator server: hosts the core state machine for a centralized run.

One asyncio process owns the run's state. It ticks the core on a timer with OS randomness,
accepts authenticated client connections (see `wire`), applies their signed messages to the core,
persists the state atomically after every change, and pushes the new state bytes to every
connected client. Pushes are coalesced per connection (only the newest state matters), so a slow
client never holds up the server or the others. A restarted server loads the persisted state and
the run resumes where it stopped.
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

from psyche_client.server import wire
from psyche_client.server.persist import load_state, save_state

log = logging.getLogger("psyche.server")


class CoreRejection(Exception):
    """The core refused a message (wrong phase, unknown client, ...): `name` is its error name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


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


@dataclass
class ServerLimits:
    """Bounds on what one connection may send; the defaults fit a 256-client run."""

    max_control_bytes: int = wire.DEFAULT_MAX_CONTROL_BYTES
    handshake_timeout_s: float = 10.0
    messages_per_s: float = 50.0
    burst: int = 200


@dataclass(eq=False)
class _Connection:
    node_key: bytes
    writer: asyncio.StreamWriter
    latest: bytes | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


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
    ) -> None:
        self.core = core
        self.run_id = run_id
        self.state_path = Path(state_path)
        self.host = host
        self.port = port
        self.tick_interval_s = tick_interval_s
        self.limits = limits or ServerLimits()
        self.clock = clock
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._last_state = b""
        self._peers: dict[bytes, dict[str, str]] = {}

    @property
    def address(self) -> str:
        """host:port actually bound (useful with port 0)."""
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind, persist the initial state, and start ticking."""
        self._last_state = self.core.state_bytes()
        save_state(self.state_path, self._last_state)
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick_loop())
        log.info("serving run %s on %s", self.run_id, self.address)

    async def stop(self) -> None:
        """Stop ticking, close every connection and the listener; never raises."""
        if self._ticker:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        for conn in list(self._connections):
            conn.writer.close()
        if self._server:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except (TimeoutError, OSError):
                pass

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
        """Persist and push the state if it changed."""
        state = self.core.state_bytes()
        if state == self._last_state:
            return
        save_state(self.state_path, state)
        self._last_state = state
        for conn in self._connections:
            conn.latest = state
            conn.wake.set()

    def _advertise(self, node_key: bytes, body: dict[str, Any]) -> None:
        """Record where a client's p2p endpoints are and push the directory to everyone.

        Peer discovery is outside consensus: the directory only helps peers find each other;
        the p2p layer still refuses anyone the core does not list as a member.
        """
        addrs = {k: body.get(k, "") for k in ("p2p_addr", "fast_addr")}
        if not all(isinstance(v, str) and len(v) <= 256 for v in addrs.values()):
            raise CoreRejection("InvalidMessage", "addresses must be strings of <= 256 chars")
        if len(self._peers) >= 4 * 1024 and node_key not in self._peers:
            raise CoreRejection("Full", "peer directory is full")
        self._peers[node_key] = addrs
        frame = wire.encode_control({"type": "peers", "peers": self._peer_list()})
        for conn in self._connections:
            conn.writer.write(frame)

    def _peer_list(self) -> list[dict[str, str]]:
        return [{"node_key": k.hex(), **v} for k, v in self._peers.items()]

    async def _tick_loop(self) -> None:
        while True:
            try:
                self.core.tick(self._now(), os.urandom(32))
            except CoreRejection as e:
                log.debug("tick refused: %s", e)
            self._commit()
            await asyncio.sleep(self.tick_interval_s)

    async def _push_loop(self, conn: _Connection) -> None:
        while True:
            await conn.wake.wait()
            conn.wake.clear()
            state, conn.latest = conn.latest, None
            if state is not None:
                conn.writer.write(wire.encode_frame(wire.KIND_STATE, state))
                await conn.writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        pusher: asyncio.Task[None] | None = None
        conn: _Connection | None = None
        try:
            challenge = wire.new_challenge()
            writer.write(
                wire.encode_control(
                    {"type": "challenge", "nonce": challenge.hex(), "run_id": self.run_id}
                )
            )
            frame = await asyncio.wait_for(
                wire.read_frame(reader, self.limits.max_control_bytes),
                self.limits.handshake_timeout_s,
            )
            node_key = wire.check_hello(wire.decode_control(frame), challenge, self.run_id)
            conn = _Connection(node_key, writer, latest=self._last_state)
            conn.wake.set()
            self._connections.add(conn)
            writer.write(wire.encode_control({"type": "welcome"}))
            writer.write(wire.encode_control({"type": "peers", "peers": self._peer_list()}))
            pusher = asyncio.create_task(self._push_loop(conn))
            await self._serve_messages(reader, writer, conn, challenge)
        except (EOFError, ConnectionError, TimeoutError):
            pass
        except wire.WireError as e:
            log.info("closing %s: %s", peer, e)
            try:
                writer.write(wire.encode_control({"type": "fatal", "message": str(e)}))
            except ConnectionError:
                pass
        finally:
            if conn is not None:
                self._connections.discard(conn)
            if pusher:
                pusher.cancel()
                await asyncio.gather(pusher, return_exceptions=True)
            writer.close()

    async def _serve_messages(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: _Connection,
        challenge: bytes,
    ) -> None:
        seq = 0
        tokens = float(self.limits.burst)
        last = time.monotonic()
        while True:
            frame = await wire.read_frame(reader, self.limits.max_control_bytes)
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
                if kind == "advertise":
                    self._advertise(conn.node_key, body)
                else:
                    self.core.apply(conn.node_key, kind, body, self._now())
                reply: dict[str, Any] = {"type": "ok", "seq": seq}
            except CoreRejection as e:
                reply = {"type": "error", "seq": seq, "error": e.name, "message": e.message}
            seq += 1
            self._commit()
            writer.write(wire.encode_control(reply))
            await writer.drain()


def load_persisted_state(state_path: str | Path) -> bytes | None:
    """The state a previous server left at `state_path` (None if it left none)."""
    return load_state(state_path)
