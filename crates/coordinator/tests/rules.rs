//! One test (or a few) per protocol rule. See docs/protocol.md.

mod common;
use common::*;
use psyche_core::derive::{
    assignment, verification_target, verifier_count, Committee, Seated, ROLE_TRAINER,
    ROLE_VERIFIER, ROLE_WITNESS,
};
use psyche_core::*;

// ------------------------------------------------------------------ config

#[test]
fn default_config_is_valid() {
    Config::default().validate().expect("defaults validate");
}

type Mutation = fn(&mut Config);

#[test]
fn config_validation_names_the_field() {
    let cases: Vec<(Mutation, CoreError)> = vec![
        (|c| c.max_clients = 0, CoreError::ConfigMaxClients),
        (
            |c| c.max_clients = MAX_CLIENTS as u16 + 1,
            CoreError::ConfigMaxClients,
        ),
        (|c| c.min_clients = 0, CoreError::ConfigMinClients),
        (
            |c| c.min_clients = c.max_clients + 1,
            CoreError::ConfigMinClients,
        ),
        (|c| c.witnesses_per_round = 0, CoreError::ConfigWitnesses),
        (
            |c| c.witnesses_per_round = MAX_WITNESSES as u16 + 1,
            CoreError::ConfigWitnesses,
        ),
        (|c| c.witness_quorum_pct = 0, CoreError::ConfigQuorum),
        (|c| c.witness_quorum_pct = 101, CoreError::ConfigQuorum),
        (|c| c.verification_pct = 51, CoreError::ConfigVerification),
        (|c| c.verifiers_per_target = 0, CoreError::ConfigEjection),
        (|c| c.eject_reports = 2, CoreError::ConfigEjection),
        (|c| c.warmup_secs = 0, CoreError::ConfigTimes),
        (
            |c| c.witness_grace_secs = c.max_round_train_secs,
            CoreError::ConfigTimes,
        ),
        (|c| c.rounds_per_epoch = 0, CoreError::ConfigSteps),
        (|c| c.total_steps = 0, CoreError::ConfigSteps),
        (|c| c.batch_size_start = 0, CoreError::ConfigBatch),
        (
            |c| c.batch_size_end = config::MAX_BATCH_SIZE + 1,
            CoreError::ConfigBatch,
        ),
    ];
    for (mutate, want) in cases {
        let mut c = Config::default();
        mutate(&mut c);
        assert_eq!(c.validate(), Err(want));
        assert!(CoreError::from_code(want.code()) == Some(want));
    }
}

#[test]
fn batch_size_ramps_linearly_then_holds() {
    let c = Config {
        batch_size_start: 10,
        batch_size_end: 110,
        batch_ramp_steps: 10,
        ..Config::default()
    };
    assert_eq!(c.batch_size_at(0), 10);
    assert_eq!(c.batch_size_at(5), 60);
    assert_eq!(c.batch_size_at(10), 110);
    assert_eq!(c.batch_size_at(1_000_000), 110);
    let mut last = 0;
    for s in 0..12 {
        let b = c.batch_size_at(s);
        assert!(b >= last);
        last = b;
    }
    let down = Config {
        batch_size_start: 100,
        batch_size_end: 50,
        batch_ramp_steps: 5,
        ..Config::default()
    };
    assert_eq!(down.batch_size_at(0), 100);
    assert_eq!(down.batch_size_at(5), 50);
}

#[test]
fn quorum_rounds_up_and_is_at_least_one() {
    assert_eq!(Config::quorum_for(67, 3), 3);
    assert_eq!(Config::quorum_for(67, 8), 6);
    assert_eq!(Config::quorum_for(50, 8), 4);
    assert_eq!(Config::quorum_for(1, 1), 1);
    assert_eq!(Config::quorum_for(100, 16), 16);
}

// ------------------------------------------------------------------ lifecycle

#[test]
fn init_starts_paused_and_rejects_bad_config_or_model() {
    let mut s: Box<State> = bytemuck::zeroed_box();
    let bad = Config {
        min_clients: 0,
        ..fast_config()
    };
    assert_eq!(
        s.init(&[1; 32], &bad, &model(), T0),
        Err(CoreError::ConfigMinClients)
    );
    let mut m = model();
    m.kind = 9;
    assert_eq!(
        s.init(&[1; 32], &fast_config(), &m, T0),
        Err(CoreError::InvalidModelRef)
    );
    assert_eq!(s.check(), Err(CoreError::InvalidState));
    s.init(&[1; 32], &fast_config(), &model(), T0)
        .expect("init");
    assert_eq!(phase(&s), Phase::Paused);
    assert_eq!(s.version, STATE_VERSION);
    assert_eq!(s.resume(T0), Ok(()));
    assert_eq!(s.resume(T0), Err(CoreError::NotPaused));
    assert_eq!(phase(&s), Phase::WaitingForMembers);
}

#[test]
fn model_refs_validate() {
    assert!(ModelRef::new(ModelKind::Peers, b"", b"").is_ok());
    assert!(ModelRef::new(ModelKind::Peers, b"x", b"").is_err());
    assert!(ModelRef::new(ModelKind::HttpUrl, b"https://example.org/ckpt", b"").is_ok());
    assert!(ModelRef::new(ModelKind::HttpUrl, b"ftp://example.org", b"").is_err());
    assert!(ModelRef::new(ModelKind::LocalPath, b"/data/ckpt", b"").is_ok());
    assert!(ModelRef::new(ModelKind::LocalPath, b"", b"").is_err());
    assert!(ModelRef::new(ModelKind::HuggingFace, b"org/m", b"abc123").is_ok());
    assert!(ModelRef::new(ModelKind::HuggingFace, &[b'a'; 249], b"").is_err());
    assert!(ModelRef::new(ModelKind::LocalPath, &[0xff, 0xfe], b"").is_err());
    let m = ModelRef::new(ModelKind::HuggingFace, b"org/m", b"rev").expect("ok");
    assert_eq!(m.location_str(), "org/m");
    assert_eq!(m.revision_str(), "rev");
}

#[test]
fn nonce_bumps_on_every_change_and_errors_change_nothing() {
    let mut s = new_run(&fast_config());
    let n0 = s.nonce;
    s.join(&wallet(0), &node_key(0), T0).expect("join");
    assert_eq!(s.nonce, n0 + 1);
    let before = s.as_bytes().to_vec();
    assert_eq!(
        s.join(&wallet(0), &node_key(9), T0 + 1),
        Err(CoreError::DuplicateClient)
    );
    assert_eq!(s.as_bytes(), &before[..]);
    assert_eq!(s.tick(T0 + 1, &rand32(1)), Ok(TickOutcome::Idle));
    assert_eq!(s.as_bytes(), &before[..]);
}

// ------------------------------------------------------------------ joining

#[test]
fn join_rejects_duplicates_zero_keys_and_full() {
    let cfg = Config {
        max_clients: 3,
        min_clients: 1,
        ..fast_config()
    };
    let mut s = new_run(&cfg);
    assert_eq!(
        s.join(&[0; 32], &node_key(0), T0),
        Err(CoreError::InvalidKey)
    );
    assert_eq!(s.join(&wallet(0), &[0; 32], T0), Err(CoreError::InvalidKey));
    assert_eq!(s.join(&wallet(0), &node_key(0), T0), Ok(0));
    assert_eq!(
        s.join(&wallet(0), &node_key(1), T0),
        Err(CoreError::DuplicateClient)
    );
    assert_eq!(
        s.join(&wallet(1), &node_key(0), T0),
        Err(CoreError::DuplicateClient)
    );
    assert_eq!(s.join(&wallet(1), &node_key(1), T0), Ok(1));
    assert_eq!(s.join(&wallet(2), &node_key(2), T0), Ok(2));
    assert_eq!(s.join(&wallet(3), &node_key(3), T0), Err(CoreError::Full));
    assert_eq!(s.count_state(ClientState::Healthy), 3);
}

#[test]
fn joins_during_an_epoch_wait_for_the_next_and_leavers_free_their_slot() {
    let cfg = Config {
        max_clients: 3,
        ..fast_config()
    };
    let mut s = run_with(&cfg, 3);
    let now = start_epoch(&mut s, T0);
    // Cap reached: nobody else may register.
    assert_eq!(s.join(&wallet(5), &node_key(5), now), Err(CoreError::Full));
    // A member leaves: its place in the next epoch can be taken now (pending).
    s.withdraw(&wallet(1), now).expect("withdraw");
    assert_eq!(s.clients[1].client_state(), Some(ClientState::Withdrawn));
    let slot = s.join(&wallet(5), &node_key(5), now).expect("pending join");
    assert_eq!(s.clients[slot].client_state(), Some(ClientState::Pending));
    assert_eq!(s.join(&wallet(6), &node_key(6), now), Err(CoreError::Full));
    // The pending client has no role in the running epoch.
    let c = Committee::compute(s.round(0).expect("round"));
    assert!(c.position_of(slot).is_none());
    // Run the epoch to its end.
    let mut now = now;
    while phase(&s) != Phase::WaitingForMembers {
        if phase(&s) == Phase::Cooldown {
            now = tick_until_change(&mut s, now, 100);
        } else {
            now = honest_round(&mut s, now);
        }
    }
    assert_eq!(s.progress.epoch, 1);
    assert_eq!(s.clients[1].client_state(), Some(ClientState::Empty));
    assert_eq!(s.clients[slot].client_state(), Some(ClientState::Healthy));
    assert_eq!(s.count_state(ClientState::Healthy), 3);
}

#[test]
fn withdraw_outside_an_epoch_frees_at_once() {
    let mut s = run_with(&fast_config(), 2);
    s.withdraw(&wallet(0), T0).expect("withdraw");
    assert_eq!(s.clients[0].client_state(), Some(ClientState::Empty));
    assert_eq!(s.withdraw(&wallet(0), T0), Err(CoreError::UnknownClient));
}

#[test]
fn finished_run_refuses_joins() {
    let cfg = Config {
        total_steps: 1,
        rounds_per_epoch: 1,
        ..fast_config()
    };
    let mut s = run_with(&cfg, 2);
    let mut now = start_epoch(&mut s, T0);
    while phase(&s) != Phase::Finished {
        now = if phase(&s) == Phase::Cooldown {
            tick_until_change(&mut s, now, 100)
        } else {
            honest_round(&mut s, now)
        };
    }
    assert_eq!(
        s.join(&wallet(9), &node_key(9), now),
        Err(CoreError::RunFinished)
    );
    assert_eq!(s.progress.step, 1);
}

// ------------------------------------------------------------------ waiting and warmup

#[test]
fn waiting_needs_min_clients_then_the_extra_wait() {
    let cfg = fast_config();
    let mut s = run_with(&cfg, 1);
    assert_eq!(s.tick(T0 + 100, &rand32(0)), Ok(TickOutcome::Idle));
    s.join(&wallet(1), &node_key(1), T0 + 100).expect("join");
    assert_eq!(s.tick(T0 + 100, &rand32(0)), Ok(TickOutcome::Updated));
    assert_eq!(s.min_reached_at, T0 + 100);
    assert_eq!(s.tick(T0 + 104, &rand32(0)), Ok(TickOutcome::Idle));
    assert_eq!(s.tick(T0 + 105, &rand32(0)), Ok(TickOutcome::Transitioned));
    assert_eq!(phase(&s), Phase::Warmup);
}

#[test]
fn waiting_ends_at_once_when_the_cap_is_reached() {
    let cfg = Config {
        max_clients: 2,
        ..fast_config()
    };
    let mut s = run_with(&cfg, 2);
    assert_eq!(s.tick(T0, &rand32(0)), Ok(TickOutcome::Transitioned));
    assert_eq!(phase(&s), Phase::Warmup);
}

#[test]
fn members_leaving_reset_the_waiting_timer() {
    let mut s = run_with(&fast_config(), 2);
    s.tick(T0, &rand32(0)).expect("tick");
    assert_ne!(s.min_reached_at, 0);
    s.withdraw(&wallet(0), T0 + 1).expect("withdraw");
    assert_eq!(s.tick(T0 + 2, &rand32(0)), Ok(TickOutcome::Updated));
    assert_eq!(s.min_reached_at, 0);
}

#[test]
fn warmup_drops_clients_that_never_got_ready() {
    let mut s = run_with(&fast_config(), 3);
    let now = tick_until_change(&mut s, T0, 100);
    assert_eq!(phase(&s), Phase::Warmup);
    s.warmup_witness(&wallet(0), now).expect("ready");
    assert_eq!(
        s.warmup_witness(&wallet(0), now),
        Err(CoreError::DuplicateWitness)
    );
    s.warmup_witness(&wallet(1), now).expect("ready");
    assert_eq!(
        s.warmup_witness(&wallet(7), now),
        Err(CoreError::UnknownClient)
    );
    assert_eq!(s.tick(now + 9, &rand32(1)), Ok(TickOutcome::Idle));
    assert_eq!(s.tick(now + 10, &rand32(1)), Ok(TickOutcome::Transitioned));
    assert_eq!(phase(&s), Phase::RoundTrain);
    assert_eq!(s.clients[2].client_state(), Some(ClientState::Dropped));
    assert_eq!(s.round(0).expect("r0").member_count, 2);
}

#[test]
fn warmup_with_too_few_ready_goes_back_to_waiting() {
    let mut s = run_with(&fast_config(), 2);
    let now = tick_until_change(&mut s, T0, 100);
    s.warmup_witness(&wallet(0), now).expect("ready");
    s.tick(now + 10, &rand32(1)).expect("tick");
    assert_eq!(phase(&s), Phase::WaitingForMembers);
    assert_eq!(s.count_state(ClientState::Healthy), 1);
    assert_eq!(s.progress.step, 0);
    assert_eq!(s.progress.data_index, 0);
}

#[test]
fn warmup_witness_outside_warmup_is_wrong_phase() {
    let mut s = run_with(&fast_config(), 2);
    assert_eq!(s.warmup_witness(&wallet(0), T0), Err(CoreError::WrongPhase));
}

// ------------------------------------------------------------------ committee and data

#[test]
fn committee_is_a_permutation_of_the_members_with_disjoint_roles() {
    let cfg = Config {
        verification_pct: 20,
        witnesses_per_round: 4,
        max_clients: 64,
        ..fast_config()
    };
    let mut s = run_with(&cfg, 20);
    start_epoch(&mut s, T0);
    let r = s.round(0).expect("round");
    let c = Committee::compute(r);
    assert_eq!(c.n, 20);
    assert_eq!(c.witnesses, 4);
    assert_eq!(c.verifiers, verifier_count(&cfg, 20));
    assert_eq!(c.verifiers, 4);
    let mut seen = [false; MAX_CLIENTS];
    for p in 0..c.n {
        let slot = c.slot_at(p).expect("slot");
        assert!(!seen[slot]);
        seen[slot] = true;
        assert_eq!(c.position_of(slot), Some(p));
        let roles = c.roles_at(p);
        assert!((roles & ROLE_TRAINER == 0) != (roles & ROLE_VERIFIER == 0));
        assert_eq!(roles & ROLE_WITNESS != 0, p < 4);
    }
    assert_eq!(seen.iter().filter(|x| **x).count(), 20);
    assert!(c.slot_at(20).is_none());
    // Same seed, same committee.
    let again = Committee::compute(r);
    assert_eq!(&again.slots[..20], &c.slots[..20]);
}

#[test]
fn committee_shuffle_is_close_to_uniform() {
    // Position 0 over many seeds: each of 8 members should get it about 1/8 of the time.
    let mut s = run_with(&fast_config(), 8);
    start_epoch(&mut s, T0);
    let mut r = *s.round(0).expect("round");
    let trials = 4000u32;
    let mut counts = [0u32; 8];
    for t in 0..trials {
        r.seed = rand32(t as u64 + 77);
        let c = Committee::compute(&r);
        counts[c.slot_at(0).expect("slot")] += 1;
    }
    let expect = trials / 8;
    for c in counts {
        assert!(
            c > expect * 3 / 4 && c < expect * 5 / 4,
            "counts {counts:?}"
        );
    }
}

#[test]
fn every_sample_is_assigned_exactly_once() {
    for (members, batch) in [(3u32, 16u32), (7, 32), (5, 3), (8, 100)] {
        let cfg = Config {
            batch_size_start: batch,
            batch_size_end: batch,
            verification_pct: 25,
            ..fast_config()
        };
        let mut s = run_with(&cfg, members);
        start_epoch(&mut s, T0);
        let r = s.round(0).expect("round");
        let c = Committee::compute(r);
        let mut covered = vec![0u32; batch as usize];
        for p in 0..c.n {
            if let Some((lo, hi)) = assignment(r, c.trainers(), p) {
                assert!(c.roles_at(p) & ROLE_TRAINER != 0);
                for i in lo..hi {
                    covered[(i - r.data_index) as usize] += 1;
                }
            }
        }
        assert!(
            covered.iter().all(|x| *x == 1),
            "members {members} batch {batch}: {covered:?}"
        );
        assert_eq!(s.progress.data_index, batch as u64);
    }
}

#[test]
fn rounds_advance_data_and_step_and_the_epoch_drains() {
    let cfg = fast_config();
    let mut s = run_with(&cfg, 4);
    let mut now = start_epoch(&mut s, T0);
    let mut expected_index = 0u64;
    for h in 0..cfg.rounds_per_epoch {
        let r = s.round(h).expect("round");
        assert_eq!(r.kind, RoundKind::Data as u8);
        assert_eq!(r.data_index, expected_index);
        assert_eq!(r.step, h as u64);
        // The ramp follows applied steps: at round h's start rounds 0..h-2 are applied.
        assert_eq!(r.batch_size, cfg.batch_size_at(h.saturating_sub(1) as u64));
        expected_index += r.batch_size as u64;
        now = honest_round(&mut s, now);
    }
    // Drain round: no data, witnesses attest the last data round.
    let h = cfg.rounds_per_epoch;
    let drain = s.round(h).expect("drain");
    assert_eq!(drain.kind, RoundKind::Drain as u8);
    assert_eq!(drain.batch_size, 0);
    assert_eq!(s.progress.data_index, expected_index);
    now = honest_round(&mut s, now);
    assert_eq!(phase(&s), Phase::Cooldown);
    // The last data round's results are final and complete: nothing lost at epoch end.
    let last = cfg.rounds_per_epoch - 1;
    let mut cands = candidates(&s, last);
    let n = cands.len();
    assert_eq!(apply_set(&s, last, &mut cands), Ok(n));
    let ck = s.checkpointer().expect("a designated checkpointer");
    let ck_wallet = s.clients[ck].wallet;
    s.checkpoint(
        &ck_wallet,
        &ModelRef::new(ModelKind::HuggingFace, b"org/m", b"epoch0").expect("m"),
        now,
    )
    .expect("checkpoint");
    assert_eq!(
        s.checkpoint(&ck_wallet, &model(), now),
        Err(CoreError::AlreadyCheckpointed)
    );
    assert_eq!(s.model.revision_str(), "epoch0");
    tick_until_change(&mut s, now, 100);
    assert_eq!(phase(&s), Phase::WaitingForMembers);
    assert_eq!(s.progress.epoch, 1);
    assert_eq!(s.progress.epochs_completed, 1);
    assert_eq!(s.progress.step, cfg.rounds_per_epoch as u64);
}

/// The honest candidates of data round `h` (every trainer with data).
fn candidates(s: &State, h: u32) -> Vec<Candidate> {
    let r = s.round(h).expect("round");
    let c = Committee::compute(r);
    (0..c.trainers())
        .filter_map(|p| {
            let (lo, _) = assignment(r, c.trainers(), p)?;
            let slot = c.slot_at(p)?;
            Some(Candidate::new(
                lo,
                slot as u16,
                commitment(s.progress.epoch, h, slot),
            ))
        })
        .collect()
}

// ------------------------------------------------------------------ witnesses

#[test]
fn witness_proofs_are_checked() {
    let cfg = Config {
        witnesses_per_round: 2,
        ..fast_config()
    };
    let mut s = run_with(&cfg, 5);
    let now = start_epoch(&mut s, T0);
    let c = Committee::compute(s.round(0).expect("round"));
    let w0 = c.slot_at(0).expect("w0");
    let w1 = c.slot_at(1).expect("w1");
    let other = c.slot_at(3).expect("other");
    let (a, b) = (Bloom::new(), Bloom::new());
    let wal = |slot: usize| s.clients[slot].wallet;
    let (ww0, ww1, wo) = (wal(w0), wal(w1), wal(other));
    assert_eq!(
        s.witness(&ww0, &wi(1, &a, &b), now),
        Err(CoreError::BadProof)
    );
    assert_eq!(
        s.witness(&wo, &wi(3, &a, &b), now),
        Err(CoreError::NotWitness)
    );
    assert_eq!(
        s.witness(&wo, &wi(9, &a, &b), now),
        Err(CoreError::IndexOutOfRange)
    );
    assert_eq!(
        s.witness(&wallet(99), &wi(0, &a, &b), now),
        Err(CoreError::UnknownClient)
    );
    s.witness(&ww0, &wi(0, &a, &b), now).expect("ok");
    assert_eq!(
        s.witness(&ww0, &wi(0, &a, &b), now),
        Err(CoreError::DuplicateWitness)
    );
    assert_eq!(s.round(0).expect("r").quorum_at, 0);
    s.witness(&ww1, &wi(1, &a, &b), now).expect("ok");
    assert_eq!(s.round(0).expect("r").quorum_at, now);
    assert_eq!(s.round(0).expect("r").submissions_len, 2);
}

#[test]
fn quorum_ends_training_early_after_the_grace_period() {
    let cfg = fast_config();
    let mut s = run_with(&cfg, 4);
    let now = start_epoch(&mut s, T0);
    all_witness(&mut s, now + 3);
    assert_eq!(s.tick(now + 4, &rand32(1)), Ok(TickOutcome::Idle));
    assert_eq!(s.tick(now + 5, &rand32(1)), Ok(TickOutcome::Transitioned));
    assert_eq!(phase(&s), Phase::RoundWitness);
    // Every witness already submitted: the witness phase ends at the next tick.
    assert_eq!(s.tick(now + 5, &rand32(2)), Ok(TickOutcome::Transitioned));
    assert_eq!(s.progress.height, 1);
}

#[test]
fn without_quorum_training_runs_to_its_limit() {
    let cfg = fast_config();
    let mut s = run_with(&cfg, 4);
    let now = start_epoch(&mut s, T0);
    assert_eq!(s.tick(now + 29, &rand32(1)), Ok(TickOutcome::Idle));
    assert_eq!(s.tick(now + 30, &rand32(1)), Ok(TickOutcome::Transitioned));
    assert_eq!(phase(&s), Phase::RoundWitness);
    assert_eq!(s.tick(now + 34, &rand32(1)), Ok(TickOutcome::Idle));
    assert_eq!(s.tick(now + 35, &rand32(1)), Ok(TickOutcome::Transitioned));
    assert_eq!(phase(&s), Phase::RoundTrain);
}

// ------------------------------------------------------------------ apply set

#[test]
fn apply_set_takes_majority_attested_results_in_batch_order() {
    let mut s = run_with(&fast_config(), 5);
    let mut now = start_epoch(&mut s, T0);
    now = honest_round(&mut s, now); // round 0 trained
                                     // Round 1: witnesses attest round 0 results; still open.
    let mut cands = candidates(&s, 0);
    assert_eq!(apply_set(&s, 0, &mut cands), Err(CoreError::RoundNotFinal));
    all_witness(&mut s, now);
    finish_round(&mut s, now);
    let n = cands.len();
    assert!(n > 0);
    assert_eq!(apply_set(&s, 0, &mut cands), Ok(n));
    for w in cands.windows(2) {
        assert!(w[0].batch_start < w[1].batch_start);
    }
    assert!(cands.iter().all(|c| c.accepted && c.votes == 3));
    // A commitment nobody attested is rejected; a batch claimed by the wrong trainer too.
    let mut bad = candidates(&s, 0);
    bad[0].commitment = [9; 32];
    let wrong_trainer = bad[1].trainer;
    bad[2].trainer = wrong_trainer;
    let kept = apply_set(&s, 0, &mut bad).expect("apply");
    assert_eq!(kept, n - 2);
}

#[test]
fn apply_set_tie_break_is_by_commitment_hash() {
    let cfg = Config {
        witnesses_per_round: 3,
        ..fast_config()
    };
    let mut s = run_with(&cfg, 4);
    let mut now = start_epoch(&mut s, T0);
    now = honest_round(&mut s, now);
    // The first trainer of round 0 equivocates: two commitments, both attested by all witnesses.
    let base = candidates(&s, 0);
    let cheat = base[0];
    let mut alt = cheat;
    alt.commitment = [0x01; 32];
    let c = Committee::compute(s.round(1).expect("r1"));
    for p in 0..c.witnesses {
        let (mut results, trainers) = honest_filters(&s, p);
        let salt = derive::witness_salt(s.round(1).expect("r1"), p);
        results.add_salted(&alt.commitment, salt);
        let slot = c.slot_at(p).expect("slot");
        let w = s.clients[slot].wallet;
        s.witness(&w, &wi(p, &results, &trainers), now).expect("w");
    }
    finish_round(&mut s, now);
    let mut a = base.clone();
    a.push(alt);
    let mut b = vec![alt];
    b.extend(base.iter().rev().copied());
    let na = apply_set(&s, 0, &mut a).expect("a");
    let nb = apply_set(&s, 0, &mut b).expect("b");
    assert_eq!(na, base.len());
    assert_eq!(&a[..na], &b[..nb]);
    let chosen = a[..na]
        .iter()
        .find(|x| x.batch_start == cheat.batch_start)
        .expect("batch");
    assert_eq!(chosen.commitment, cheat.commitment.min(alt.commitment));
}

#[test]
fn apply_set_needs_a_quorum_and_a_majority() {
    let cfg = Config {
        witnesses_per_round: 3,
        witness_quorum_pct: 60,
        ..fast_config()
    };
    let mut s = run_with(&cfg, 4);
    let mut now = start_epoch(&mut s, T0);
    now = honest_round(&mut s, now);
    let c = Committee::compute(s.round(1).expect("r1"));
    // One honest submission: below quorum (2 of 3).
    let (results, trainers) = honest_filters(&s, 0);
    let w0 = s.clients[c.slot_at(0).expect("s")].wallet;
    s.witness(&w0, &wi(0, &results, &trainers), now).expect("w");
    let later = tick_until_change(&mut s, now, 100);
    let later = tick_until_change(&mut s, later, 100);
    assert_eq!(s.progress.height, 2);
    let mut cands = candidates(&s, 0);
    assert_eq!(
        apply_set(&s, 0, &mut cands),
        Err(CoreError::NotEnoughWitnesses)
    );
    // Round 2: two of three submit, one of them with empty filters: 1 vote of 2 is no majority,
    // so no result of round 1 is attested: the round applies nothing and is not a step.
    let c2 = Committee::compute(s.round(2).expect("r2"));
    let (results, trainers) = honest_filters(&s, 0);
    let a = s.clients[c2.slot_at(0).expect("s")].wallet;
    let b = s.clients[c2.slot_at(1).expect("s")].wallet;
    s.witness(&a, &wi(0, &results, &trainers), later)
        .expect("w");
    s.witness(&b, &wi(1, &Bloom::new(), &Bloom::new()), later)
        .expect("w");
    tick_until_change(&mut s, later, 100);
    tick_until_change(&mut s, later, 100);
    let mut cands = candidates(&s, 1);
    assert_eq!(
        apply_set(&s, 1, &mut cands),
        Err(CoreError::NothingWitnessed)
    );
    // Trainer filters attest round 1's trainers but the result filters hold other commitments:
    // votes stay below a majority and nothing is accepted (the round still counts: its results
    // were exchanged, the witnesses disagree on which).
    let c3 = Committee::compute(s.round(3).expect("r3"));
    let mut other = Bloom::new();
    other.add_salted(&[7u8; 32], 0);
    for p in 0..2u16 {
        let w = s.clients[c3.slot_at(p).expect("s")].wallet;
        let (results, t) = honest_filters(&s, p);
        let results = if p == 0 { results } else { other };
        s.witness(&w, &wi(p, &results, &t), later).expect("w");
    }
    tick_until_change(&mut s, later, 100);
    tick_until_change(&mut s, later, 100);
    let mut cands = candidates(&s, 2);
    assert_eq!(apply_set(&s, 2, &mut cands), Ok(0));
    assert!(cands.iter().all(|c| c.votes == 1 && !c.accepted));
}

#[test]
fn a_round_nobody_received_is_trained_again_and_not_counted() {
    let cfg = Config {
        rounds_per_epoch: 6,
        total_steps: 6,
        ..fast_config()
    };
    let mut s = run_with(&cfg, 4);
    let mut now = start_epoch(&mut s, T0);
    now = honest_round(&mut s, now); // round 0
                                     // Round 1: every witness submits, but with empty filters (nothing of round 0 arrived).
    let r0 = *s.round(0).expect("r0");
    let c1 = Committee::compute(s.round(1).expect("r1"));
    for p in 0..c1.witnesses {
        let w = s.clients[c1.slot_at(p).expect("s")].wallet;
        s.witness(&w, &wi(p, &Bloom::new(), &Bloom::new()), now)
            .expect("w");
    }
    now = finish_round(&mut s, now);
    assert_eq!(s.progress.height, 2);
    assert_eq!(s.round(0).expect("r0").requeued, 1);
    let mut c = candidates(&s, 0);
    assert_eq!(apply_set(&s, 0, &mut c), Err(CoreError::NothingWitnessed));
    // Round 2 retrains round 0's span; round 0 never counts as a step.
    let r2 = *s.round(2).expect("r2");
    assert_eq!(
        (r2.data_index, r2.batch_size),
        (r0.data_index, r0.batch_size)
    );
    while phase(&s) != Phase::Cooldown {
        now = honest_round(&mut s, now);
    }
    assert_eq!(s.progress.steps_done, 5);
    assert_eq!(s.requeue_len, 0);
}

// ------------------------------------------------------------------ health

#[test]
fn health_check_drops_a_trainer_whose_result_nobody_received() {
    let cfg = Config {
        witnesses_per_round: 3,
        ..fast_config()
    };
    let mut s = run_with(&cfg, 5);
    let mut now = start_epoch(&mut s, T0);
    now = honest_round(&mut s, now);
    // Round 1: witnesses did not receive the result of one round-0 trainer.
    let r0 = Committee::compute(s.round(0).expect("r0"));
    let victim = r0.slot_at(r0.trainers() - 1).expect("victim");
    let c1 = Committee::compute(s.round(1).expect("r1"));
    for p in 0..c1.witnesses {
        let salt = derive::witness_salt(s.round(1).expect("r1"), p);
        let mut results = Bloom::new();
        let mut trainers = Bloom::new();
        for tp in 0..r0.trainers() {
            let slot = r0.slot_at(tp).expect("s");
            if slot != victim {
                results.add_salted(&commitment(0, 0, slot), salt);
                trainers.add_salted(&s.clients[slot].wallet, salt);
            }
        }
        let w = s.clients[c1.slot_at(p).expect("s")].wallet;
        s.witness(&w, &wi(p, &results, &trainers), now).expect("w");
    }
    let reporter = if victim == 0 { wallet(1) } else { wallet(0) };
    let healthy = r0.slot_at(0).expect("s");
    assert_eq!(
        s.health_check(&reporter, victim as u16, 0, now),
        Err(CoreError::RoundNotFinal)
    );
    now = tick_until_change(&mut s, now, 100);
    now = tick_until_change(&mut s, now, 100);
    assert_eq!(s.progress.height, 2);
    if healthy != victim {
        assert_eq!(
            s.health_check(&reporter, healthy as u16, 0, now),
            Err(CoreError::StillHealthy)
        );
    }
    assert_eq!(
        s.health_check(&reporter, victim as u16, 0, now),
        Ok(Unhealthy::MissingResult)
    );
    assert_eq!(s.clients[victim].client_state(), Some(ClientState::Dropped));
    assert_eq!(
        s.health_check(&reporter, victim as u16, 0, now),
        Err(CoreError::NotHealthy)
    );
    assert_eq!(
        s.health_check(&reporter, 999, 0, now),
        Err(CoreError::IndexOutOfRange)
    );
    // The dropped client is not part of the next round.
    all_witness(&mut s, now);
    tick_until_change(&mut s, now, 100);
    tick_until_change(&mut s, now + 10, 100);
    let r3 = s.round(3).expect("r3");
    assert!(!state::bit_get(&r3.members, victim));
}

#[test]
fn health_check_drops_a_witness_that_missed_its_duty() {
    let cfg = Config {
        witnesses_per_round: 4,
        witness_quorum_pct: 50,
        ..fast_config()
    };
    let mut s = run_with(&cfg, 6);
    let mut now = start_epoch(&mut s, T0);
    now = honest_round(&mut s, now);
    let c1 = Committee::compute(s.round(1).expect("r1"));
    for p in 0..3 {
        let (results, trainers) = honest_filters(&s, p);
        let w = s.clients[c1.slot_at(p).expect("s")].wallet;
        s.witness(&w, &wi(p, &results, &trainers), now).expect("w");
    }
    let lazy = c1.slot_at(3).expect("lazy");
    now = tick_until_change(&mut s, now, 100);
    now = tick_until_change(&mut s, now, 100);
    let reporter = s.clients[c1.slot_at(0).expect("s")].wallet;
    assert_eq!(
        s.health_check(&reporter, lazy as u16, 0, now),
        Ok(Unhealthy::MissedWitness)
    );
}

// ------------------------------------------------------------------ verification

#[test]
fn verifiers_eject_a_cheater_and_its_results_are_excluded() {
    let cfg = Config {
        verification_pct: 40,
        witnesses_per_round: 3,
        max_clients: 16,
        ..fast_config()
    };
    let mut s = run_with(&cfg, 10);
    let mut now = start_epoch(&mut s, T0);
    now = honest_round(&mut s, now);
    let h = 1;
    let cur = *s.round(h).expect("r1");
    let prev = *s.round(0).expect("r0");
    let cc = Committee::compute(&cur);
    let pc = Committee::compute(&prev);
    assert_eq!(cc.verifiers, 4);
    // Find a verifier with a target.
    let (vpos, target) = (cc.trainers()..cc.n)
        .find_map(|p| {
            let pv = Seated {
                round: &prev,
                committee: &pc,
            };
            let cv = Seated {
                round: &cur,
                committee: &cc,
            };
            verification_target(&s.config, &pv, &cv, p).map(|t| (p, t))
        })
        .expect("some verifier has a target");
    let vslot = cc.slot_at(vpos).expect("v");
    let vw = s.clients[vslot].wallet;
    assert_eq!(s.verification_target_of(h, vslot), Ok(Some(target)));
    // A trainer is not a verifier; a wrong target is not assigned.
    let tw = s.clients[cc.slot_at(0).expect("t")].wallet;
    assert_eq!(
        s.report(&tw, target as u16, now),
        Err(CoreError::NotVerifier)
    );
    let wrong = (0..10u16).find(|x| *x as usize != target).expect("x");
    assert_eq!(s.report(&vw, wrong, now), Err(CoreError::NotAssigned));
    assert_eq!(s.report(&vw, target as u16, now), Ok(true));
    assert_eq!(
        s.report(&vw, target as u16, now),
        Err(CoreError::DuplicateReport)
    );
    assert_eq!(s.clients[target].client_state(), Some(ClientState::Ejected));
    let cheater = s.clients[target].wallet;
    assert_eq!(s.withdraw(&cheater, now), Err(CoreError::ClientEjected));
    assert!(s.is_banned(&cheater));
    // Round 1 closes with honest witnesses that did receive the cheater's result.
    all_witness(&mut s, now);
    tick_until_change(&mut s, now, 100);
    tick_until_change(&mut s, now + 10, 100);
    let mut cands = candidates(&s, 0);
    let n = cands.len();
    let kept = apply_set(&s, 0, &mut cands).expect("apply");
    assert_eq!(kept, n - 1);
    assert!(cands[..kept].iter().all(|c| c.trainer as usize != target));
    // The ejected client takes no part in later rounds, and its slot is freed at epoch end,
    // but it cannot come back.
    assert!(!state::bit_get(&s.round(2).expect("r2").members, target));
    s.pause(now + 20).expect("pause");
    assert_eq!(s.clients[target].client_state(), Some(ClientState::Empty));
    assert_eq!(
        s.join(&cheater, &node_key(77), now + 20),
        Err(CoreError::Banned)
    );
}

#[test]
fn ejection_needs_the_configured_number_of_reports() {
    let cfg = Config {
        verification_pct: 50,
        verifiers_per_target: 2,
        eject_reports: 2,
        witnesses_per_round: 3,
        max_clients: 16,
        ..fast_config()
    };
    let mut s = run_with(&cfg, 12);
    let mut now = start_epoch(&mut s, T0);
    now = honest_round(&mut s, now);
    let cur = *s.round(1).expect("r1");
    let prev = *s.round(0).expect("r0");
    let cc = Committee::compute(&cur);
    let pc = Committee::compute(&prev);
    let mut by_target: Vec<(usize, Vec<usize>)> = Vec::new();
    for p in cc.trainers()..cc.n {
        let pv = Seated {
            round: &prev,
            committee: &pc,
        };
        let cv = Seated {
            round: &cur,
            committee: &cc,
        };
        if let Some(t) = verification_target(&s.config, &pv, &cv, p) {
            let v = cc.slot_at(p).expect("v");
            match by_target.iter_mut().find(|(x, _)| *x == t) {
                Some((_, vs)) => vs.push(v),
                None => by_target.push((t, vec![v])),
            }
        }
    }
    let (target, vs) = by_target
        .into_iter()
        .find(|(_, vs)| vs.len() >= 2)
        .expect("a doubly verified target");
    let w0 = s.clients[vs[0]].wallet;
    let w1 = s.clients[vs[1]].wallet;
    assert_eq!(s.report(&w0, target as u16, now), Ok(false));
    assert_eq!(s.clients[target].client_state(), Some(ClientState::Healthy));
    assert_eq!(s.report(&w1, target as u16, now), Ok(true));
    assert_eq!(s.clients[target].client_state(), Some(ClientState::Ejected));
}

// ------------------------------------------------------------------ operator

#[test]
fn pause_mid_epoch_requeues_unapplied_data_and_resume_waits_again() {
    let cfg = fast_config();
    let mut s = run_with(&cfg, 3);
    let mut now = start_epoch(&mut s, T0);
    now = honest_round(&mut s, now);
    now = honest_round(&mut s, now);
    // In round 2: round 0 applied at round 2's start; rounds 1 and 2 are not.
    assert_eq!(s.progress.height, 2);
    let r1 = *s.round(1).expect("r1");
    let r2 = *s.round(2).expect("r2");
    let (step, fresh) = (s.progress.step, s.progress.data_index);
    assert_eq!(s.progress.steps_done, 1);
    assert_eq!(s.update_config(&cfg, now), Err(CoreError::NotHalted));
    s.pause(now).expect("pause");
    assert_eq!(s.pause(now), Err(CoreError::AlreadyPaused));
    assert_eq!(phase(&s), Phase::Paused);
    // Rounds 1 and 2 were never applied: both spans wait on the requeue, in order.
    let spans: Vec<(u64, u32)> = s
        .requeued_spans()
        .iter()
        .map(|x| (x.start, x.len))
        .collect();
    assert_eq!(
        spans,
        vec![
            (r1.data_index, r1.batch_size),
            (r2.data_index, r2.batch_size)
        ]
    );
    assert_eq!(s.progress.data_index, fresh);
    assert_eq!(s.progress.step, step);
    assert_eq!(s.progress.steps_done, 1);
    let bigger = Config {
        total_steps: 50,
        ..cfg
    };
    s.update_config(&bigger, now).expect("update");
    assert_eq!(
        s.update_config(
            &Config {
                min_clients: 0,
                ..cfg
            },
            now
        ),
        Err(CoreError::ConfigMinClients)
    );
    s.update_model(&ModelRef::new(ModelKind::Peers, b"", b"").expect("m"), now)
        .expect("model");
    s.resume(now).expect("resume");
    assert_eq!(phase(&s), Phase::WaitingForMembers);
    assert_eq!(s.config.total_steps, 50);
    assert_eq!(s.count_state(ClientState::Healthy), 3);
    let now = start_epoch(&mut s, now);
    let r0 = s.round(0).expect("r0");
    assert_eq!(
        (r0.data_index, r0.batch_size),
        (r1.data_index, r1.batch_size)
    );
    let now = honest_round(&mut s, now);
    let next = s.round(1).expect("r1");
    assert_eq!(
        (next.data_index, next.batch_size),
        (r2.data_index, r2.batch_size)
    );
    assert_eq!(s.requeue_len, 0);
    // Then fresh data continues where it stopped.
    let now = honest_round(&mut s, now);
    assert_eq!(s.round(2).expect("r2").data_index, fresh);
    assert_eq!(s.lost_samples, 0);
    let _ = now;
}

#[test]
fn a_round_without_witness_quorum_is_trained_again() {
    let cfg = Config {
        rounds_per_epoch: 6,
        total_steps: 6,
        ..fast_config()
    };
    let mut s = run_with(&cfg, 4);
    let mut now = start_epoch(&mut s, T0);
    now = honest_round(&mut s, now); // round 0
                                     // Round 1: nobody witnesses, so round 0's results cannot be applied.
    let r0 = *s.round(0).expect("r0");
    now = finish_round(&mut s, now);
    assert_eq!(s.progress.height, 2);
    assert_eq!(s.round(0).expect("r0").requeued, 1);
    let mut c = vec![Candidate::new(r0.data_index, 0, [0; 32])];
    assert_eq!(apply_set(&s, 0, &mut c), Err(CoreError::NotEnoughWitnesses));
    // Round 2 retrains round 0's span instead of fresh data; nothing is counted for round 0.
    let r2 = *s.round(2).expect("r2");
    assert_eq!(
        (r2.data_index, r2.batch_size),
        (r0.data_index, r0.batch_size)
    );
    assert_eq!(s.progress.steps_done, 0);
    while phase(&s) != Phase::Cooldown {
        now = honest_round(&mut s, now);
    }
    // Six data rounds ran, five were applied (round 0 was not, its span was retrained).
    assert_eq!(s.progress.steps_done, 5);
    assert_eq!(s.requeue_len, 0);
    // The run goes on until six steps are applied.
    now = tick_until_change(&mut s, now, 100);
    assert_eq!(phase(&s), Phase::WaitingForMembers);
    now = start_epoch(&mut s, now);
    assert_eq!(s.progress.epoch_rounds, 1);
    while phase(&s) != Phase::Cooldown {
        now = honest_round(&mut s, now);
    }
    tick_until_change(&mut s, now, 100);
    assert_eq!(phase(&s), Phase::Finished);
    assert_eq!(s.progress.steps_done, 6);
}

#[test]
fn too_few_members_abort_the_epoch_without_losing_data() {
    let cfg = fast_config();
    let mut s = run_with(&cfg, 2);
    let mut now = start_epoch(&mut s, T0);
    now = honest_round(&mut s, now);
    s.withdraw(&wallet(1), now).expect("withdraw");
    let r0_index = s.round(0).expect("r0").data_index;
    // Round 1 ends; round 2 cannot start with one member: the epoch aborts.
    all_witness(&mut s, now);
    let mut t = now;
    while phase(&s) != Phase::WaitingForMembers {
        t += 1;
        s.tick(t, &rand32(t as u64)).expect("tick");
        assert!(t < now + 1000);
    }
    // Round 0 (decided but never applied: the epoch aborted first) and round 1 are requeued.
    assert_eq!(s.requeued_spans().first().map(|x| x.start), Some(r0_index));
    assert_eq!(s.requeue_len, 2);
    assert_eq!(s.clients[1].client_state(), Some(ClientState::Empty));
    // The aborted epoch's rounds do not count toward total_steps; step ids stay unique.
    assert_eq!(s.progress.steps_done, 0);
    assert_eq!(s.progress.step, 2);
    s.join(&wallet(1), &node_key(1), t).expect("rejoin");
    let mut now = start_epoch(&mut s, t);
    assert_eq!(s.progress.epoch_rounds, cfg.rounds_per_epoch);
    let r0 = s.round(0).expect("r0");
    assert_eq!((r0.step, r0.data_index), (2, r0_index));
    assert_eq!(r0.batch_size, cfg.batch_size_at(0));
    while phase(&s) != Phase::Cooldown {
        now = honest_round(&mut s, now);
    }
    assert_eq!(s.progress.steps_done, cfg.rounds_per_epoch as u64);
    assert_eq!(s.requeue_len, 0);
}

#[test]
fn wrong_phase_errors() {
    let mut s = run_with(&fast_config(), 2);
    assert_eq!(
        s.witness(&wallet(0), &wi(0, &Bloom::new(), &Bloom::new()), T0),
        Err(CoreError::WrongPhase)
    );
    assert_eq!(s.report(&wallet(0), 1, T0), Err(CoreError::WrongPhase));
    assert_eq!(
        s.checkpoint(&wallet(0), &model(), T0),
        Err(CoreError::WrongPhase)
    );
    assert_eq!(
        s.health_check(&wallet(0), 1, 0, T0),
        Err(CoreError::WrongPhase)
    );
}

#[test]
fn corrupt_state_bytes_are_rejected_not_panicking() {
    let mut s = run_with(&fast_config(), 2);
    s.phase = 42;
    assert_eq!(s.tick(T0, &rand32(0)), Err(CoreError::InvalidState));
    s.phase = Phase::WaitingForMembers as u8;
    s.clients[0].state = 77;
    assert_eq!(
        s.join(&wallet(5), &node_key(5), T0),
        Err(CoreError::InvalidState)
    );
    s.clients[0].state = 2;
    s.version = 99;
    assert_eq!(s.pause(T0), Err(CoreError::InvalidState));
    assert!(State::from_bytes(&[0u8; 10]).is_err());
}

// ------------------------------------------------------------------ checkpoint

/// A run in Cooldown after one honest epoch of 4 members.
fn in_cooldown() -> (Box<State>, i64) {
    let cfg = fast_config();
    let mut s = run_with(&cfg, 4);
    let mut now = start_epoch(&mut s, T0);
    while phase(&s) != Phase::Cooldown {
        now = honest_round(&mut s, now);
    }
    (s, now)
}

const HASH: &[u8; 64] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn only_the_designated_checkpointer_records_the_checkpoint() {
    let (mut s, now) = in_cooldown();
    let ck = s.checkpointer().expect("designated");
    assert!(s.clients[ck].is_healthy());
    let hashed = ModelRef::new(ModelKind::LocalPath, b"/ckpt/epoch-0", HASH).expect("m");
    for slot in 0..4 {
        if slot != ck {
            let w = s.clients[slot].wallet;
            assert_eq!(
                s.checkpoint(&w, &hashed, now),
                Err(CoreError::NotCheckpointer)
            );
        }
    }
    let w = s.clients[ck].wallet;
    let unhashed = ModelRef::new(ModelKind::LocalPath, b"/ckpt/epoch-0", b"").expect("m");
    assert_eq!(
        s.checkpoint(&w, &unhashed, now),
        Err(CoreError::CheckpointUnhashed)
    );
    s.checkpoint(&w, &hashed, now).expect("designated, hashed");
    assert_eq!(s.model.content_hash(), Some(&HASH[..]));
    // Outside Cooldown there is no checkpointer.
    let mut s2 = run_with(&fast_config(), 2);
    assert_eq!(s2.checkpointer(), None);
    assert_eq!(
        s2.checkpoint(&wallet(0), &hashed, T0),
        Err(CoreError::WrongPhase)
    );
    s2.tick(T0, &rand32(1)).expect("tick");
}

#[test]
fn the_checkpointer_follows_the_seed_not_the_lowest_slot() {
    let mut picked = std::collections::BTreeSet::new();
    for i in 0..24u64 {
        let cfg = fast_config();
        let mut s = run_with(&cfg, 4);
        let mut now = start_epoch(&mut s, T0 + i as i64 * 1000);
        while phase(&s) != Phase::Cooldown {
            all_witness(&mut s, now);
            let h = s.progress.height;
            while matches!(phase(&s), Phase::RoundTrain | Phase::RoundWitness)
                && s.progress.height == h
            {
                now += 1;
                s.tick(now, &rand32(now as u64 ^ (i << 40))).expect("tick");
            }
        }
        picked.insert(s.checkpointer().expect("designated"));
    }
    assert!(picked.len() > 1, "always slot {picked:?}");
}

#[test]
fn a_content_hash_is_64_lowercase_hex_digits() {
    assert!(ModelRef::new(ModelKind::HttpUrl, b"https://h/c", HASH).is_ok());
    assert!(ModelRef::new(ModelKind::Peers, b"", HASH).is_ok());
    let upper = HASH.to_ascii_uppercase();
    assert_eq!(
        ModelRef::new(ModelKind::LocalPath, b"/c", &upper).err(),
        Some(CoreError::InvalidModelRef)
    );
    assert_eq!(
        ModelRef::new(ModelKind::LocalPath, b"/c", &HASH[..63]).err(),
        Some(CoreError::InvalidModelRef)
    );
    // A HuggingFace revision is never read as a content hash.
    let hf = ModelRef::new(ModelKind::HuggingFace, b"org/m", HASH).expect("hf");
    assert_eq!(hf.content_hash(), None);
}

/// Witnesses of the current round other than `silent` submit honest filters.
fn witness_except(s: &mut State, silent: usize, now: i64) {
    let h = s.progress.height;
    let c = Committee::compute(s.round(h).expect("round"));
    for p in 0..c.n {
        let slot = c.slot_at(p).expect("slot");
        if c.roles_at(p) & ROLE_WITNESS != 0 && slot != silent {
            let (results, trainers) = honest_filters(s, p);
            let w = s.clients[slot].wallet;
            s.witness(&w, &wi(p, &results, &trainers), now)
                .expect("witness");
        }
    }
}

#[test]
fn rounds_without_quorum_abort_the_epoch_so_a_dead_member_cannot_stall_it() {
    // Two members, quorum 2 of 2: when one dies no round can reach quorum, so no health check
    // (which needs a quorum) can drop it. A third client joined mid-epoch waits as Pending.
    let cfg = Config {
        rounds_per_epoch: 12,
        total_steps: 24,
        ..fast_config()
    };
    let mut s = run_with(&cfg, 2);
    let mut now = start_epoch(&mut s, T0);
    let first = s.round(0).expect("r0").data_index;
    now = honest_round(&mut s, now);
    let second = s.round(1).expect("r1").data_index;
    s.join(&wallet(2), &node_key(2), now).expect("join");
    assert_eq!(s.clients[2].client_state(), Some(ClientState::Pending));
    // Slot 1 goes silent. Rounds 1 and 2 end without quorum: the epoch goes on.
    for h in 1..STALL_ROUNDS as u32 {
        assert_eq!(s.progress.height, h);
        witness_except(&mut s, 1, now);
        now = finish_round(&mut s, now);
        assert!(matches!(phase(&s), Phase::RoundTrain | Phase::RoundWitness));
    }
    // The third round without quorum aborts the epoch; no data is lost: rounds 0 and 1 were
    // never applied, and their spans (retrained by rounds 2 and 3) are back on the requeue.
    witness_except(&mut s, 1, now);
    now = finish_round(&mut s, now);
    assert_eq!(phase(&s), Phase::WaitingForMembers);
    assert_eq!(s.progress.epoch, 1);
    assert_eq!(s.progress.steps_done, 0);
    let spans: Vec<u64> = s.requeued_spans().iter().map(|x| x.start).collect();
    assert_eq!(spans, vec![first, second]);
    assert_eq!(s.clients[2].client_state(), Some(ClientState::Healthy));
    // Warmup drops the dead member; the epoch runs with the other two.
    now = tick_until_change(&mut s, now, 1000);
    assert_eq!(phase(&s), Phase::Warmup);
    for i in [0, 2] {
        s.warmup_witness(&wallet(i), now).expect("ready");
    }
    now = tick_until_change(&mut s, now, 1000);
    assert_eq!(phase(&s), Phase::RoundTrain);
    assert_eq!(s.clients[1].client_state(), Some(ClientState::Dropped));
    assert_eq!(s.round(0).expect("r0").member_count, 2);
    // The requeued spans are trained first.
    assert_eq!(s.round(0).expect("r0").data_index, spans[0]);
    while phase(&s) != Phase::Cooldown {
        now = honest_round(&mut s, now);
    }
    assert_eq!(s.progress.steps_done, cfg.rounds_per_epoch as u64);
}

#[test]
fn the_last_applied_round_of_an_ended_epoch_is_known_between_epochs() {
    use psyche_core::derive::last_applied_of_ended_epoch;
    let cfg = fast_config();
    // Paused in round 2: round 0 was applied (at round 2's start), rounds 1 and 2 were not.
    let mut s = run_with(&cfg, 3);
    let mut now = start_epoch(&mut s, T0);
    now = honest_round(&mut s, now);
    assert_eq!(
        last_applied_of_ended_epoch(&s),
        Err(CoreError::WrongPhase),
        "not while the epoch runs"
    );
    now = honest_round(&mut s, now);
    s.pause(now).expect("pause");
    assert_eq!(last_applied_of_ended_epoch(&s), Ok(Some(0)));
    s.resume(now).expect("resume");
    // A whole epoch: its last data round is applied in the cooldown.
    now = start_epoch(&mut s, now);
    while phase(&s) != Phase::Cooldown {
        now = honest_round(&mut s, now);
    }
    tick_until_change(&mut s, now, 100);
    assert_eq!(
        last_applied_of_ended_epoch(&s),
        Ok(Some(cfg.rounds_per_epoch - 1))
    );

    // Aborted in round 1 (too few members): round 0 was decided but requeued, nothing applied.
    let mut s = run_with(&cfg, 2);
    let now = start_epoch(&mut s, T0);
    let now = honest_round(&mut s, now);
    s.withdraw(&wallet(1), now).expect("withdraw");
    all_witness(&mut s, now);
    let mut t = now;
    while phase(&s) != Phase::WaitingForMembers {
        t += 1;
        s.tick(t, &rand32(t as u64)).expect("tick");
        assert!(t < now + 1000);
    }
    assert_eq!(last_applied_of_ended_epoch(&s), Ok(None));
}
