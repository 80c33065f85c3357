"""Which result announcements a client accepts: only what the coordinator assigned.

An announcement makes a client remember it, forward it, and later allocate a receive buffer of
its `payload_size` and fetch it. A member could otherwise announce batches it was never assigned,
for steps that do not exist, with any size up to the transport's cap (512 MiB), and every client
would allocate that. So a claim (a result or its momentum disclosure) is admitted only when:

- its sender is a member whose slot trains `batch_id` (the span start) in the data round of
  `step` that the state holds;
- or, for one of the next two steps (a peer whose state is a round ahead of ours trains and
  announces before we see that round), provisionally: one batch per sender, kind and step, so a
  member cannot make us remember unassigned batches. (Refusing it would not lose it — the
  witnesses' pull asks again — but costs the round a pull.) What is applied is decided by the
  witnesses' attestations of assigned batches only, so a provisional claim cannot be applied;
- its size is within what the run's model allows: no encoding of a result or a momentum
  disclosure is larger than `PAYLOAD_BYTES_PER_PARAM` bytes per parameter plus a header.
"""

from __future__ import annotations

from psyche_client import _core
from psyche_client.client.context import slot_of
from psyche_client.p2p.messages import Announcement
from psyche_client.training.model import ModelConfig

PAYLOAD_BYTES_PER_PARAM = 8
"""Upper bound per parameter (a dense fp32 momentum is 4; a sparse result stores at most one
value and one index per parameter)."""
PAYLOAD_HEADER_BYTES = 1 << 20


def payload_bound(model: ModelConfig) -> int:
    """The largest payload a claim about this model may announce."""
    return PAYLOAD_BYTES_PER_PARAM * model.param_count() + PAYLOAD_HEADER_BYTES


def data_round_of_step(state: _core.Coordinator, step: int) -> int | None:
    """Height of this epoch's data round with `step` still in the state's ring, if any."""
    for h in range(max(0, state.height - 3), state.height + 1):
        try:
            r = state.round(h)
        except _core.CoordinatorError:
            continue
        if r.epoch == state.epoch and r.kind == _core.RoundKind.Data and r.step == step:
            return h
    return None


def refuse_claim(
    state: _core.Coordinator, model: ModelConfig | None, ann: Announcement
) -> str | None:
    """Why the claim `ann` is refused against the rounds the state holds, or None to admit it."""
    slot = slot_of(state, ann.sender)  # by node key (on Solana the wallet differs)
    if slot is None:
        return "sender is not a member"
    if model is None:
        return "no model loaded yet"
    if ann.payload_size > payload_bound(model):
        return f"payload of {ann.payload_size:,} bytes is more than the model allows"
    h = data_round_of_step(state, ann.step)
    if h is None:
        return f"no data round of step {ann.step} in the state"
    span = state.assignment(h, slot)
    if span is None or span[0] != ann.batch_id:
        return f"sender was not assigned batch {ann.batch_id} at step {ann.step}"
    return None


PROVISIONAL_STEPS = 2
"""How far ahead of the state (in steps not yet started) a claim is admitted provisionally."""


class Admission:
    """`refuse_claim`, plus provisional admission of claims for rounds not started in our
    state yet, remembered per (sender, step, kind) so each may claim one batch."""

    def __init__(self) -> None:
        self._provisional: dict[tuple[bytes, int, int], int] = {}

    def refuse(
        self, state: _core.Coordinator, model: ModelConfig | None, ann: Announcement
    ) -> str | None:
        why = refuse_claim(state, model, ann)
        if why is None or not why.startswith("no data round"):
            return why
        if not state.step <= ann.step < state.step + PROVISIONAL_STEPS:
            return why
        for key in [k for k in self._provisional if k[1] < state.step - 4]:
            del self._provisional[key]
        first = self._provisional.setdefault((ann.sender, ann.step, ann.kind), ann.batch_id)
        if first != ann.batch_id:
            return f"a second batch claimed for step {ann.step}, not started yet"
        return None
