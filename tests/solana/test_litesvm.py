"""The SBF build of the coordinator program, run in-process by LiteSVM (solders).

Instruction-level tests of the real `.so`: every transaction is built by the SDK from the IDL,
signed and executed by the SVM; after every step the coordinator account's state must equal,
byte for byte, what `psyche_client._core.Coordinator` computes for the same transitions with the
same clock and randomness (`Svm.check`). Rejections are asserted by the error's name (the IDL's
for program and core errors, Anchor's for framework errors), and a rejected transaction must
leave the state unchanged.
"""

from __future__ import annotations

import random

from solders.account import Account
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from psyche_client import _core
from psyche_client.solana.program import COORDINATOR_SPACE, RUN_SPACE, CoordinatorProgram
from tests.support.litesvm_harness import EpochDriver, Member, Svm

FAST = _core.Config(
    total_steps=2,
    batch_size_start=8,
    batch_size_end=8,
    batch_ramp_steps=0,
    rounds_per_epoch=2,
    waiting_extra_secs=2,
    warmup_secs=10,
    max_round_train_secs=10,
    round_witness_secs=4,
    witness_grace_secs=1,
    cooldown_secs=4,
    min_clients=3,
    max_clients=8,
    witnesses_per_round=3,
    witness_quorum_pct=66,
    verification_pct=0,
)


def joined(
    svm: Svm, n: int, config: _core.Config = FAST, deterministic: bool = False
) -> list[Member]:
    """A resumed run with `n` joined members (fixed run id and keys if `deterministic`)."""
    svm.create_run(config, run_id=bytes([7]) * 32 if deterministic else None)
    svm.set_paused(False)
    members = [Member(svm, bytes([i + 1]) * 32 if deterministic else None) for i in range(n)]
    for m in members:
        svm.join(m.keypair, m.node_key)
    return members


def in_round(
    svm: Svm, n: int = 4, config: _core.Config = FAST, deterministic: bool = False
) -> tuple[EpochDriver, list[Member]]:
    """A run in its first RoundTrain."""
    members = joined(svm, n, config, deterministic)
    driver = EpochDriver(svm, members)
    driver.run_until(_core.Phase.RoundTrain)
    return driver, members


def closed(svm: Svm, address: Pubkey) -> bool:
    """The account is gone (LiteSVM reports a closed account as empty and lamport-less)."""
    account = svm.vm.get_account(address)
    return account is None or (account.lamports == 0 and len(account.data) == 0)


def unchanged(svm: Svm) -> None:
    """A rejected transaction left the state as the core mirror has it."""
    svm.check()


# ---------------------------------------------------------------------------------- happy paths


def test_init_run_creates_the_run_pda_and_the_coordinator(
    svm: Svm, coordinator: CoordinatorProgram
) -> None:
    svm.create_run(FAST)
    run_info = svm.vm.get_account(svm.run)
    assert run_info is not None and run_info.owner == coordinator.program_id
    assert len(run_info.data) == RUN_SPACE
    run = coordinator.decode_run(svm.run, bytes(run_info.data))
    assert run.owner == svm.owner.pubkey()
    assert run.coordinator == svm.coordinator.pubkey()
    assert run.join_authority is None
    assert run.state_version == _core.STATE_VERSION
    state = svm.check()
    assert state.phase == _core.Phase.Paused
    assert state.config.to_dict() == FAST.to_dict()
    assert state.model.location == "org/model"
    assert run.run_id == state.run_id
    coord = svm.vm.get_account(svm.coordinator.pubkey())
    assert coord is not None and len(coord.data) == COORDINATOR_SPACE


def test_full_epoch_with_warped_clock(svm: Svm) -> None:
    """joins → warmup → rounds → witness → cooldown → finished, four clients, checked against
    the core after every transaction; then the owner closes the run and gets the rent back."""
    members = joined(svm, 4)
    driver = EpochDriver(svm, members)
    driver.run_until(_core.Phase.Finished)
    assert driver.phases == [
        _core.Phase.WaitingForMembers,
        _core.Phase.Warmup,
        _core.Phase.RoundTrain,
        _core.Phase.RoundWitness,
        _core.Phase.RoundTrain,
        _core.Phase.RoundWitness,
        _core.Phase.RoundTrain,
        _core.Phase.RoundWitness,
        _core.Phase.Cooldown,
        _core.Phase.Finished,
    ]
    state = svm.check()
    assert state.steps_done == 2
    assert state.epochs_completed == 1
    assert state.model.revision == "epoch-0"
    assert all(svm.cu[k] < 200_000 for k in svm.cu), svm.cu

    before = svm.vm.get_balance(svm.owner.pubkey())
    run_rent = svm.vm.get_balance(svm.run)
    coord_rent = svm.vm.get_balance(svm.coordinator.pubkey())
    svm.ok("close_run", svm.owner, [svm.p.close_run(svm.owner.pubkey(), *svm.accounts)])
    after = svm.vm.get_balance(svm.owner.pubkey())
    assert after == before + run_rent + coord_rent - 5000
    assert closed(svm, svm.run)
    assert closed(svm, svm.coordinator.pubkey())


def test_tick_is_permissionless(svm: Svm) -> None:
    joined(svm, 3)
    svm.tick(payer=svm.funded())  # min_clients reached: the waiting timer starts
    svm.advance(FAST.waiting_extra_secs)
    svm.tick(payer=svm.funded())
    assert svm.check().phase == _core.Phase.Warmup


def test_withdraw(svm: Svm) -> None:
    members = joined(svm, 3)
    svm.member(
        "withdraw", members[0].keypair, svm.p.withdraw(members[0].keypair.pubkey(), *svm.accounts)
    )
    assert svm.mirror is not None
    svm.mirror.withdraw(members[0].wallet, svm.now)
    state = svm.check()
    assert state.find_client(members[0].wallet) is None


def test_update_only_by_the_owner_while_paused(svm: Svm) -> None:
    svm.create_run(FAST)
    new_config = FAST.replace(total_steps=50)
    new_model = _core.ModelRef.http_url("https://example.com/model.safetensors")
    intruder = svm.funded()
    ix = svm.p.update(intruder.pubkey(), *svm.accounts, config=new_config)
    assert svm.fails(intruder, [ix]) == "Unauthorized"

    svm.ok(
        "update",
        svm.owner,
        [svm.p.update(svm.owner.pubkey(), *svm.accounts, new_config, new_model)],
    )
    svm.mirror_tick()
    assert svm.mirror is not None
    svm.mirror.update_config(new_config, svm.now)
    svm.mirror.update_model(new_model, svm.now)
    state = svm.check()
    assert state.config.total_steps == 50
    assert state.model.location == "https://example.com/model.safetensors"

    svm.set_paused(False)
    ix = svm.p.update(svm.owner.pubkey(), *svm.accounts, config=FAST)
    assert svm.fails(svm.owner, [ix]) == "NotHalted"
    bad = svm.p.update(svm.owner.pubkey(), *svm.accounts, config=FAST.replace(min_clients=0))
    svm.set_paused(True)
    assert svm.fails(svm.owner, [bad]) == "ConfigMinClients"
    unchanged(svm)


def test_pause_and_resume_errors(svm: Svm) -> None:
    svm.create_run(FAST)
    pause = svm.p.set_paused(svm.owner.pubkey(), *svm.accounts, True)
    assert svm.fails(svm.owner, [pause]) == "AlreadyPaused"
    svm.set_paused(False)
    resume = svm.p.set_paused(svm.owner.pubkey(), *svm.accounts, False)
    assert svm.fails(svm.owner, [resume]) == "NotPaused"
    unchanged(svm)


def test_join_authority_must_cosign(svm: Svm) -> None:
    gate = svm.funded()
    svm.create_run(FAST, join_authority=gate.pubkey())
    svm.set_paused(False)
    user = Member(svm)
    ix = svm.p.join_run(user.keypair.pubkey(), *svm.accounts, user.node_key)
    assert svm.fails(user.keypair, [ix], [user.node]) == "JoinNotAuthorized"
    other = svm.funded()
    ix = svm.p.join_run(user.keypair.pubkey(), *svm.accounts, user.node_key, other.pubkey())
    assert svm.fails(user.keypair, [ix], [other, user.node]) == "JoinNotAuthorized"
    unchanged(svm)
    svm.join(user.keypair, user.node_key, authorizer=gate)

    # The owner lifts the gate (while paused): joins become permissionless.
    svm.set_paused(True)
    ix = svm.p.update(svm.owner.pubkey(), *svm.accounts, join_authority=Pubkey.default())
    svm.ok("update", svm.owner, [ix])
    svm.mirror_tick()
    second = Member(svm)
    svm.join(second.keypair, second.node_key)
    run_info = svm.vm.get_account(svm.run)
    assert run_info is not None
    assert svm.p.decode_run(svm.run, bytes(run_info.data)).join_authority is None


def test_join_errors_are_the_cores(svm: Svm) -> None:
    members = joined(svm, 3)
    fresh = Keypair()
    again = svm.p.join_run(members[0].keypair.pubkey(), *svm.accounts, bytes(fresh.pubkey()))
    assert svm.fails(members[0].keypair, [again], [fresh]) == "DuplicateClient"
    unchanged(svm)


def test_join_needs_the_node_keys_signature(svm: Svm) -> None:
    """Proof of possession: registering a key needs its signature, so a victim's node key
    cannot be squatted (before, any wallet could register any key)."""
    members = joined(svm, 2)
    squatter = Member(svm)
    victim = Member(svm)
    # The squatter names the victim's key as the node account and signs with its own node key
    # (the transaction cannot carry the victim's signature): the program refuses.
    ix = svm.p.join_run(squatter.keypair.pubkey(), *svm.accounts, victim.node_key)
    metas = list(ix.accounts)
    node_at = 2  # [user, authorizer, node, ...]
    assert metas[node_at].pubkey == Pubkey.from_bytes(victim.node_key) and metas[node_at].is_signer
    metas[node_at] = AccountMeta(Pubkey.from_bytes(squatter.node_key), True, False)
    forged = Instruction(ix.program_id, ix.data, metas)
    assert svm.fails(squatter.keypair, [forged], [squatter.node]) == "NodeKeyNotSigner"
    # Marked as not signing: the loader refuses it.
    metas[node_at] = AccountMeta(Pubkey.from_bytes(victim.node_key), False, False)
    unsigned = Instruction(ix.program_id, ix.data, metas)
    assert svm.fails(squatter.keypair, [unsigned]) == "AccountNotSigner"
    unchanged(svm)
    svm.join(victim.keypair, victim.node_key)
    assert svm.mirror is not None and svm.mirror.find_client(victim.wallet) is not None
    assert len(members) == 2


def test_report_ejects_and_health_check_drops(svm: Svm) -> None:
    """A verifier reports its target (ejected); a silent witness is dropped by a health check."""
    config = FAST.replace(
        verification_pct=30, total_steps=4, rounds_per_epoch=4, witnesses_per_round=6
    )
    # Fixed keys and run id: the committees (and so who verifies whom) are reproducible.
    driver, members = in_round(svm, 6, config, deterministic=True)
    assert svm.mirror is not None
    mirror = svm.mirror
    # Round 0 → 1: everybody honest.
    while mirror.height < 1:
        driver.step()
    h = mirror.height
    reported = False
    candidates = [
        (m, t)
        for m in members
        if (slot := mirror.find_client(m.wallet)) is not None
        and (t := mirror.verification_target(h, slot)) is not None
    ]
    assert candidates, "no verifier with a target in round 1"
    for m, _target in candidates:
        slot = mirror.find_client(m.wallet)
        assert slot is not None
        target = mirror.verification_target(h, slot)
        if target is None or mirror.phase not in (_core.Phase.RoundTrain, _core.Phase.RoundWitness):
            continue
        ix = svm.p.report(m.keypair.pubkey(), *svm.accounts, target)
        svm.member("report", m.keypair, ix)
        assert mirror.report(m.wallet, target, svm.now) is True
        svm.check()
        assert mirror.client(target).state == _core.ClientState.Ejected
        # A second report of the same target by the same verifier is refused.
        assert svm.fails(m.keypair, [ix]) in ("DuplicateReport", "NotHealthy", "NotVerifier")
        reported = True
        break
    assert reported
    unchanged(svm)

    # A member that is not a verifier cannot report.
    for m in members:
        slot = mirror.find_client(m.wallet)
        assert slot is not None
        if (
            mirror.client(slot).state == _core.ClientState.Healthy
            and mirror.verification_target(h, slot) is None
        ):
            ix = svm.p.report(m.keypair.pubkey(), *svm.accounts, 0)
            assert svm.fails(m.keypair, [ix]) in ("NotVerifier", "NotAssigned")
            break

    # One witness goes silent: once its round is final the driver's health checks drop it.
    # (Every member is a witness: 6 witnesses, quorum 4, so the round still reaches quorum
    # without the ejected client and the silent one, and the silent one missed a witness duty.)
    silent = next(
        m
        for m in members
        if (slot := mirror.find_client(m.wallet)) is not None
        and mirror.client(slot).state == _core.ClientState.Healthy
        and mirror.roles(h, slot) & 2
        and slot not in {sub.client for sub in mirror.round(h).submissions}
    )
    driver.silent.add(silent.wallet)
    start = mirror.height
    while (
        mirror.phase in (_core.Phase.RoundTrain, _core.Phase.RoundWitness, _core.Phase.Cooldown)
        and mirror.height < start + 3
    ):
        driver.step()
        slot = mirror.find_client(silent.wallet)
        if slot is not None and mirror.client(slot).state == _core.ClientState.Dropped:
            break
    slot = mirror.find_client(silent.wallet)
    assert slot is not None and mirror.client(slot).state == _core.ClientState.Dropped
    assert svm.cu["health_check"] > 0
    svm.check()


# ---------------------------------------------------------------------------------- rejections


def test_wrong_signer(svm: Svm) -> None:
    svm.create_run(FAST)
    intruder = svm.funded()
    pause = svm.p.set_paused(intruder.pubkey(), *svm.accounts, False)
    assert svm.fails(intruder, [pause]) == "Unauthorized"
    # The owner's key without its signature.
    ix = svm.p.set_paused(svm.owner.pubkey(), *svm.accounts, False)
    metas = [AccountMeta(m.pubkey, False, m.is_writable) for m in ix.accounts]
    unsigned = Instruction(ix.program_id, ix.data, metas)
    assert svm.fails(intruder, [unsigned]) == "AccountNotSigner"
    close = svm.p.close_run(intruder.pubkey(), *svm.accounts)
    assert svm.fails(intruder, [close]) == "Unauthorized"
    unchanged(svm)


def test_foreign_accounts(svm: Svm) -> None:
    """A coordinator or run owned by another program, or a run of another type, is refused."""
    svm.create_run(FAST)
    svm.set_paused(False)
    user = Member(svm)
    for address in (svm.coordinator.pubkey(), svm.run):
        real = svm.vm.get_account(address)
        assert real is not None
        svm.vm.set_account(
            address,
            Account(real.lamports, real.data, Pubkey.new_unique(), False, real.rent_epoch),
        )
        ix = svm.p.join_run(user.keypair.pubkey(), *svm.accounts, user.node_key)
        assert svm.fails(user.keypair, [ix], [user.node]) == "AccountOwnedByWrongProgram"
        svm.vm.set_account(address, real)
    # The coordinator account passed as the run (and the run as coordinator).
    run, coord = svm.accounts
    ix = svm.p.join_run(user.keypair.pubkey(), coord, run, user.node_key)
    assert svm.fails(user.keypair, [ix], [user.node]) in ("AccountDidNotDeserialize", "AccountSize")
    unchanged(svm)


def test_wrong_size_accounts(svm: Svm, coordinator: CoordinatorProgram) -> None:
    svm.create_run(FAST)
    real = svm.vm.get_account(svm.coordinator.pubkey())
    assert real is not None
    short = Account(real.lamports, real.data[:-8], real.owner, False, real.rent_epoch)
    svm.vm.set_account(svm.coordinator.pubkey(), short)
    assert svm.fails(svm.owner, [svm.p.tick(*svm.accounts)]) == "AccountSize"
    svm.vm.set_account(svm.coordinator.pubkey(), real)

    # init_run with an account of the wrong size.
    small = Keypair()
    lamports = svm.vm.minimum_balance_for_rent_exemption(1000)
    create = coordinator.create_coordinator_account(svm.owner.pubkey(), small.pubkey(), lamports)
    create = Instruction(
        create.program_id,
        create.data[:12] + (1000).to_bytes(8, "little") + create.data[20:],
        create.accounts,
    )
    run_id = bytes(Keypair().pubkey())
    init = coordinator.init_run(
        svm.owner.pubkey(), small.pubkey(), run_id, FAST, _core.ModelRef.peers()
    )
    assert svm.fails(svm.owner, [create, init], [small]) == "AccountSize"
    unchanged(svm)


def test_wrong_pda_and_mismatched_pairs(svm: Svm, coordinator: CoordinatorProgram) -> None:
    svm.create_run(FAST)
    first_run, first_coord = svm.accounts
    # init_run at an address that is not the run id's PDA.
    fresh = Keypair()
    lamports = svm.vm.minimum_balance_for_rent_exemption(COORDINATOR_SPACE)
    create = coordinator.create_coordinator_account(svm.owner.pubkey(), fresh.pubkey(), lamports)
    init = coordinator.init_run(
        svm.owner.pubkey(), fresh.pubkey(), bytes(Keypair().pubkey()), FAST, _core.ModelRef.peers()
    )
    metas = list(init.accounts)
    metas[1] = AccountMeta(coordinator.run_address(bytes(32)), False, True)
    bad = Instruction(init.program_id, init.data, metas)
    assert svm.fails(svm.owner, [create, bad], [fresh]) == "ConstraintSeeds"

    # An initialized coordinator account cannot be re-used for another run.
    again = coordinator.init_run(
        svm.owner.pubkey(), first_coord, bytes(Keypair().pubkey()), FAST, _core.ModelRef.peers()
    )
    assert svm.fails(svm.owner, [again], [svm.coordinator]) == "AccountNotZeroed"

    # A second run; its run PDA with the first run's coordinator (and vice versa).
    first_mirror = svm.mirror
    first_keypair = svm.coordinator
    svm.create_run(FAST)
    second_run, second_coord = svm.accounts
    for run, coord in ((first_run, second_coord), (second_run, first_coord)):
        assert svm.fails(svm.owner, [coordinator.tick(run, coord)]) == "CoordinatorMismatch"
    svm.check()
    svm.mirror, svm.coordinator, svm.run = first_mirror, first_keypair, first_run
    svm.check()


def test_slot_hashes_must_be_the_sysvar(svm: Svm) -> None:
    svm.create_run(FAST)
    ix = svm.p.tick(*svm.accounts)
    metas = list(ix.accounts)
    metas[2] = AccountMeta(Pubkey.new_unique(), False, False)
    assert (
        svm.fails(svm.owner, [Instruction(ix.program_id, ix.data, metas)])
        == "AccountSysvarMismatch"
    )
    unchanged(svm)


def test_replayed_witness_and_non_witnesses(svm: Svm) -> None:
    driver, members = in_round(svm, 5)
    mirror = driver.mirror
    h = mirror.height
    committee = mirror.committee(h)
    witnesses = {slot for slot, roles in committee if roles & 2}
    by_slot = {mirror.find_client(m.wallet): m for m in members}
    w_slot = next(iter(witnesses))
    w = by_slot[w_slot]
    pos = mirror.position_of(h, w_slot)
    assert pos is not None
    blank = bytes(320)
    ix = svm.p.witness(w.keypair.pubkey(), *svm.accounts, pos, blank, blank)
    svm.member("witness", w.keypair, ix)
    mirror.witness(w.wallet, pos, blank, blank, svm.now)
    svm.check()
    # The same submission again (a new transaction: fresh blockhash) is a duplicate.
    assert svm.fails(w.keypair, [ix]) == "DuplicateWitness"

    non = next(m for s, m in by_slot.items() if s not in witnesses)
    non_slot = mirror.find_client(non.wallet)
    assert non_slot is not None
    non_pos = mirror.position_of(h, non_slot)
    assert non_pos is not None
    ix = svm.p.witness(non.keypair.pubkey(), *svm.accounts, non_pos, blank, blank)
    assert svm.fails(non.keypair, [ix]) == "NotWitness"
    # Claiming another witness's position is a bad proof.
    ix = svm.p.witness(non.keypair.pubkey(), *svm.accounts, pos, blank, blank)
    assert svm.fails(non.keypair, [ix]) == "BadProof"
    # A wallet that never joined.
    stranger = svm.funded()
    ix = svm.p.witness(stranger.pubkey(), *svm.accounts, pos, blank, blank)
    assert svm.fails(stranger, [ix]) == "UnknownClient"
    unchanged(svm)


def test_oversize_and_malformed_payloads(svm: Svm) -> None:
    driver, members = in_round(svm, 4)
    m = members[0]
    ix = svm.p.witness(m.keypair.pubkey(), *svm.accounts, 0, bytes(320), bytes(320))
    for data in (bytes(ix.data) + b"\0", bytes(ix.data)[:-1], bytes(ix.data)[:5]):
        bad = Instruction(ix.program_id, data, ix.accounts)
        expected = "InstructionMissing" if len(data) < 8 else "InstructionDidNotDeserialize"
        assert svm.fails(m.keypair, [bad]) == expected
    pause = svm.p.set_paused(svm.owner.pubkey(), *svm.accounts, True)
    bad_bool = Instruction(pause.program_id, bytes(pause.data)[:-1] + b"\x02", pause.accounts)
    assert svm.fails(svm.owner, [bad_bool]) == "InstructionDidNotDeserialize"
    unknown = Instruction(pause.program_id, bytes(8), pause.accounts)
    assert svm.fails(svm.owner, [unknown]) == "InstructionFallbackNotFound"
    few = Instruction(ix.program_id, ix.data, ix.accounts[:2])
    assert svm.fails(m.keypair, [few]) == "AccountNotEnoughKeys"
    unchanged(svm)


def test_close_only_when_halted(svm: Svm) -> None:
    in_round(svm, 3)
    close = svm.p.close_run(svm.owner.pubkey(), *svm.accounts)
    assert svm.fails(svm.owner, [close]) == "RunNotHalted"
    unchanged(svm)
    svm.set_paused(True)
    svm.ok("close_run", svm.owner, [close])
    assert closed(svm, svm.coordinator.pubkey())
    assert closed(svm, svm.run)


def test_no_panic_on_random_payloads(svm: Svm) -> None:
    """Random argument bytes (every length up to the largest payload + 8) for every instruction,
    sent by a stranger with the right accounts, each end in a named error — never a panic, an
    access violation or a state change."""
    in_round(svm, 3)
    rng = random.Random(4)
    stranger = svm.funded()
    template = svm.p.witness(stranger.pubkey(), *svm.accounts, 0, bytes(320), bytes(320))
    names = set()
    for name in ("witness", "join_run", "withdraw", "health_check", "report", "checkpoint"):
        tag = svm.p.program.coder.instruction.sighashes[name]
        for length in (0, 1, 2, 6, 31, 32, 33, 319, 320, 321, 659, 660, 661, 700):
            if name == "join_run" and length == 32:
                continue  # a well-formed join by a new wallet is legitimate
            data = tag + bytes(rng.getrandbits(8) for _ in range(length))
            accounts = list(template.accounts)
            if name == "join_run":  # user, authorizer, run, coordinator, slot_hashes
                accounts.insert(1, AccountMeta(stranger.pubkey(), True, False))
            names.add(svm.fails(stranger, [Instruction(template.program_id, data, accounts)]))
    assert names <= {
        "InstructionDidNotDeserialize",
        "UnknownClient",
        "InvalidKey",
        "InvalidModelRef",
        "WrongPhase",
        "Full",
    }, names
    unchanged(svm)


def test_corrupted_state_is_refused_without_panic(svm: Svm) -> None:
    """Random bytes in the coordinator's state (header intact) are refused with a named error."""
    svm.create_run(FAST)
    real = svm.vm.get_account(svm.coordinator.pubkey())
    assert real is not None
    rng = random.Random(7)
    for version in (1, 2):
        state = bytearray(rng.getrandbits(8) for _ in range(_core.STATE_SIZE))
        state[0:4] = version.to_bytes(4, "little")
        data = bytes(real.data[:40]) + bytes(state)
        svm.vm.set_account(
            svm.coordinator.pubkey(),
            Account(real.lamports, data, real.owner, False, real.rent_epoch),
        )
        name = svm.fails(svm.owner, [svm.p.tick(*svm.accounts)])
        assert name == ("InvalidState" if version == 1 else "VersionMismatch")
    svm.vm.set_account(svm.coordinator.pubkey(), real)
    svm.tick()


def test_witness_transaction_fits_one_packet(svm: Svm) -> None:
    """A witness with both compute-budget instructions stays within 1,232 bytes, and runs."""
    driver, members = in_round(svm, 4)
    mirror = driver.mirror
    h = mirror.height
    slot, _roles = next((s, r) for s, r in mirror.committee(h) if r & 2)
    m = next(m for m in members if mirror.find_client(m.wallet) == slot)
    pos = mirror.position_of(h, slot)
    assert pos is not None
    filters = bytes([0xFF]) * 320
    ixs = [
        set_compute_unit_limit(60_000),
        set_compute_unit_price(1),
        svm.p.witness(m.keypair.pubkey(), *svm.accounts, pos, filters, filters),
    ]
    svm.vm.expire_blockhash()
    message = Message.new_with_blockhash(ixs, m.keypair.pubkey(), svm.vm.latest_blockhash())
    tx = VersionedTransaction(message, [m.keypair])
    size = len(bytes(tx))
    print(f"witness transaction: {size} bytes")
    assert size <= 1232
    svm.ok("witness", m.keypair, ixs)
    svm.mirror_tick()
    mirror.witness(m.wallet, pos, filters, filters, svm.now)
    svm.check()


def test_peer_directory(svm: Svm) -> None:
    """advertise creates the wallet's peer PDA with its registered node key; it can be replaced
    and closed only by that wallet; strangers, oversize addresses and wrong PDAs are refused."""
    members = joined(svm, 3)
    m = members[0]
    run, coord = svm.accounts
    user = m.keypair.pubkey()
    addr = "/ip4/10.0.0.1/tcp/4001"
    svm.ok("advertise", m.keypair, [svm.p.advertise(user, run, coord, addr, "10.0.0.1:5000")])
    peer_address = svm.p.peer_address(run, user)
    info = svm.vm.get_account(peer_address)
    assert info is not None and info.owner == svm.p.program_id
    entry = svm.p.decode_peer(bytes(info.data))
    assert (entry.wallet, entry.node_key) == (m.wallet, m.node_key)
    assert (entry.p2p_addr, entry.fast_addr) == (addr, "10.0.0.1:5000")
    assert entry.run == run and entry.updated_at == svm.now

    # Replace (shorter addresses: no stale bytes remain).
    svm.ok("advertise", m.keypair, [svm.p.advertise(user, run, coord, "/ip4/1.2.3.4", "")])
    info = svm.vm.get_account(peer_address)
    assert info is not None
    entry = svm.p.decode_peer(bytes(info.data))
    assert (entry.p2p_addr, entry.fast_addr) == ("/ip4/1.2.3.4", "")
    assert bytes(info.data).count(b"10.0.0.1") == 0

    stranger = svm.funded()
    ix = svm.p.advertise(stranger.pubkey(), run, coord, addr, addr)
    assert svm.fails(stranger, [ix]) == "UnknownClient"
    ix = svm.p.advertise(user, run, coord, "x" * 129, "")
    assert svm.fails(m.keypair, [ix]) == "InvalidAddress"
    other = members[1]
    ix = svm.p.advertise(other.keypair.pubkey(), run, coord, addr, addr)
    metas = list(ix.accounts)
    metas[3] = AccountMeta(peer_address, False, True)  # someone else's entry
    bad = Instruction(ix.program_id, ix.data, metas)
    assert svm.fails(other.keypair, [bad]) == "ConstraintSeeds"

    # A pre-funded PDA (griefing) does not block the entry.
    third = members[2]
    third_peer = svm.p.peer_address(run, third.keypair.pubkey())
    svm.vm.airdrop(third_peer, 1_000)
    svm.ok(
        "advertise", third.keypair, [svm.p.advertise(third.keypair.pubkey(), run, coord, addr, "")]
    )
    info = svm.vm.get_account(third_peer)
    assert info is not None and info.owner == svm.p.program_id

    close = svm.p.close_peer(other.keypair.pubkey(), run)
    metas = [close.accounts[0], AccountMeta(peer_address, False, True)]
    assert svm.fails(other.keypair, [Instruction(close.program_id, close.data, metas)]) == (
        "Unauthorized"
    )
    before = svm.vm.get_balance(user)
    rent = svm.vm.get_balance(peer_address)
    svm.ok("close_peer", m.keypair, [svm.p.close_peer(user, run)])
    assert svm.vm.get_balance(user) == before + rent - 5000
    assert closed(svm, peer_address)
    unchanged(svm)


def test_prefunded_run_address_does_not_block_init(svm: Svm) -> None:
    """Sending lamports to a run id's PDA before it exists cannot stop the run's creation."""
    run_id = bytes([42]) * 32
    svm.vm.airdrop(svm.p.run_address(run_id), 12_345)
    svm.create_run(FAST, run_id=run_id)
    info = svm.vm.get_account(svm.run)
    assert info is not None and info.owner == svm.p.program_id
    assert info.lamports == svm.vm.minimum_balance_for_rent_exemption(RUN_SPACE)
    svm.set_paused(False)


def test_pause_mid_epoch_requeues_and_the_run_still_finishes(svm: Svm) -> None:
    """Pausing in round 1 aborts the epoch (its data is requeued, as the core says); after
    resume the run trains it again and finishes."""
    driver, _members = in_round(svm, 4)
    mirror = driver.mirror
    while mirror.height < 1:
        driver.step()
    svm.set_paused(True)
    assert mirror.phase == _core.Phase.Paused
    assert mirror.requeue(), "the aborted rounds' data is requeued"
    svm.set_paused(False)
    driver.run_until(_core.Phase.Finished)
    state = svm.check()
    assert state.steps_done == FAST.total_steps
    assert state.requeue() == []
    assert state.lost_samples == 0
