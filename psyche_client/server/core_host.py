"""The TCP server's bridge from authenticated client messages to the core state machine.

In a TCP run there are no transactions, so a client's wallet *is* its node key: the connection's
handshake proved the key, and every message acts for that key only (no message can name another
client). The operator's key (`authority`) may also pause, resume and update the run. The message
bodies mirror the Solana program's instructions; docs/protocol.md lists both.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from psyche_client import _core
from psyche_client.modelref import ModelRefError, model_ref_from_json
from psyche_client.runconfig import ConfigError, config_with
from psyche_client.server.rejection import CoreRejection

log = logging.getLogger("psyche.server")


def _int(body: dict[str, Any], name: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise CoreRejection("InvalidMessage", f"field {name!r} must be an integer in [{lo}, {hi}]")
    return value


def _hex(body: dict[str, Any], name: str, length: int) -> bytes:
    value = body.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != length:
        raise CoreRejection("InvalidMessage", f"field {name!r} must be {length} hex-encoded bytes")
    return raw


def _model(value: Any) -> _core.ModelRef:
    try:
        return model_ref_from_json(value)
    except ModelRefError as e:
        raise CoreRejection(e.name, str(e)) from None


class CoreStateHost:
    """Holds a `_core.Coordinator` and applies TCP messages to it (implements `CoreHost`)."""

    def __init__(self, coordinator: _core.Coordinator, authority: bytes | None = None) -> None:
        self.coordinator = coordinator
        self.authority = authority
        self._seen_round = (coordinator.epoch, coordinator.height)
        self.empty_rounds = 0
        """Data rounds whose results nobody applied (no result reached a witness majority)."""

    def _note_rounds(self) -> None:
        """Tell the operator about a round that trained nothing (the core requeued its data):
        repeated, it means clients cannot exchange results (ports, NAT, bandwidth)."""
        c = self.coordinator
        now = (c.epoch, c.height)
        epoch, height = self._seen_round
        if now == self._seen_round:
            return
        self._seen_round = now
        if now[0] != epoch or height < 1:
            return
        try:
            prev = c.round(height - 1)
        except _core.CoordinatorError:
            return
        if prev.epoch == epoch and prev.kind == _core.RoundKind.Data and prev.requeued:
            self.empty_rounds += 1
            log.warning(
                "epoch %d round %d trained nothing: no result reached a witness majority "
                "(%d such rounds so far; are clients' p2p ports reachable?). Next train window "
                "%d s.",
                epoch,
                height - 1,
                self.empty_rounds,
                c.round(c.height).train_secs,
            )

    def state_bytes(self) -> bytes:
        return self.coordinator.to_bytes()

    def members(self) -> frozenset[bytes]:
        live = (_core.ClientState.Pending, _core.ClientState.Healthy)
        return frozenset(c.node_key for c in self.coordinator.clients() if c.state in live)

    def tick(self, now: int, randomness: bytes) -> None:
        try:
            self.coordinator.tick(now, randomness)
        except _core.CoordinatorError as e:
            raise CoreRejection(e.name, str(e)) from None
        self._note_rounds()

    def apply(self, node_key: bytes, kind: str, body: dict[str, Any], now: int) -> None:
        c = self.coordinator
        try:
            # A client's messages are meant for the state as of now: apply due timeouts first,
            # as the program does at the start of every instruction.
            c.tick(now, os.urandom(32))
            self._note_rounds()
            if kind == "join":
                c.join(node_key, node_key, now)
            elif kind == "withdraw":
                c.withdraw(node_key, now)
            elif kind == "warmup_witness":
                c.warmup_witness(node_key, now)
            elif kind == "witness":
                c.witness(
                    node_key,
                    _int(body, "position", 0, 65535),
                    _hex(body, "results", _core.BLOOM_BYTES),
                    _hex(body, "trainers", _core.BLOOM_BYTES),
                    now,
                    loss_milli=_int(body, "loss_milli", 0, 2**32 - 1),
                    tokens_per_sec=_int(body, "tokens_per_sec", 0, 2**32 - 1),
                    download_kib=_int(body, "download_kib", 0, 2**32 - 1),
                )
            elif kind == "health_check":
                c.health_check(
                    node_key,
                    _int(body, "target", 0, 65535),
                    _int(body, "height", 0, 2**32 - 1),
                    now,
                )
            elif kind == "report":
                c.report(node_key, _int(body, "target", 0, 65535), now)
            elif kind == "checkpoint":
                c.checkpoint(node_key, _model(body.get("model")), now)
            elif kind in ("pause", "resume", "update_config", "update_model"):
                self._admin(node_key, kind, body, now)
            elif kind == "ping":
                pass
            else:
                raise CoreRejection("InvalidMessage", f"unknown message type {kind!r}")
        except _core.CoordinatorError as e:
            raise CoreRejection(e.name, str(e)) from None

    def _admin(self, node_key: bytes, kind: str, body: dict[str, Any], now: int) -> None:
        if self.authority is None or node_key != self.authority:
            raise CoreRejection("NotAuthority", f"{kind} needs the run's authority key")
        c = self.coordinator
        if kind == "pause":
            c.pause(now)
        elif kind == "resume":
            c.resume(now)
        elif kind == "update_model":
            c.update_model(_model(body.get("model")), now)
        else:
            fields = body.get("config")
            if not isinstance(fields, dict):
                raise CoreRejection("InvalidMessage", "config must map field names to integers")
            try:
                config = config_with(fields, c.config)
            except ConfigError as e:
                raise CoreRejection(e.name, str(e)) from None
            c.update_config(config, now)
