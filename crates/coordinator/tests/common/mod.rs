//! Test harness: a run with deterministic keys and an honest-client driver.
#![allow(dead_code)]

use psyche_core::derive::{Committee, ROLE_WITNESS};
use psyche_core::murmur::murmur3_x64_128_bytes;
use psyche_core::*;

pub const T0: i64 = 1_000_000;

pub fn wallet(i: u32) -> [u8; 32] {
    let mut w = [0xAA; 32];
    w[..4].copy_from_slice(&(i + 1).to_le_bytes());
    w
}

pub fn node_key(i: u32) -> [u8; 32] {
    let mut w = [0xBB; 32];
    w[..4].copy_from_slice(&(i + 1).to_le_bytes());
    w
}

pub fn rand32(i: u64) -> [u8; 32] {
    let a = murmur3_x64_128_bytes(&i.to_le_bytes(), 11);
    let b = murmur3_x64_128_bytes(&i.to_le_bytes(), 12);
    let mut o = [0u8; 32];
    o[..16].copy_from_slice(&a);
    o[16..].copy_from_slice(&b);
    o
}

/// The commitment an honest trainer at `slot` publishes for round `height` of `epoch`.
pub fn commitment(epoch: u32, height: u32, slot: usize) -> [u8; 32] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&epoch.to_le_bytes());
    key[4..8].copy_from_slice(&height.to_le_bytes());
    key[8..12].copy_from_slice(&(slot as u32).to_le_bytes());
    let a = murmur3_x64_128_bytes(&key, 1);
    let b = murmur3_x64_128_bytes(&key, 2);
    let mut o = [0u8; 32];
    o[..16].copy_from_slice(&a);
    o[16..].copy_from_slice(&b);
    o
}

/// A witness instruction body.
pub fn wi(position: u16, results: &Bloom, trainers: &Bloom) -> WitnessInput {
    WitnessInput {
        position,
        reserved: 0,
        stats: WitnessStats::default(),
        results: *results,
        trainers: *trainers,
    }
}

pub fn fast_config() -> Config {
    Config {
        total_steps: 12,
        batch_size_start: 16,
        batch_size_end: 32,
        batch_ramp_steps: 4,
        rounds_per_epoch: 4,
        waiting_extra_secs: 5,
        warmup_secs: 10,
        max_round_train_secs: 30,
        round_witness_secs: 5,
        witness_grace_secs: 2,
        cooldown_secs: 5,
        min_clients: 2,
        max_clients: 8,
        witnesses_per_round: 3,
        witness_quorum_pct: 67,
        verification_pct: 0,
        verifiers_per_target: 1,
        eject_reports: 1,
        min_round_train_secs: 4,
        reserved: [0; 4],
    }
}

pub fn model() -> ModelRef {
    ModelRef::new(ModelKind::HuggingFace, b"org/tiny-llama", b"main").expect("model")
}

pub fn new_run(cfg: &Config) -> Box<State> {
    let mut s: Box<State> = bytemuck::zeroed_box();
    s.init(&[7; 32], cfg, &model(), T0).expect("init");
    s.resume(T0).expect("resume");
    s
}

/// New run with `n` clients joined.
pub fn run_with(cfg: &Config, n: u32) -> Box<State> {
    let mut s = new_run(cfg);
    for i in 0..n {
        s.join(&wallet(i), &node_key(i), T0).expect("join");
    }
    s
}

pub fn phase(s: &State) -> Phase {
    s.phase().expect("phase")
}

/// Tick until the phase changes or `limit` seconds pass; returns the new time.
pub fn tick_until_change(s: &mut State, mut now: i64, limit: i64) -> i64 {
    let p = (s.phase, s.progress.height);
    let end = now + limit;
    while now <= end {
        s.tick(now, &rand32(now as u64)).expect("tick");
        if (s.phase, s.progress.height) != p {
            return now;
        }
        now += 1;
    }
    now
}

/// From WaitingForMembers with enough members: through warmup (everyone ready) into round 0.
pub fn start_epoch(s: &mut State, now: i64) -> i64 {
    let now = tick_until_change(s, now, 1000);
    assert_eq!(phase(s), Phase::Warmup);
    for slot in 0..MAX_CLIENTS {
        if s.clients[slot].is_healthy() {
            let w = s.clients[slot].wallet;
            s.warmup_witness(&w, now).expect("warmup");
        }
    }
    s.tick(now, &rand32(now as u64)).expect("tick");
    assert_eq!(phase(s), Phase::RoundTrain);
    now
}

/// Honest filters for the witness at `position` of the current round: every trainer of the
/// previous round delivered.
pub fn honest_filters(s: &State, position: u16) -> (Bloom, Bloom) {
    let mut results = Bloom::new();
    let mut trainers = Bloom::new();
    let h = s.progress.height;
    let salt = derive::witness_salt(s.round(h).expect("round"), position);
    if let Some(prev) = h.checked_sub(1).and_then(|p| s.round(p).ok()) {
        let c = Committee::compute(prev);
        for p in 0..c.trainers() {
            if derive::assignment(prev, c.trainers(), p).is_some() {
                let slot = c.slot_at(p).expect("slot");
                results.add_salted(&commitment(s.progress.epoch, h - 1, slot), salt);
                trainers.add_salted(&s.clients[slot].wallet, salt);
            }
        }
    }
    (results, trainers)
}

/// All healthy witnesses of the current round submit honest filters.
pub fn all_witness(s: &mut State, now: i64) {
    let h = s.progress.height;
    let c = Committee::compute(s.round(h).expect("round"));
    for p in 0..c.n {
        if c.roles_at(p) & ROLE_WITNESS != 0 {
            let (results, trainers) = honest_filters(s, p);
            let slot = c.slot_at(p).expect("slot");
            if s.clients[slot].is_healthy() {
                let w = s.clients[slot].wallet;
                s.witness(&w, &wi(p, &results, &trainers), now)
                    .expect("witness");
            }
        }
    }
}

/// Drive one honest round to its end; returns the time.
pub fn honest_round(s: &mut State, now: i64) -> i64 {
    all_witness(s, now);
    finish_round(s, now)
}

/// Tick until the current round is over.
pub fn finish_round(s: &mut State, now: i64) -> i64 {
    let h = s.progress.height;
    let mut now = now;
    while matches!(phase(s), Phase::RoundTrain | Phase::RoundWitness) && s.progress.height == h {
        now = tick_until_change(s, now, 1000);
    }
    now
}
