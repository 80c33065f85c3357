//! Simulations of adaptive round timing through the real state machine: witnesses whose results
//! arrive `arrive` seconds after a round starts send their filters then (or empty ones at the
//! client's wait deadline, half the round's train window, when the results come later).

mod common;
use common::*;
use psyche_core::derive::{Committee, ROLE_WITNESS};
use psyche_core::*;

fn config(min: u16, max: u32) -> Config {
    Config {
        total_steps: 1000,
        rounds_per_epoch: 40,
        max_round_train_secs: max,
        min_round_train_secs: min,
        witness_grace_secs: 2,
        round_witness_secs: 5,
        ..fast_config()
    }
}

/// Play the current round: results reach the witnesses `arrive` s after it started. Returns the
/// time it ended.
fn play_round(s: &mut State, now: i64, arrive: i64) -> i64 {
    let h = s.progress.height;
    let r = s.round(h).expect("round");
    let window = s.train_secs_of(r) as i64;
    let half = (window / 2).max(1);
    let in_time = arrive < half;
    let submit_at = r.started_at + if in_time { arrive } else { half };
    let mut now = now;
    while now < submit_at {
        now += 1;
        s.tick(now, &rand32(now as u64)).expect("tick");
    }
    assert_eq!(
        s.progress.height, h,
        "the round ended before its witnesses' deadline"
    );
    let c = Committee::compute(s.round(h).expect("round"));
    for p in 0..c.n {
        if c.roles_at(p) & ROLE_WITNESS == 0 {
            continue;
        }
        let (results, trainers) = if in_time {
            honest_filters(s, p)
        } else {
            (Bloom::new(), Bloom::new())
        };
        let w = s.clients[c.slot_at(p).expect("slot")].wallet;
        s.witness(&w, &wi(p, &results, &trainers), now)
            .expect("witness");
    }
    finish_round(s, now)
}

struct Played {
    windows: Vec<u32>,
    round_secs: Vec<i64>,
    steps_done: u64,
}

fn play(cfg: &Config, arrive: impl Fn(usize) -> i64, rounds: usize) -> Played {
    let mut s = run_with(cfg, 4);
    let mut now = start_epoch(&mut s, T0);
    let mut out = Played {
        windows: vec![],
        round_secs: vec![],
        steps_done: 0,
    };
    for i in 0..rounds {
        let r = s.round(s.progress.height).expect("round");
        out.windows.push(s.train_secs_of(r));
        let started = r.started_at;
        now = play_round(&mut s, now, arrive(i));
        out.round_secs.push(now - started);
        assert_eq!(phase(&s), Phase::RoundTrain, "still in the epoch");
    }
    out.steps_done = s.progress.steps_done;
    out
}

#[test]
fn a_slow_link_no_longer_stalls_the_run() {
    // The run learns a 3 s pace, then its links slow down: results need 25 s from round 10 on.
    // The operator allows up to 120 s windows.
    let arrive = |i: usize| if i < 10 { 3 } else { 25 };
    let adaptive = play(&config(4, 120), arrive, 40);
    // Fixed windows of 40 s (a witness deadline of 20 s) never fit: no round trains after 10.
    let fixed = play(&config(40, 40), arrive, 40);
    assert_eq!(
        fixed.steps_done,
        10 - 2 + 1,
        "fixed windows: {:?}",
        fixed.windows
    );
    // Adaptive: after a few censored rounds the window fits and every round trains again.
    let censored = adaptive.windows[10..]
        .iter()
        .filter(|&&w| w / 2 <= 25)
        .count();
    assert!(censored <= 3, "windows {:?}", adaptive.windows);
    assert!(
        adaptive.steps_done >= 40 - 2 - censored as u64 - 1,
        "steps {} windows {:?}",
        adaptive.steps_done,
        adaptive.windows
    );
    let last = *adaptive.windows.last().expect("rounds");
    assert!(last / 2 > 25 && last <= 120, "{last}");
}

#[test]
fn a_fast_run_does_not_wait_out_the_maximum() {
    // Results arrive after 3 s; one witness of each committee then waits the grace.
    let run = play(&config(4, 120), |_| 3, 20);
    let window = *run.windows.last().expect("rounds");
    assert_eq!(window, 3 * 3 + 2);
    assert!(
        run.round_secs.iter().skip(2).all(|&d| d <= 3 + 2 + 1),
        "{:?}",
        run.round_secs
    );
    assert!(run.steps_done >= 20 - 2);
}

#[test]
fn a_lost_result_costs_the_estimate_not_the_maximum() {
    // Once the pace is learnt, a round whose results never come waits 1.5 estimates, not 60 s.
    let cfg = config(4, 120);
    let mut s = run_with(&cfg, 4);
    let mut now = start_epoch(&mut s, T0);
    for _ in 0..10 {
        now = play_round(&mut s, now, 6);
    }
    let before = s.train_est_x16;
    let r = s.round(s.progress.height).expect("round");
    let (started, window) = (r.started_at, s.train_secs_of(r));
    assert_eq!(window, 3 * 6 + 2);
    now = play_round(&mut s, now, i64::MAX / 4);
    assert!(now - started <= (window / 2) as i64 + 2 + 1);
    assert!(
        s.train_est_x16 > before,
        "a censored round grows the estimate"
    );
    // The pace comes back within a few rounds.
    for _ in 0..10 {
        now = play_round(&mut s, now, 6);
    }
    let r = s.round(s.progress.height).expect("round");
    assert!(s.train_secs_of(r) <= 3 * 7 + 2);
}

#[test]
fn new_bounds_reset_the_estimate() {
    let cfg = config(4, 120);
    let mut s = run_with(&cfg, 4);
    let mut now = start_epoch(&mut s, T0);
    for _ in 0..4 {
        now = play_round(&mut s, now, 3);
    }
    assert_ne!(s.train_est_x16, 0);
    s.pause(now).expect("pause");
    s.update_config(&config(4, 60), now).expect("update");
    assert_eq!(s.train_est_x16, 0);
}
