"""pytest over the coordinator core bindings (psyche_client._core).

The rules themselves are unit- and property-tested in Rust (crates/coordinator/tests); here we
check that Python sees the same behaviour, the same bytes and the same hashes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psyche_client import _core as core

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "crates/coordinator/tests/data/murmur3_vectors.json"
FIXTURE = ROOT / "crates/coordinator/tests/data/state_v1.bin"
T0 = 1_000_000


def wallet(i: int) -> bytes:
    return (i + 1).to_bytes(4, "little") + b"\xaa" * 28


def node_key(i: int) -> bytes:
    return (i + 1).to_bytes(4, "little") + b"\xbb" * 28


def rand32(i: int) -> bytes:
    return hashlib.sha256(f"rand-{i}".encode()).digest()


def commitment(epoch: int, height: int, slot: int) -> bytes:
    return hashlib.sha256(f"result-{epoch}-{height}-{slot}".encode()).digest()


def small_config(**kw: int) -> core.Config:
    base = dict(
        total_steps=8,
        batch_size_start=16,
        batch_size_end=16,
        batch_ramp_steps=0,
        rounds_per_epoch=4,
        waiting_extra_secs=5,
        warmup_secs=10,
        max_round_train_secs=30,
        round_witness_secs=5,
        witness_grace_secs=2,
        cooldown_secs=5,
        min_clients=2,
        max_clients=8,
        witnesses_per_round=3,
        verification_pct=0,
    )
    base.update(kw)
    return core.Config(**base)


def new_run(n: int, **kw: int) -> core.Coordinator:
    model = core.ModelRef.hugging_face("org/m", "main")
    c = core.Coordinator(b"\x07" * 32, small_config(**kw), model, T0)
    c.resume(T0)
    for i in range(n):
        assert c.join(wallet(i), node_key(i), T0) == i
    return c


def tick_until_change(c: core.Coordinator, now: int, limit: int = 1000) -> int:
    start = (c.phase, c.height)
    for t in range(now, now + limit):
        c.tick(t, rand32(t))
        if (c.phase, c.height) != start:
            return t
    raise AssertionError("no transition")


def start_epoch(c: core.Coordinator, now: int) -> int:
    now = tick_until_change(c, now)
    assert c.phase == core.Phase.Warmup
    for cl in c.clients():
        if cl.state == core.ClientState.Healthy:
            c.warmup_witness(cl.wallet, now)
    c.tick(now, rand32(now))
    assert c.phase == core.Phase.RoundTrain
    return now


def honest_filters(c: core.Coordinator, position: int) -> tuple[bytes, bytes]:
    h = c.height
    slots = [slot for slot, _lo, _hi in c.assignments(h - 1)] if h > 0 else []
    coms = [commitment(c.epoch, h - 1, slot) for slot in slots]
    return c.witness_filters(h, position, coms, slots)


def honest_round(c: core.Coordinator, now: int) -> int:
    h = c.height
    for pos, (slot, roles) in enumerate(c.committee(h)):
        if roles & core.ROLE_WITNESS:
            results, trainers = honest_filters(c, pos)
            c.witness(c.client(slot).wallet, pos, results, trainers, now, loss_milli=2500)
    while c.phase in (core.Phase.RoundTrain, core.Phase.RoundWitness) and c.height == h:
        now = tick_until_change(c, now)
    return now


# ---------------------------------------------------------------- hashing


def test_constants() -> None:
    assert core.STATE_VERSION == 1
    assert core.BLOOM_BYTES * 8 == core.BLOOM_BITS
    assert core.MAX_CLIENTS == 256
    assert core.STATE_SIZE % 8 == 0
    assert core.WITNESS_IX_DATA_BYTES == 8 + 2 + 2 + 16 + 2 * core.BLOOM_BYTES


def test_committed_vectors_match_mmh3_and_core() -> None:
    doc = json.loads(VECTORS.read_text())
    assert doc["bloom_bits"] == core.BLOOM_BITS and doc["bloom_hashes"] == core.BLOOM_HASHES
    for v in doc["vectors"]:
        key = bytes.fromhex(v["key"])
        want = (int(v["h1"]), int(v["h2"]))
        assert mmh3.hash64(key, seed=v["seed"], x64arch=True, signed=False) == want
        assert core.murmur3_x64_128(key, v["seed"]) == want
        assert core.bloom_indices(key, v["seed"]) == v["bloom"]
        if v["seed"] == 0:
            assert core.bloom_indices(key) == v["bloom"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100), st.integers(min_value=0, max_value=2**32 - 1))
def test_murmur_matches_mmh3_on_random_input(data: bytes, seed: int) -> None:
    want = mmh3.hash64(data, seed=seed, x64arch=True, signed=False)
    assert core.murmur3_x64_128(data, seed) == want
    h1, h2 = core.murmur3_x64_128(data, seed)
    assert mmh3.hash128(data, seed=seed, x64arch=True, signed=False) == (h2 << 64) | h1


def python_bloom(keys: list[bytes], salt: int) -> bytes:
    """The filter built from mmh3 alone, following docs/protocol.md."""
    bits = bytearray(core.BLOOM_BYTES)
    for key in keys:
        h1, h2 = mmh3.hash64(key, seed=salt, x64arch=True, signed=False)
        for i in range(core.BLOOM_HASHES):
            idx = ((h1 + i * h2) % 2**64) % core.BLOOM_BITS
            bits[idx // 8] |= 1 << (idx % 8)
    return bytes(bits)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.binary(min_size=32, max_size=32), max_size=60),
    st.integers(min_value=0, max_value=3),
)
def test_bloom_bits_equal_a_pure_mmh3_filter(keys: list[bytes], position: int) -> None:
    c = new_run(4)
    start_epoch(c, T0)
    h = c.height
    slots = [slot for slot, _roles in c.committee(h)]
    salt = c.witness_salt(h, position)
    results, trainers = c.witness_filters(h, position, keys, slots)
    assert results == python_bloom(keys, salt)
    assert trainers == python_bloom([c.client(s).wallet for s in slots], salt)
    b = core.Bloom(results)
    assert all(b.contains(k, salt) for k in keys)
    assert b.to_bytes() == results


def test_bloom_false_positive_rate_at_cap() -> None:
    keys = [hashlib.sha256(f"in-{i}".encode()).digest() for i in range(core.MAX_CLIENTS)]
    c = new_run(2)
    start_epoch(c, T0)
    b = core.Bloom(c.witness_filters(c.height, 0, keys, [])[0])
    salt = c.witness_salt(c.height, 0)
    probes = [hashlib.sha256(f"out-{i}".encode()).digest() for i in range(50_000)]
    fp = sum(1 for p in probes if b.contains(p, salt))
    assert fp / len(probes) <= 0.01


def test_bloom_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        core.Bloom(b"\x00" * 3)


# ---------------------------------------------------------------- config and errors


def test_config_defaults_validate_and_errors_are_typed() -> None:
    cfg = core.Config()
    cfg.validate()
    assert cfg.max_clients == core.MAX_CLIENTS
    bad = cfg.replace(min_clients=0)
    with pytest.raises(core.ConfigMinClients) as info:
        bad.validate()
    assert isinstance(info.value, core.CoordinatorError)
    assert info.value.name == "ConfigMinClients"
    assert core.error_name(info.value.code) == "ConfigMinClients"
    cfg.witness_quorum_pct = 0
    with pytest.raises(core.ConfigQuorum):
        cfg.validate()
    ramp = core.Config(batch_size_start=10, batch_size_end=20, batch_ramp_steps=10)
    assert ramp.batch_size_at(5) == 15


def test_model_refs() -> None:
    m = core.ModelRef.hugging_face("org/m", "abc")
    assert (m.kind, m.location, m.revision) == (core.ModelKind.HuggingFace, "org/m", "abc")
    assert core.ModelRef.peers().kind == core.ModelKind.Peers
    assert core.ModelRef.http_url("https://x/y").location == "https://x/y"
    with pytest.raises(core.InvalidModelRef):
        core.ModelRef.http_url("ftp://nope")
    with pytest.raises(core.InvalidModelRef):
        core.ModelRef.local_path("x" * 300)


def test_bad_key_lengths_are_value_errors() -> None:
    c = new_run(0)
    with pytest.raises(ValueError):
        c.join(b"short", node_key(0), T0)
    with pytest.raises(ValueError):
        c.tick(T0, b"\x00")


# ---------------------------------------------------------------- transitions


def test_full_epoch_through_the_bindings() -> None:
    c = new_run(4)
    assert c.phase == core.Phase.WaitingForMembers
    now = start_epoch(c, T0)
    seen_batches = []
    while c.phase in (core.Phase.RoundTrain, core.Phase.RoundWitness):
        info = c.round(c.height)
        assigned = c.assignments(c.height)
        if info.kind == core.RoundKind.Data:
            # Every sample of the batch exactly once, in order.
            spans = [(lo, hi) for _s, lo, hi in assigned]
            assert spans[0][0] == info.data_index
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
            assert spans[-1][1] == info.data_index + info.batch_size
            seen_batches.append(info.batch_size)
        else:
            assert assigned == []
        now = honest_round(c, now)
    assert c.phase == core.Phase.Cooldown
    assert c.data_index == sum(seen_batches)
    last = c.epoch_rounds - 1
    cands = [(lo, s, commitment(c.epoch, last, s)) for s, lo, _hi in c.assignments(last)]
    accepted = c.apply_set(last, list(reversed(cands)))
    assert [(a[0], a[1], a[2]) for a in accepted] == sorted(cands)
    assert all(a[3] == len(c.round(last + 1).submissions) for a in accepted)
    ck = c.checkpointer()
    assert ck is not None
    ck_wallet = c.client(ck).wallet
    other = next(x.wallet for x in c.clients() if x.slot != ck)
    digest = "ab" * 32
    with pytest.raises(core.NotCheckpointer):
        c.checkpoint(other, core.ModelRef.local_path("/ckpt", digest), now)
    with pytest.raises(core.CheckpointUnhashed):
        c.checkpoint(ck_wallet, core.ModelRef.local_path("/ckpt"), now)
    c.checkpoint(ck_wallet, core.ModelRef.hugging_face("org/m", "epoch-0"), now)
    with pytest.raises(core.AlreadyCheckpointed):
        c.checkpoint(ck_wallet, core.ModelRef.peers(digest), now)
    tick_until_change(c, now)
    assert c.phase == core.Phase.WaitingForMembers
    assert c.epoch == 1 and c.epochs_completed == 1
    assert c.steps_done == c.step == 4
    assert c.model.revision == "epoch-0"


def test_witness_errors_and_early_end() -> None:
    c = new_run(4)
    now = start_epoch(c, T0)
    committee = c.committee(0)
    slot0 = committee[0][0]
    assert c.check_witness_proof(0, slot0, 0)
    wrong = committee[1][0]
    empty = core.Bloom()
    with pytest.raises(core.BadProof):
        c.witness(c.client(wrong).wallet, 0, empty, empty, now)
    with pytest.raises(core.NotWitness):
        c.witness(c.client(committee[3][0]).wallet, 3, empty, empty, now)
    with pytest.raises(core.UnknownClient):
        c.witness(wallet(42), 0, empty, empty, now)
    c.witness(c.client(slot0).wallet, 0, empty.to_bytes(), empty.to_bytes(), now)
    with pytest.raises(core.DuplicateWitness):
        c.witness(c.client(slot0).wallet, 0, empty, empty, now)
    for pos in (1, 2):
        c.witness(c.client(committee[pos][0]).wallet, pos, empty, empty, now)
    assert c.round(0).quorum_at == now
    assert len(c.round(0).submissions) == 3
    assert c.tick(now + 1, rand32(1)) == core.TickOutcome.Idle
    assert c.tick(now + 2, rand32(1)) == core.TickOutcome.Transitioned
    assert c.phase == core.Phase.RoundWitness


def test_errors_leave_state_unchanged() -> None:
    c = new_run(2)
    before = c.to_bytes()
    with pytest.raises(core.DuplicateClient):
        c.join(wallet(0), node_key(7), T0)
    with pytest.raises(core.WrongPhase):
        c.warmup_witness(wallet(0), T0)
    with pytest.raises(core.NotHalted):
        c.update_config(core.Config(), T0)
    assert c.to_bytes() == before


def test_verifier_report_ejects_and_excludes() -> None:
    c = new_run(8, verification_pct=40, witnesses_per_round=3)
    now = start_epoch(c, T0)
    now = honest_round(c, now)
    pairs = [(s, c.verification_target(1, s)) for s, r in c.committee(1) if r & core.ROLE_VERIFIER]
    slot, target = next((s, t) for s, t in pairs if t is not None)
    with pytest.raises(core.NotAssigned):
        other = next(x for x in range(8) if x not in (slot, target))
        c.report(c.client(slot).wallet, other, now)
    assert c.report(c.client(slot).wallet, target, now) is True
    assert c.client(target).state == core.ClientState.Ejected
    assert target in c.round(1).ejected
    now = honest_round(c, now)
    cands = [(lo, s, commitment(c.epoch, 0, s)) for s, lo, _hi in c.assignments(0)]
    accepted = c.apply_set(0, cands)
    assert len(accepted) == len(cands) - 1
    assert all(a[1] != target for a in accepted)
    cheater = c.client(target).wallet
    assert c.banned() == [cheater]
    c.pause(now)
    with pytest.raises(core.Banned):
        c.join(cheater, node_key(99), now)


def test_health_check_through_bindings() -> None:
    c = new_run(5)
    now = start_epoch(c, T0)
    now = honest_round(c, now)
    victim = c.assignments(0)[-1][0]
    for pos, (slot, roles) in enumerate(c.committee(1)):
        if roles & core.ROLE_WITNESS:
            sent = [s for s, _lo, _hi in c.assignments(0) if s != victim]
            coms = [commitment(0, 0, s) for s in sent]
            results, trainers = c.witness_filters(1, pos, coms, sent)
            c.witness(c.client(slot).wallet, pos, results, trainers, now)
    with pytest.raises(core.RoundNotFinal):
        c.health_verdict(0, victim)
    while c.height == 1:
        now = tick_until_change(c, now)
    assert c.health_verdict(0, victim) == core.Unhealthy.MissingResult
    reporter = next(cl.wallet for cl in c.clients() if cl.slot != victim)
    assert c.health_check(reporter, victim, 0, now) == core.Unhealthy.MissingResult
    assert c.client(victim).state == core.ClientState.Dropped


def test_pause_update_resume() -> None:
    c = new_run(3)
    now = start_epoch(c, T0)
    now = honest_round(c, now)
    c.pause(now)
    assert c.paused and c.phase == core.Phase.Paused
    with pytest.raises(core.AlreadyPaused):
        c.pause(now)
    c.update_config(c.config.replace(total_steps=100), now)
    c.update_model(core.ModelRef.peers(), now)
    c.resume(now)
    assert c.config.total_steps == 100
    assert c.phase == core.Phase.WaitingForMembers
    # Rounds 0 and 1 were never applied: their spans are trained again first.
    assert c.requeue() == [(0, 16), (16, 16)]
    assert c.data_index == 32 and c.lost_samples == 0
    now = start_epoch(c, now)
    assert c.assignments(0)[0][1] == 0 and c.round(0).batch_size == 16


# ---------------------------------------------------------------- bytes


def test_bytes_round_trip_and_decode_rejects_garbage() -> None:
    c = new_run(3)
    start_epoch(c, T0)
    data = c.to_bytes()
    assert len(data) == core.STATE_SIZE
    d = core.Coordinator.from_bytes(data)
    assert d.to_bytes() == data
    assert (d.phase, d.nonce, d.committee(0)) == (c.phase, c.nonce, c.committee(0))
    with pytest.raises(core.InvalidState):
        core.Coordinator.from_bytes(data[:-8])
    broken = bytearray(data)
    broken[0] = 99  # version
    with pytest.raises(core.InvalidState):
        core.Coordinator.from_bytes(bytes(broken))
    d.set_bytes(data)
    copied = c.copy()
    copied.tick(T0 + 999, rand32(3))
    assert c.to_bytes() == data


def test_committed_rust_fixture_decodes_in_python() -> None:
    d = core.Coordinator.from_bytes(FIXTURE.read_bytes())
    assert d.version == core.STATE_VERSION
    assert d.run_id == b"\x07" * 32
    assert d.phase == core.Phase.RoundTrain
    assert (d.height, d.step) == (1, 2)
    states = {cl.slot: cl.state for cl in d.clients()}
    assert states[4] == core.ClientState.Withdrawn and states[5] == core.ClientState.Pending
    assert d.model.location == "org/tiny-llama"
