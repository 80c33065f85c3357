//! Adaptive round timing: the train and witness windows follow what the run measures, inside the
//! operator's bounds.
//!
//! The one measurement the coordinator sees for certain is how long after a round started its
//! witness quorum was reached (`Round::quorum_at - Round::started_at`): the witnesses of round h
//! send their filters once they hold every result of round h-1, so this time is the step plus the
//! transfer of the previous round's results as the committee saw it. The state keeps an estimate
//! of it (`State::train_est_x16`, 1/16 s) and each round's windows are derived from it when the
//! round starts, so the program and the TCP server decide identically.
//!
//! - A sample that arrived before the witnesses' wait deadline (half the train window, the
//!   client's rule) is trusted: the estimate moves a quarter of the way towards it (an EWMA).
//! - A censored sample (quorum only at or after that deadline, or none at all) says only "at least
//!   this long": the estimate doubles, bounded by the operator's maximum. A slow link therefore
//!   reaches a window that fits it in a few rounds instead of stalling the run on empty rounds,
//!   and a dead trainer costs a round or two of longer windows until the health check drops it.
//! - The train window is three estimates plus the witness grace, so the witnesses' deadline (half
//!   of it) sits at 1.5 estimates: a fast run no longer waits out a fixed 2-minute timer for a
//!   missing result, and an honest result that is a bit slower than usual still makes it.
//!
//! Round 0 has no previous round to attest, so its (near-instant) quorum is not a sample.
//! Integer arithmetic only, unsigned (SBF v0 has no signed division).

use crate::config::Config;

/// Fixed-point scale of the estimate (1/16 s).
pub const EST_SCALE: u64 = 16;
/// Train window = `WINDOW_FACTOR` estimates + the witness grace.
pub const WINDOW_FACTOR: u64 = 3;

/// Lower bound of the train window: the operator's `min_round_train_secs`, at least one second
/// more than the witness grace, never above the maximum.
pub fn min_train_secs(cfg: &Config) -> u32 {
    (cfg.min_round_train_secs as u32)
        .max(cfg.witness_grace_secs.saturating_add(1))
        .min(cfg.max_round_train_secs)
}

/// The train window (seconds) of a round that starts with estimate `est_x16` (0 = no estimate
/// yet: the operator's maximum).
pub fn train_window(cfg: &Config, est_x16: u32) -> u32 {
    let max = cfg.max_round_train_secs;
    if est_x16 == 0 {
        return max;
    }
    let w = (est_x16 as u64 * WINDOW_FACTOR).div_ceil(EST_SCALE) + cfg.witness_grace_secs as u64;
    w.clamp(min_train_secs(cfg) as u64, max as u64) as u32
}

/// The witness window (seconds of RoundWitness for late witnesses and reports): one estimate
/// plus one second, within 1..=`round_witness_secs`; the operator's value while there is no
/// estimate. (The phase still ends as soon as every witness has submitted.)
pub fn witness_window(cfg: &Config, est_x16: u32) -> u32 {
    let max = cfg.round_witness_secs;
    if est_x16 == 0 {
        return max;
    }
    let w = (est_x16 as u64).div_ceil(EST_SCALE) + 1;
    w.clamp(1, max.max(1) as u64) as u32
}

/// The estimate after a round of height `height` whose train window was `window` seconds and
/// whose quorum came `to_quorum` seconds after it started (`None`: no quorum in the window).
pub fn next_estimate(
    cfg: &Config,
    est_x16: u32,
    height: u32,
    window: u32,
    to_quorum: Option<u64>,
) -> u32 {
    if height == 0 {
        return est_x16;
    }
    let cap = cfg.max_round_train_secs as u64 * EST_SCALE;
    let deadline = (window / 2).max(1) as u64;
    let est = est_x16 as u64;
    let next = match to_quorum {
        Some(s) if s < deadline => {
            let sample = s.max(1) * EST_SCALE;
            if est == 0 {
                sample
            } else if sample >= est {
                est + (sample - est).div_ceil(4)
            } else {
                est - (est - sample) / 4
            }
        }
        // Censored: at least the deadline; grow fast.
        _ => (est * 2).max(deadline * EST_SCALE * 2),
    };
    next.clamp(1, cap.max(1)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            max_round_train_secs: 120,
            min_round_train_secs: 4,
            witness_grace_secs: 2,
            round_witness_secs: 15,
            ..Config::default()
        }
    }

    #[test]
    fn no_estimate_uses_the_operator_bounds() {
        let c = cfg();
        assert_eq!(train_window(&c, 0), 120);
        assert_eq!(witness_window(&c, 0), 15);
    }

    #[test]
    fn windows_stay_inside_the_bounds() {
        let c = cfg();
        assert_eq!(train_window(&c, 1), 4); // floor
        assert_eq!(train_window(&c, 10 * 16), 32); // 3 × 10 + 2
        assert_eq!(train_window(&c, 100 * 16), 120); // cap
        assert_eq!(witness_window(&c, 3 * 16), 4);
        assert_eq!(witness_window(&c, 100 * 16), 15);
        let fixed = Config {
            min_round_train_secs: 120,
            ..c
        };
        assert_eq!(train_window(&fixed, 16), 120);
    }

    #[test]
    fn floor_exceeds_the_grace() {
        let c = Config {
            min_round_train_secs: 0,
            ..cfg()
        };
        assert_eq!(min_train_secs(&c), 3);
    }

    #[test]
    fn trusted_samples_move_a_quarter() {
        let c = cfg();
        assert_eq!(next_estimate(&c, 0, 1, 120, Some(8)), 8 * 16);
        assert_eq!(next_estimate(&c, 8 * 16, 2, 26, Some(12)), 8 * 16 + 16);
        assert_eq!(next_estimate(&c, 8 * 16, 2, 26, Some(4)), 8 * 16 - 16);
        // Round 0 teaches nothing.
        assert_eq!(next_estimate(&c, 8 * 16, 0, 26, Some(0)), 8 * 16);
    }

    #[test]
    fn censored_samples_double_up_to_the_cap() {
        let c = cfg();
        // window 20 → deadline 10; quorum at 10 s is censored.
        assert_eq!(next_estimate(&c, 5 * 16, 3, 20, Some(10)), 20 * 16);
        assert_eq!(next_estimate(&c, 30 * 16, 3, 92, None), 92 * 16);
        assert_eq!(next_estimate(&c, 100 * 16, 3, 120, None), 120 * 16);
    }

    #[test]
    fn a_slow_link_converges_to_a_window_that_fits() {
        // Results need 40 s to reach the witnesses; start from a fast estimate of 2 s.
        let c = cfg();
        let need = 40u64;
        let mut est = 2 * 16;
        let mut censored = 0;
        for h in 1..30 {
            let w = train_window(&c, est);
            let q = if need < (w / 2) as u64 {
                Some(need)
            } else {
                None
            };
            if q.is_none() {
                censored += 1;
            }
            est = next_estimate(&c, est, h, w, q);
        }
        assert!(censored <= 5, "{censored} empty rounds");
        let w = train_window(&c, est);
        assert!(
            (w / 2) as u64 > need && w <= 3 * need as u32 + 2,
            "window {w}"
        );
    }

    #[test]
    fn a_fast_run_shrinks_to_its_pace() {
        let c = cfg();
        let mut est = 0;
        for h in 1..40 {
            est = next_estimate(&c, est, h, train_window(&c, est), Some(3));
        }
        assert_eq!(train_window(&c, est), 11); // 3 × 3 + 2
    }
}
