//! Property tests over random event sequences: whatever clients and operators do, the
//! invariants of docs/protocol.md ("Invariants") hold and nothing panics.

mod common;
use common::*;
use proptest::prelude::*;
use psyche_core::derive::{assignment, Committee};
use psyche_core::*;

#[derive(Clone, Debug)]
enum Op {
    Tick(u8, u64),
    Join(u8),
    Withdraw(u8),
    Warmup(u8),
    Witness(u8, bool),
    WitnessAt(u8, u8),
    Health(u8, u8, u8),
    Report(u8, u8),
    Checkpoint(u8),
    Pause,
    Resume,
    UpdateConfig(u8),
    Garbage(u16, u8),
    AllWarmup,
    AllWitness(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (any::<u8>(), any::<u64>()).prop_map(|(d, r)| Op::Tick(d % 16, r)),
        3 => (0u8..12).prop_map(Op::Join),
        1 => (0u8..12).prop_map(Op::Withdraw),
        1 => (0u8..12).prop_map(Op::Warmup),
        6 => (0u8..12, any::<bool>()).prop_map(|(c, honest)| Op::Witness(c, honest)),
        1 => (0u8..12, 0u8..20).prop_map(|(c, p)| Op::WitnessAt(c, p)),
        2 => (0u8..12, 0u8..12, 0u8..8).prop_map(|(c, t, h)| Op::Health(c, t, h)),
        2 => (0u8..12, 0u8..12).prop_map(|(c, t)| Op::Report(c, t)),
        1 => (0u8..12).prop_map(Op::Checkpoint),
        1 => Just(Op::Pause),
        4 => Just(Op::Resume),
        1 => (0u8..4).prop_map(Op::UpdateConfig),
        1 => (any::<u16>(), any::<u8>()).prop_map(|(i, b)| Op::Garbage(i, b)),
        3 => Just(Op::AllWarmup),
        6 => any::<u8>().prop_map(Op::AllWitness),
    ]
}

fn cfg() -> Config {
    Config {
        max_clients: 8,
        verification_pct: 25,
        witnesses_per_round: 3,
        total_steps: 30,
        ..fast_config()
    }
}

fn apply(s: &mut State, op: &Op, now: &mut i64) -> Result<(), CoreError> {
    match *op {
        Op::Tick(d, r) => {
            *now += d as i64;
            s.tick(*now, &rand32(r)).map(|_| ())
        }
        Op::Join(i) => s
            .join(&wallet(i as u32), &node_key(i as u32), *now)
            .map(|_| ()),
        Op::Withdraw(i) => s.withdraw(&wallet(i as u32), *now),
        Op::Warmup(i) => s.warmup_witness(&wallet(i as u32), *now),
        Op::Witness(i, honest) => {
            let w = wallet(i as u32);
            let pos = s
                .find_client(&w)
                .and_then(|slot| s.round(s.progress.height).ok().map(|r| (slot, r)))
                .and_then(|(slot, r)| Committee::compute(r).position_of(slot))
                .unwrap_or(0);
            let (a, b) = if honest && s.round(s.progress.height).is_ok() {
                honest_filters(s, pos)
            } else {
                let mut a = Bloom::new();
                a.bits[..32].copy_from_slice(&rand32(*now as u64));
                (a, Bloom::new())
            };
            s.witness(&w, &wi(pos, &a, &b), *now)
        }
        Op::WitnessAt(i, p) => s.witness(
            &wallet(i as u32),
            &wi(p as u16, &Bloom::new(), &Bloom::new()),
            *now,
        ),
        Op::Health(i, t, h) => s
            .health_check(&wallet(i as u32), t as u16, h as u32, *now)
            .map(|_| ()),
        Op::Report(i, t) => {
            let w = wallet(i as u32);
            // Half the time report the assigned target, otherwise the given one.
            let target = s
                .find_client(&w)
                .and_then(|slot| {
                    s.verification_target_of(s.progress.height, slot)
                        .ok()
                        .flatten()
                })
                .filter(|_| t % 2 == 0)
                .map(|x| x as u16)
                .unwrap_or(t as u16);
            s.report(&w, target, *now).map(|_| ())
        }
        Op::Checkpoint(i) => s.checkpoint(&wallet(i as u32), &model(), *now),
        Op::Pause => s.pause(*now),
        Op::Resume => s.resume(*now),
        Op::UpdateConfig(k) => {
            let c = Config {
                min_clients: k as u16,
                rounds_per_epoch: 1 + k as u32,
                ..cfg()
            };
            s.update_config(&c, *now)
        }
        Op::Garbage(_, _) => Ok(()),
        Op::AllWarmup => {
            for slot in 0..MAX_CLIENTS {
                if s.clients[slot].is_healthy() {
                    let w = s.clients[slot].wallet;
                    let _ = s.warmup_witness(&w, *now);
                }
            }
            Ok(())
        }
        Op::AllWitness(mask) => {
            // Witness i (by position) lies when bit i of `mask` is set and skips when bit i+4 is.
            let Ok(r) = s.round(s.progress.height) else {
                return Ok(());
            };
            let c = Committee::compute(r);
            for p in 0..c.witnesses.min(4) {
                let slot = c.slot_at(p).expect("slot");
                if mask & (1 << (p + 4)) != 0 {
                    continue;
                }
                let w = s.clients[slot].wallet;
                let lie = mask & (1 << p) != 0;
                let (ra, rb) = if lie {
                    (Bloom::new(), Bloom::new())
                } else {
                    honest_filters(s, p)
                };
                let _ = s.witness(&w, &wi(p, &ra, &rb), *now);
            }
            Ok(())
        }
    }
}

fn check_invariants(s: &State, floor: u64) -> Result<(), TestCaseError> {
    prop_assert!(s.check().is_ok());
    prop_assert_eq!(s.as_bytes().len(), STATE_SIZE);
    let copy = *State::from_bytes(s.as_bytes()).expect("aligned");
    prop_assert_eq!(copy.as_bytes(), s.as_bytes());
    let taken = s.count_state(ClientState::Healthy) + s.count_state(ClientState::Pending);
    prop_assert!(taken <= s.config.max_clients as usize || taken <= MAX_CLIENTS);
    prop_assert!(
        s.progress.data_index >= floor,
        "data rewound below an applied epoch"
    );
    if s.in_rounds() {
        for h in 0..=s.progress.height {
            let Ok(r) = s.round(h) else { continue };
            // Ejected in this epoch means Ejected now: never both ejected and healthy.
            for slot in 0..MAX_CLIENTS {
                if state::bit_get(&r.ejected, slot) {
                    prop_assert_eq!(s.clients[slot].client_state(), Some(ClientState::Ejected));
                }
            }
            // Each sample of the round's batch is assigned exactly once.
            let c = Committee::compute(r);
            let mut next = r.data_index;
            let mut total = 0u64;
            for p in 0..c.n {
                if let Some((lo, hi)) = assignment(r, c.trainers(), p) {
                    prop_assert_eq!(lo, next);
                    next = hi;
                    total += hi - lo;
                }
            }
            let expect = if r.kind == RoundKind::Data as u8 {
                r.batch_size as u64
            } else {
                0
            };
            prop_assert_eq!(total, expect);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_event_sequences_keep_the_invariants(ops in proptest::collection::vec(op(), 1..250)) {
        let mut s = run_with(&cfg(), 4);
        let mut now = T0;
        let mut floor = 0u64;
        for op in &ops {
            let before = s.as_bytes().to_vec();
            let (step0, nonce0) = (s.progress.step, s.nonce);
            if let Op::Garbage(i, b) = op {
                // A corrupted byte anywhere: every transition must return, never panic.
                let mut bad = s.clone();
                let idx = *i as usize * 61 % STATE_SIZE;
                bytemuck::bytes_of_mut(&mut *bad)[idx] = *b;
                let mut t = now;
                for o in &ops[..ops.len().min(12)] {
                    let _ = apply(&mut bad, o, &mut t);
                }
                let _ = apply_set(&bad, 0, &mut [Candidate::new(0, 0, [0; 32])]);
                let _ = health_verdict(&bad, 0, 0);
                continue;
            }
            let res = apply(&mut s, op, &mut now);
            match res {
                Err(_) => prop_assert_eq!(s.as_bytes(), &before[..], "error changed the state"),
                Ok(()) => prop_assert!(s.nonce >= nonce0),
            }
            if s.as_bytes() != &before[..] {
                prop_assert!(s.nonce > nonce0, "change without a nonce bump");
                // ... and a nonce bump always comes with a real change.
                let mut a = before.clone();
                let mut b = s.as_bytes().to_vec();
                let n = core::mem::offset_of!(State, nonce);
                let u = core::mem::offset_of!(State, updated_at);
                for v in [&mut a, &mut b] {
                    v[n..n + 8].fill(0);
                    v[u..u + 8].fill(0);
                }
                prop_assert!(a != b, "nonce bumped without a change: {:?}", op);
            }
            prop_assert!(s.progress.step >= step0, "step went backwards");
            check_invariants(&s, floor)?;
            floor = s.progress.data_index;
        }
    }
}

/// Offsets of the header fields of the state and of every round: corrupting them is the most
/// likely way to reach an arithmetic or indexing edge.
fn hot_offsets() -> Vec<usize> {
    let mut v: Vec<usize> = (0..600).collect();
    let rounds = core::mem::offset_of!(State, rounds);
    for r in 0..ROUND_RING {
        let base = rounds + r * core::mem::size_of::<Round>();
        v.extend(base..base + 200);
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any corruption of a live state: every transition and derivation returns (Ok or a typed
    /// error) without panicking.
    #[test]
    fn corrupted_states_never_panic(edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..12)) {
        let cfg = Config { verification_pct: 30, ..fast_config() };
        let mut s = run_with(&cfg, 6);
        let mut now = start_epoch(&mut s, T0);
        now = honest_round(&mut s, now);
        now = honest_round(&mut s, now);
        let hot = hot_offsets();
        for (i, b) in &edits {
            let idx = hot[*i as usize % hot.len()];
            bytemuck::bytes_of_mut(&mut *s)[idx] = *b;
        }
        for h in 0..4u32 {
            let _ = s.round(h).map(Committee::compute);
            let _ = s.assignment_of(h, 0);
            let _ = s.verification_target_of(h, 1);
            let _ = health_verdict(&s, h, 2);
            let _ = apply_set(&s, h, &mut [Candidate::new(0, 0, [1; 32]), Candidate::new(16, 1, [2; 32])]);
            let _ = s.health_check(&wallet(0), 3, h, now);
        }
        for slot in 0..6u32 {
            let w = wallet(slot);
            let _ = s.witness(&w, &wi(slot as u16, &Bloom::new(), &Bloom::new()), now);
            let _ = s.report(&w, (slot as u16 + 1) % 6, now);
            let _ = s.warmup_witness(&w, now);
            let _ = s.checkpoint(&w, &model(), now);
        }
        for t in 0..60 {
            let _ = s.tick(now + t * 7, &rand32(t as u64));
        }
        let _ = s.join(&wallet(9), &node_key(9), now);
        let _ = s.withdraw(&wallet(1), now);
        let _ = s.pause(now);
        let _ = s.update_config(&cfg, now);
        let _ = s.resume(now);
    }
}
