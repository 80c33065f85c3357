"""What a node knows about the results of live steps, and which gossip it accepts.

Kept apart from the networking so the acceptance rules (the part other clients' behaviour
depends on) read in one place: signature and run, membership, step window, size, duplicates,
equivocation, then the caller's validator. Everything is dropped two steps later, so memory is
bounded by members x batches x 2 steps (plus `max_pull_messages` caps against floods).

A HAVE only adds a source for a commitment this node accepted as a claim (a trainer's signed
ANNOUNCE or MOMENTUM that the validator admitted, i.e. for its assigned batch), and only with
that claim's step, batch and size: otherwise any member could make every client track, forward
and serve PULLs of HAVEs for commitments nobody claimed. A HAVE that arrives before its claim is
parked (bounded, not forwarded) and taken up when the claim is accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import P2PConfig
from .identity import NodeId
from .messages import CLAIM_KINDS, KIND_HAVE, Announcement, MessageError, decode
from .transfer import Source

log = logging.getLogger(__name__)

PARKED_PER_SENDER = 16
"""HAVEs for not-yet-known claims kept per sender (honest ones race their claim by a moment)."""

RETAINED_STEPS = 2
"""Steps before the current one whose announcements, HAVEs and holders are kept (and whose
payloads the node keeps serving). A round's results are applied at the start of the round two
later (`set_step` of that round runs first), so two are needed for a client that missed one
to still fetch it from any holder at apply time; with one, nobody served it any more by then."""


@dataclass
class BookStats:
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


@dataclass(frozen=True)
class Verdict:
    forward: bool
    """Let gossipsub pass the message on (valid, or a harmless duplicate)."""
    new: Announcement | None = None
    """A newly accepted ANNOUNCE or MOMENTUM for the client loop."""
    addr: str = ""
    """A libp2p address worth remembering for later dials."""


class AnnouncementBook:
    def __init__(
        self,
        run_id: str,
        me: NodeId,
        is_member: Callable[[NodeId], bool],
        validate: Callable[[Announcement], str | None],
        config: P2PConfig,
        stats: BookStats,
    ) -> None:
        self.run_id = run_id
        self.me = me
        self.is_member = is_member
        self.validate = validate
        self.config = config
        self.stats = stats
        self.current_step: int | None = None
        self._accepted: dict[tuple[int, NodeId, int, int], Announcement] = {}
        """(kind, sender, step, batch_id) -> the claim: a result and its momentum disclosure
        share (sender, step, batch_id) and are told apart by kind."""
        self._holders: dict[bytes, dict[NodeId, Source]] = {}
        self._claims: dict[bytes, Announcement] = {}
        """commitment -> the accepted (or own) claim a HAVE must match."""
        self._parked: dict[NodeId, list[tuple[Announcement, bytes]]] = {}
        """sender -> HAVEs (and their raw bytes) for commitments not claimed yet."""
        self._raw: dict[int, dict[tuple[int, NodeId, bytes], bytes]] = {}
        self._own: list[Announcement] = []

    # ---- steps ----------------------------------------------------------------------------

    def set_step(self, step: int) -> None:
        self.current_step = step
        keep = step - RETAINED_STEPS
        self._accepted = {k: v for k, v in self._accepted.items() if v.step >= keep}
        self._raw = {s: v for s, v in self._raw.items() if s >= keep}
        self._own = [a for a in self._own if a.step >= keep]
        live = {a.commitment for a in self._accepted.values()} | {a.commitment for a in self._own}
        self._holders = {c: h for c, h in self._holders.items() if c in live}
        self._claims = {c: a for c, a in self._claims.items() if c in live}
        parked = {n: [(m, r) for m, r in v if m.step >= keep] for n, v in self._parked.items()}
        self._parked = {n: v for n, v in parked.items() if v}

    def step_ok(self, step: int) -> bool:
        """The current step or one of the `RETAINED_STEPS` before it (anything before the
        first set_step)."""
        cur = self.current_step
        return cur is None or cur - RETAINED_STEPS <= step <= cur

    # ---- own results ----------------------------------------------------------------------

    def add_own(self, ann: Announcement) -> None:
        self._own.append(ann)
        self._claims.setdefault(ann.commitment, ann)
        self._remember_raw(ann, ann.encode())

    def add_own_have(self, have: Announcement) -> None:
        self._remember_raw(have, have.encode())

    def own_live(self) -> list[Announcement]:
        return [a for a in self._own if self.step_ok(a.step)]

    # ---- holders and PULL -----------------------------------------------------------------

    def add_holder(self, msg: Announcement) -> None:
        holders = self._holders.setdefault(msg.commitment, {})
        holders[msg.sender] = Source(msg.sender, msg.fast_addr, msg.p2p_addr)

    def holders(self, commitment: bytes) -> list[Source]:
        return [s for n, s in self._holders.get(commitment, {}).items() if n != self.me]

    def raw_for_step(self, step: int) -> list[bytes]:
        return list(self._raw.get(step, {}).values())

    def _remember_raw(self, msg: Announcement, raw: bytes) -> None:
        per_step = self._raw.setdefault(msg.step, {})
        if len(per_step) < self.config.max_pull_messages:
            per_step[(msg.kind, msg.sender, msg.commitment)] = raw

    # ---- acceptance -----------------------------------------------------------------------

    def accept(self, data: bytes) -> Verdict:
        """Judge one signed gossip message (from gossipsub or a PULL reply)."""
        try:
            msg = decode(data)
        except MessageError as exc:
            self.stats.reject(f"decode: {exc}")
            return Verdict(False)
        try:
            reason = self._check(msg)
        except Exception as exc:  # noqa: BLE001 - a failing user callback rejects, never crashes
            log.warning("announcement check raised: %r", exc)
            reason = "validator error"
        if reason == "self":
            return Verdict(True)
        if reason == "parked":
            self._park(msg, data)
            return Verdict(False)
        if reason is not None:
            self.stats.reject(reason)
            return Verdict(False)
        self._remember_raw(msg, data)
        self.add_holder(msg)
        if msg.kind == KIND_HAVE:
            return Verdict(True, addr=msg.p2p_addr)
        key = (msg.kind, msg.sender, msg.step, msg.batch_id)
        if key in self._accepted:
            self.stats.duplicates += 1
            return Verdict(True)
        self._accepted[key] = msg
        self._claims.setdefault(msg.commitment, msg)
        self._unpark(msg)
        self.stats.accepted += 1
        return Verdict(True, new=msg, addr=msg.p2p_addr)

    def _park(self, have: Announcement, raw: bytes) -> None:
        """Keep a HAVE for an unknown commitment until its claim comes (or its step passes)."""
        mine = self._parked.setdefault(have.sender, [])
        if any(m.commitment == have.commitment for m, _ in mine):
            return
        if len(mine) >= PARKED_PER_SENDER:
            self.stats.reject("have parked: too many")
            return
        mine.append((have, raw))
        self.stats.reject("have for an unclaimed commitment (parked)")

    def _unpark(self, claim: Announcement) -> None:
        for sender in list(self._parked):
            keep = []
            for have, raw in self._parked[sender]:
                if have.commitment != claim.commitment:
                    keep.append((have, raw))
                elif _binds(claim, have):
                    self._remember_raw(have, raw)
                    self.add_holder(have)
            if keep:
                self._parked[sender] = keep
            else:
                del self._parked[sender]

    def _check(self, msg: Announcement) -> str | None:
        if msg.run_id != self.run_id:
            return "other run"
        if msg.sender == self.me:
            return "self"
        if not self.is_member(msg.sender):
            return "not a member"
        if not self.step_ok(msg.step):
            return "step not current"
        if msg.payload_size > self.config.max_payload_bytes or len(msg.commitment) != 32:
            return "payload too large"
        if msg.kind == KIND_HAVE:
            claim = self._claims.get(msg.commitment)
            if claim is None:
                return "parked"
            if not _binds(claim, msg):
                return "have does not match its claim"
            if (
                msg.commitment not in self._holders
                and len(self._holders) >= self.config.max_pull_messages
            ):
                return "too many holders tracked"
            return None
        if msg.kind in CLAIM_KINDS:
            prev = self._accepted.get((msg.kind, msg.sender, msg.step, msg.batch_id))
            if prev is not None:
                return None if prev.commitment == msg.commitment else "equivocation"
            why = self.validate(msg)
            if why is not None:
                return f"invalid: {why}"
        return None


def _binds(claim: Announcement, have: Announcement) -> bool:
    """A HAVE re-announces exactly this claim: same commitment, step, batch and size."""
    return (claim.commitment, claim.step, claim.batch_id, claim.payload_size) == (
        have.commitment,
        have.step,
        have.batch_id,
        have.payload_size,
    )
