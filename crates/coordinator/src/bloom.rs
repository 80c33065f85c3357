//! Witness Bloom filters: murmur3 x64_128 double hashing, `index_i = (h1 + i * h2) mod BITS`
//! (Kirsch–Mitzenmacher), wrapping 64-bit arithmetic, bit `index` is bit `index % 8`
//! (least significant first) of byte `index / 8`.
//!
//! Sizing (docs/protocol.md, "Bloom filters"): at the client cap n = 256 the optimum for a 1%
//! false-positive rate is m = -n ln(0.01) / ln(2)^2 = 2454 bits; we use m = 2560 bits (320 bytes)
//! and k = 7 hashes, giving (1 - e^(-k n / m))^k = 0.82% expected. Two filters per witness
//! instruction (640 bytes) plus the rest of the instruction fit a 1232-byte transaction.

use crate::murmur::murmur3_x64_128;
use bytemuck::{Pod, Zeroable};

/// Bits in one filter.
pub const BLOOM_BITS: usize = 2560;
/// Bytes in one filter.
pub const BLOOM_BYTES: usize = BLOOM_BITS / 8;
/// Hash functions per key.
pub const BLOOM_HASHES: u32 = 7;
/// murmur3 seed used for Bloom keys.
pub const BLOOM_SEED: u32 = 0;

/// A fixed-size Bloom filter (plain bytes; any byte pattern is a valid filter).
#[repr(transparent)]
#[derive(Clone, Copy, Pod, Zeroable, PartialEq, Eq)]
pub struct Bloom {
    /// The bit array.
    pub bits: [u8; BLOOM_BYTES],
}

impl Default for Bloom {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl core::fmt::Debug for Bloom {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Bloom({} bits set)", self.count_ones())
    }
}

/// The `BLOOM_HASHES` bit indices of `key` (murmur seed 0).
pub fn bloom_indices(key: &[u8]) -> [u32; BLOOM_HASHES as usize] {
    bloom_indices_salted(key, BLOOM_SEED)
}

/// The bit indices of `key` under a murmur seed (`salt`). Witness filters are salted per witness
/// (`derive::witness_salt`) so that their false positives are independent: a key absent from
/// every witness's set is a false positive of a majority of S filters with probability about
/// C(S, S/2) * p^(S/2), instead of p for identical unsalted filters.
pub fn bloom_indices_salted(key: &[u8], salt: u32) -> [u32; BLOOM_HASHES as usize] {
    let (h1, h2) = murmur3_x64_128(key, salt);
    let mut out = [0u32; BLOOM_HASHES as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        let h = h1.wrapping_add((i as u64).wrapping_mul(h2));
        *slot = (h % BLOOM_BITS as u64) as u32;
    }
    out
}

impl Bloom {
    /// An empty filter.
    pub fn new() -> Self {
        Self::zeroed()
    }

    /// Build from raw bytes; `None` if the length is not `BLOOM_BYTES`.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let bits: [u8; BLOOM_BYTES] = bytes.try_into().ok()?;
        Some(Self { bits })
    }

    /// Insert a key (salt 0).
    pub fn add(&mut self, key: &[u8]) {
        self.add_salted(key, BLOOM_SEED)
    }

    /// Whether the key may be present (salt 0; no false negatives).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.contains_salted(key, BLOOM_SEED)
    }

    /// Insert a key under a salt.
    pub fn add_salted(&mut self, key: &[u8], salt: u32) {
        for idx in bloom_indices_salted(key, salt) {
            let i = idx as usize;
            if let Some(b) = self.bits.get_mut(i / 8) {
                *b |= 1 << (i % 8);
            }
        }
    }

    /// Whether the key may be present under a salt.
    pub fn contains_salted(&self, key: &[u8], salt: u32) -> bool {
        bloom_indices_salted(key, salt).iter().all(|&idx| {
            let i = idx as usize;
            self.bits
                .get(i / 8)
                .is_some_and(|b| b & (1 << (i % 8)) != 0)
        })
    }

    /// No bit set: a witness that received nothing (stops at the first set byte).
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|b| *b == 0)
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }
}
