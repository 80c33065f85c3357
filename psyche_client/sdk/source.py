"""Where a handle's coordinator states come from: a TCP server's pushes or a Solana account poll.

Both are read-only observers. The TCP one authenticates with a throwaway node key (the server
pushes its state to any authenticated connection; an observer never joins, so it takes no slot)
and pings so the server's idle timeout does not close it. The Solana one reads the coordinator
account with `getAccountInfo` every `poll_s` seconds and never signs anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from psyche_client import _core
from psyche_client.errors import UserError

DEFAULT_RPC = "http://127.0.0.1:8899"


class StateSource(Protocol):
    """A stream of coordinator states (runs on the SDK loop)."""

    address: str
    """What the user connected to (host:port, or the Solana run account)."""

    async def start(self, timeout_s: float) -> _core.Coordinator:
        """Connect; return the first state."""
        ...

    async def next_state(self, after: _core.Coordinator) -> _core.Coordinator:
        """The first state that differs from `after` (waits as long as it takes)."""
        ...

    async def stop(self) -> None:
        """Disconnect; never raises."""
        ...


def looks_like_tcp(target: str) -> bool:
    """host:port or tcp://… (a Solana run id has no ':'; a run account is base58)."""
    return target.startswith("tcp://") or ":" in target


class TcpSource:
    """Observes a `psyche-client serve` coordinator."""

    def __init__(self, address: str, ping_s: float = 20.0) -> None:
        from psyche_client.backend.tcp import TcpCoordinatorClient, parse_address
        from psyche_client.identity import NodeKey

        parse_address(address)  # a clear AddressError for anything but host:port
        self.address = address.removeprefix("tcp://")
        self.conn = TcpCoordinatorClient(self.address, NodeKey.generate())
        self.ping_s = ping_s
        self._pinger: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float) -> _core.Coordinator:
        # The connection retries refused connects until its timeout (a coordinator that
        # restarts); a first probe makes "nothing listens there" an immediate answer.
        try:
            _, probe = await asyncio.wait_for(
                asyncio.open_connection(self.conn.host, self.conn.port), timeout_s
            )
            probe.close()
        except (OSError, TimeoutError) as e:
            reason = getattr(e, "strerror", None) or "no answer"
            raise UserError(f"cannot reach coordinator {self.address}: {reason}") from None
        try:
            await self.conn.start(timeout_s)
        except (OSError, TimeoutError) as e:
            raise UserError(f"cannot reach coordinator {self.address}: {e}") from None
        except Exception as e:
            if type(e).__name__ == "WireError":
                raise UserError(f"coordinator {self.address}: {e}") from None
            raise
        self._pinger = asyncio.create_task(self._ping())
        assert self.conn.state is not None
        return _core.Coordinator.from_bytes(self.conn.state)

    async def next_state(self, after: _core.Coordinator) -> _core.Coordinator:
        seen = after.to_bytes()
        raw = await self.conn.wait_state(lambda s: s != seen, None)
        return _core.Coordinator.from_bytes(raw)

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(self.ping_s)
            with contextlib.suppress(Exception):
                await self.conn.request("ping", {})

    async def stop(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            await asyncio.gather(self._pinger, return_exceptions=True)
        await self.conn.stop()


class SolanaSource:
    """Observes a run of the coordinator program over JSON-RPC."""

    def __init__(self, run: str, rpc: str = DEFAULT_RPC, poll_s: float = 0.5) -> None:
        self.run = run
        self.rpc = rpc
        self.poll_s = poll_s
        self.address = run
        self.client: Any = None
        self.coordinator: Any = None
        self.run_account: Any = None

    def _run_address(self) -> Any:
        from solders.pubkey import Pubkey

        if len(self.run) > 32:
            try:
                return Pubkey.from_string(self.run)
            except ValueError:
                pass
        from psyche_client.runid import run_id_bytes

        return self.client.program.run_address(run_id_bytes(self.run))

    async def start(self, timeout_s: float) -> _core.Coordinator:
        from solders.keypair import Keypair

        from psyche_client.solana.rpc import SolanaCoordinatorClient

        self.client = SolanaCoordinatorClient(self.rpc, Keypair())  # never signs: read-only
        run = self._run_address()
        try:
            account = await asyncio.wait_for(self.client.run_account(run), timeout_s)
            state = await asyncio.wait_for(self.client.state(account.coordinator), timeout_s)
        except (LookupError, ValueError) as e:
            await self.stop()
            raise UserError(f"run {self.run} on {self.rpc}: {e}") from None
        except Exception as e:  # noqa: BLE001 - RPC transport errors of several libraries
            await self.stop()
            raise UserError(
                f"cannot reach Solana RPC {self.rpc} for run {self.run}: {reason_of(e)}"
            ) from None
        self.run_account, self.coordinator = account, account.coordinator
        self.address = str(run)
        return state

    async def next_state(self, after: _core.Coordinator) -> _core.Coordinator:
        seen = after.to_bytes()
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                state = await self.client.state(self.coordinator)
            except Exception:  # noqa: BLE001 - transient RPC trouble: poll again
                continue
            if state.to_bytes() != seen:
                return state

    async def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()


def reason_of(e: BaseException) -> str:
    """The transport error under an RPC library's wrapper (which often prints empty)."""
    cause = e.__cause__ or e.__context__
    if cause is not None and not str(e):
        return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def source_for(target: str, rpc: str | None = None) -> StateSource:
    """TCP for host:port, else a Solana run (its name or run account) on `rpc`."""
    if not target:
        raise UserError("give a coordinator host:port or a Solana run id")
    if looks_like_tcp(target):
        return TcpSource(target)
    return SolanaSource(target, rpc or DEFAULT_RPC)
