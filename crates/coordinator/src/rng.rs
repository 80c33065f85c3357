//! Deterministic randomness derived from a round seed.
//!
//! The generator is SplitMix64 (Steele, Lea, Flood 2014) in counter mode, keyed by murmur3 of
//! `seed ‖ domain`: cheap on SBF (a handful of 64-bit multiplies per draw) and uniform enough for
//! shuffling; unpredictability comes from the seed, not from the mixer.

use crate::murmur::murmur3_x64_128;

/// Domain separators.
pub mod domain {
    /// Committee shuffle.
    pub const COMMITTEE: u64 = 1;
    /// Verification offsets.
    pub const VERIFY: u64 = 2;
}

/// Counter-mode SplitMix64 keyed by a seed and a domain.
pub struct Prng {
    state: u64,
    key: u64,
}

impl Prng {
    /// Key the generator.
    pub fn new(seed: &[u8; 32], domain: u64) -> Prng {
        let mut buf = [0u8; 40];
        buf[..32].copy_from_slice(seed);
        buf[32..].copy_from_slice(&domain.to_le_bytes());
        let (a, b) = murmur3_x64_128(&buf, 0);
        Prng { state: a, key: b }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state ^ self.key;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` by rejection sampling (no modulo bias); 0 when `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            return 0;
        }
        // Values >= limit would bias the modulo; limit = 2^64 - (2^64 mod n).
        let rem = (u64::MAX % n + 1) % n;
        let limit = u64::MAX - rem;
        // A draw is rejected with probability < n / 2^64; 64 draws bound the loop.
        let mut x = self.next_u64();
        for _ in 0..64 {
            if x <= limit {
                break;
            }
            x = self.next_u64();
        }
        x % n
    }
}

/// Derive a round seed from the tick's randomness and the run position:
/// `murmur3(randomness ‖ run_id ‖ epoch ‖ height ‖ step, seed 0 and 1)`, 32 bytes.
pub fn round_seed(
    randomness: &[u8; 32],
    run_id: &[u8; 32],
    epoch: u32,
    height: u32,
    step: u64,
) -> [u8; 32] {
    let mut buf = [0u8; 80];
    buf[..32].copy_from_slice(randomness);
    buf[32..64].copy_from_slice(run_id);
    buf[64..68].copy_from_slice(&epoch.to_le_bytes());
    buf[68..72].copy_from_slice(&height.to_le_bytes());
    buf[72..80].copy_from_slice(&step.to_le_bytes());
    let (a, b) = murmur3_x64_128(&buf, 0);
    let (c, d) = murmur3_x64_128(&buf, 1);
    let mut out = [0u8; 32];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..16].copy_from_slice(&b.to_le_bytes());
    out[16..24].copy_from_slice(&c.to_le_bytes());
    out[24..].copy_from_slice(&d.to_le_bytes());
    out
}
