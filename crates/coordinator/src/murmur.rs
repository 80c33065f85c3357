//! MurmurHash3 x64_128 (Austin Appleby's public-domain algorithm), written from the published
//! description. Bit-compatible with Python's `mmh3.hash64(key, seed, x64arch=True, signed=False)`
//! (which returns the two 64-bit halves) and `mmh3.hash128(..., x64arch=True)` (`h2 << 64 | h1`).

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

/// The murmur3 64-bit finalizer (avalanche mix).
#[inline]
pub const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[inline]
fn mix_k1(k1: u64) -> u64 {
    k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
}

#[inline]
fn mix_k2(k2: u64) -> u64 {
    k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
}

#[inline]
fn read_u64_le(b: &[u8]) -> u64 {
    let mut v = 0u64;
    for (i, byte) in b.iter().take(8).enumerate() {
        v |= (*byte as u64) << (8 * i);
    }
    v
}

/// MurmurHash3 x64_128 of `data` with a 32-bit `seed`; returns `(h1, h2)`.
pub fn murmur3_x64_128(data: &[u8], seed: u32) -> (u64, u64) {
    let mut h1 = seed as u64;
    let mut h2 = seed as u64;
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let (a, b) = block.split_at(8);
        h1 ^= mix_k1(read_u64_le(a));
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= mix_k2(read_u64_le(b));
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    if tail.len() > 8 {
        h2 ^= mix_k2(read_u64_le(&tail[8..]));
    }
    if !tail.is_empty() {
        h1 ^= mix_k1(read_u64_le(tail));
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

/// The 16-byte digest as `mmh3.hash_bytes(data, seed, x64arch=True)` returns it.
pub fn murmur3_x64_128_bytes(data: &[u8], seed: u32) -> [u8; 16] {
    let (h1, h2) = murmur3_x64_128(data, seed);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&h1.to_le_bytes());
    out[8..].copy_from_slice(&h2.to_le_bytes());
    out
}
