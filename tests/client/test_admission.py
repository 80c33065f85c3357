"""A client admits only the result claims the coordinator assigned, sized for the run's model
(psyche_client/client/admission.py). Before, any member's announcement for any batch, any step
(up to one ahead) and any size up to 512 MiB was accepted, remembered, forwarded and fetched."""

from __future__ import annotations

from psyche_client.client.admission import Admission, payload_bound, refuse_claim
from psyche_client.p2p.messages import KIND_ANNOUNCE, KIND_MOMENTUM, Announcement
from psyche_client.training.model import LlamaConfig
from tests.core.test_core import new_run, node_key, start_epoch

T0 = 1_000_000
MODEL = LlamaConfig()


def claim(
    sender: bytes, step: int, batch: int, size: int, kind: int = KIND_ANNOUNCE
) -> Announcement:
    return Announcement(
        run_id="r",
        step=step,
        batch_id=batch,
        sender=sender,
        commitment=b"\1" * 32,
        payload_size=size,
        kind=kind,
    )


def test_only_assigned_claims_of_a_round_in_the_state_are_admitted() -> None:
    c = new_run(4)
    start_epoch(c, T0)
    step = c.round(c.height).step
    slot, start, _end = c.assignments(c.height)[0]
    sender = c.client(slot).node_key
    ok = claim(sender, step, start, 1000)
    assert refuse_claim(c, MODEL, ok) is None
    assert refuse_claim(c, MODEL, claim(sender, step, start, 1000, KIND_MOMENTUM)) is None
    assert "not assigned" in (refuse_claim(c, MODEL, claim(sender, step, start + 1, 1000)) or "")
    other = next(s for s, _a, _b in c.assignments(c.height) if s != slot)
    stolen = claim(c.client(other).node_key, step, start, 1000)
    assert "not assigned" in (refuse_claim(c, MODEL, stolen) or "")
    assert "no data round" in (refuse_claim(c, MODEL, claim(sender, step + 1, start, 10)) or "")
    assert "not a member" in (refuse_claim(c, MODEL, claim(node_key(9), step, start, 10)) or "")
    assert refuse_claim(c, None, ok) == "no model loaded yet"


def test_a_claim_cannot_announce_more_than_the_model_allows() -> None:
    c = new_run(4)
    start_epoch(c, T0)
    step = c.round(c.height).step
    slot, start, _end = c.assignments(c.height)[0]
    sender = c.client(slot).node_key
    bound = payload_bound(MODEL)
    assert bound < 512 << 20
    assert refuse_claim(c, MODEL, claim(sender, step, start, bound)) is None
    why = refuse_claim(c, MODEL, claim(sender, step, start, bound + 1))
    assert why is not None and "more than the model allows" in why


def test_claims_for_the_next_rounds_are_admitted_one_batch_per_sender() -> None:
    """A peer whose state is a round ahead announces before our state shows that round."""
    c = new_run(4)
    start_epoch(c, T0)
    ahead = c.step  # the step the next round will train
    sender = c.client(0).node_key
    gate = Admission()
    assert gate.refuse(c, MODEL, claim(sender, ahead, 12, 1000)) is None
    assert gate.refuse(c, MODEL, claim(sender, ahead, 12, 1000, KIND_MOMENTUM)) is None
    assert gate.refuse(c, MODEL, claim(sender, ahead, 12, 1000)) is None  # the same again
    why = gate.refuse(c, MODEL, claim(sender, ahead, 24, 1000))
    assert why is not None and "second batch" in why
    assert "no data round" in (gate.refuse(c, MODEL, claim(sender, ahead + 2, 0, 10)) or "")
    assert "more than the model" in (
        gate.refuse(c, MODEL, claim(sender, ahead, 12, payload_bound(MODEL) + 1)) or ""
    )


def test_dropped_withdrawn_and_ejected_clients_lose_p2p_membership_at_once() -> None:
    from types import SimpleNamespace

    from psyche_client.client.peers import is_member
    from tests.core.test_core import wallet

    c = new_run(4)
    start_epoch(c, T0)
    ctx = SimpleNamespace(backend=SimpleNamespace(state=lambda: c))
    keys = [c.client(s).node_key for s in range(4)]
    assert all(is_member(ctx, k) for k in keys)  # type: ignore[arg-type]
    c.withdraw(wallet(3), T0 + 1)
    assert not is_member(ctx, keys[3])  # type: ignore[arg-type]
    assert c.join(wallet(5), node_key(5), T0 + 1) is not None  # a joiner: Pending
    assert is_member(ctx, node_key(5))  # type: ignore[arg-type]
