"""Circuit relay v2 for members that cannot accept inbound connections (behind NAT).

How it works here (py-libp2p 0.8.1's `libp2p.relay.circuit_v2`, driven by us rather than its
auto-relay/discovery machinery, which picks relays by DHT and timers a run does not need):

- every node runs `CircuitV2Protocol`: the STOP side (accept a connection relayed to it) and,
  with `relay_service`, the HOP side (relay for others). Only members reach either: the host's
  membership gate closes every other connection.
- every node keeps a reservation at up to `relay_reservations` members it is *directly*
  connected to. A node behind NAT has such connections because it dials out to everyone.
- a dial that fails directly is retried as `/p2p/<relay>/p2p-circuit/p2p/<target>` through
  each directly connected member in turn; a relay without the target's reservation answers
  NO_RESERVATION at once, so trying them costs one round trip each.

Nothing here needs the relayed address advertised (the coordinator directory has 128 bytes
per address on Solana, a circuit address is ~150), so NATed nodes need no flags.
Hole punching (DCUtR) is not driven: see docs/p2p.md "NAT" for why.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import multiaddr  # type: ignore[import-untyped]
import trio
from libp2p.connection_types import ConnectionType
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import Service

from .config import P2PConfig

log = logging.getLogger(__name__)

# py-libp2p logs every failed dial, stream open (over several lines) and relay stream a peer
# closes as ERROR; NATed and lossy peers make those routine. Our own log says what failed (INFO)
# and what it means (WARNING), so unless INFO logging is on (`join -v`) or the operator set
# these loggers' levels, they are muted.
_NOISY = (
    "libp2p.transport.tcp.tcp",
    "libp2p.relay.circuit_v2",
    "libp2p.host.basic_host",
    "libp2p.protocol_muxer.multiselect_client",
)
if logging.getLogger().getEffectiveLevel() > logging.INFO:
    for _name in _NOISY:
        if logging.getLogger(_name).level == logging.NOTSET:
            logging.getLogger(_name).setLevel(logging.CRITICAL)

RESERVE_EVERY = 5.0
"""Seconds between reservation sweeps (new direct peers get one within this)."""
RESERVATION_TTL = 3600
REFRESH_MARGIN = 600
"""Re-reserve this long before the relay would let the reservation lapse."""
NO_HOP_BACKOFF = 120.0
"""A member that refused a reservation (relay_service off, full) is not asked again soon."""
CIRCUIT_DATA = 1 << 50
"""Per-circuit byte cap: effectively none (0 would mean 'no bytes' in py-libp2p 0.8.1)."""


def is_relayed(conn: Any) -> bool:
    """True for a connection that runs through a relay (either direction)."""
    try:
        if conn.get_connection_type() == ConnectionType.RELAYED:
            return True
    except Exception:  # noqa: BLE001 - older connection objects lack it
        pass
    addrs = getattr(conn, "_actual_transport_addresses", None) or []
    return any("/p2p-circuit" in str(a) for a in addrs)


class Relays:
    """Owns the relay protocol, the dialing transport and this node's reservations (trio)."""

    def __init__(self, host: Any, config: P2PConfig) -> None:
        self.host = host
        self.config = config
        limits = RelayLimits(
            duration=0,
            data=CIRCUIT_DATA,
            max_circuit_conns=config.relay_max_circuits,
            max_reservations=max(1, config.relay_max_circuits),
            reservation_ttl=RESERVATION_TTL,
        )
        self.protocol = CircuitV2Protocol(host, limits=limits, allow_hop=config.relay_service)
        # Roles: STOP (accept relayed connections). Not CLIENT: that would make every relayed
        # dial first reserve at the relay it goes through, for the dialer's own sake.
        self.transport = CircuitV2Transport(
            host, self.protocol, RelayConfig(roles=RelayRole.STOP, limits=limits)
        )
        self.reserved: dict[ID, float] = {}
        """relay peer -> when our reservation there expires (unix time)."""
        self._refused: dict[ID, float] = {}
        self._sweeping = trio.Lock()
        self.relayed_dials = 0

    def hole_puncher(self) -> Any:
        """DCUtR: upgrade relayed connections to direct ones by TCP simultaneous open (py-libp2p
        drives it by itself for every relayed connection); a do-nothing service when off."""
        if not self.config.hole_punch:
            return _Idle()
        from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol

        return DCUtRProtocol(self.host, dial_timeout=int(self.config.connect_timeout))

    # ---- reservations ---------------------------------------------------------------------

    def direct_peers(self) -> list[ID]:
        """Peers with at least one direct (not relayed) connection, oldest first."""
        out = []
        for pid, conns in list(self.host.get_network().connections.items()):
            items = conns if isinstance(conns, list) else [conns]
            if any(not is_relayed(c) for c in items):
                out.append(pid)
        return out

    async def maintain(self) -> None:
        """Forever: hold reservations at up to `relay_reservations` direct peers."""
        if self.config.relay_reservations <= 0:
            return
        while True:
            with trio.move_on_after(3 * self.config.connect_timeout):
                await self.sweep()
            await trio.sleep(RESERVE_EVERY)

    async def sweep(self) -> None:
        """Reserve where we have none yet (or it is about to lapse); one sweep at a time."""
        if self._sweeping.locked():
            return
        async with self._sweeping:
            await self._sweep()

    async def _sweep(self) -> None:
        now = time.time()
        direct = self.direct_peers()
        live = set(direct)
        for pid in list(self.reserved):
            if pid not in live:
                del self.reserved[pid]  # the relay is gone; so is our way in through it
        for pid in direct:
            if pid not in self.reserved and len(self.reserved) >= self.config.relay_reservations:
                break
            if self.reserved.get(pid, 0.0) - REFRESH_MARGIN > now:
                continue
            if self._refused.get(pid, 0.0) > now:
                continue
            expires = await self.reserve(pid)
            if expires:
                self.reserved[pid] = float(expires)
            else:
                self._refused[pid] = now + NO_HOP_BACKOFF

    async def reserve(self, relay: ID) -> int:
        """Ask `relay` for a reservation; its expiry time (unix s) or 0 if refused."""
        try:
            with trio.fail_after(self.config.connect_timeout):
                stream = await self.host.new_stream(relay, [HOP_PROTOCOL_ID])
                try:
                    ok = await self.transport._make_reservation(stream, relay)
                finally:
                    with trio.move_on_after(1):
                        await stream.close()
        except Exception as exc:  # noqa: BLE001 - a relay that cannot reserve is skipped
            log.debug("reservation at %s failed: %r", relay, exc)
            return 0
        if not ok:
            return 0
        return int(self.transport._reservations.get(relay, time.time() + RESERVATION_TTL))

    # ---- dialing --------------------------------------------------------------------------

    async def dial(self, target: ID, exclude: set[ID] | None = None) -> ID:
        """Connect to `target` through some directly connected member; returns the relay.
        Raises ConnectionError when none of them relays to it."""
        errors = []
        for relay in self.direct_peers():
            if relay == target or (exclude and relay in exclude):
                continue
            circuit = multiaddr.Multiaddr(f"/p2p/{relay}/p2p-circuit/p2p/{target}")
            try:
                with trio.fail_after(self.config.connect_timeout):
                    await self.transport.dial(circuit)
            except Exception as exc:  # noqa: BLE001 - try the next relay
                errors.append(f"{str(relay)[-8:]}: {exc!r}"[:160])
                continue
            self.relayed_dials += 1
            log.info("connected to %s through relay %s", target, relay)
            return relay
        raise ConnectionError(f"no relay reaches {target}: {errors or 'no direct peers'}")


class _Idle(Service):
    async def run(self) -> None:
        await self.manager.wait_finished()
