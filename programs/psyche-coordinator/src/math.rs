//! Arithmetic that links on upstream BPF.
//!
//! LLVM's BPF backend has no 64x64->128 multiply and refuses to call compiler-rt helpers
//! (`__multi3`), so `u64::checked_mul` (which widens to detect overflow) does not link for SBF
//! with this toolchain. These helpers detect overflow without a wide multiply.

/// `a * b`, or `None` on overflow.
///
/// Schoolbook multiplication on 32-bit halves. The obvious overflow checks (`(a * b) / a != b`,
/// `b > u64::MAX / a`) are recognised by LLVM and turned back into `umul.with.overflow`.
#[inline]
pub fn mul(a: u64, b: u64) -> Option<u64> {
    const LOW: u64 = 0xffff_ffff;
    let (a_hi, a_lo) = (a >> 32, a & LOW);
    let (b_hi, b_lo) = (b >> 32, b & LOW);
    if a_hi != 0 && b_hi != 0 {
        return None;
    }
    // At most one of the two terms is non-zero, and each is below 2^64.
    let cross = a_hi * b_lo + a_lo * b_hi;
    if cross > LOW {
        return None;
    }
    (cross << 32).checked_add(a_lo * b_lo)
}

#[cfg(test)]
mod tests {
    use super::mul;

    #[test]
    fn mul_matches_checked_mul() {
        let samples = [
            0,
            1,
            2,
            3,
            7,
            255,
            1 << 31,
            1 << 32,
            u32::MAX as u64,
            u64::MAX / 3,
            u64::MAX,
        ];
        for &a in &samples {
            for &b in &samples {
                assert_eq!(mul(a, b), a.checked_mul(b), "{a} * {b}");
            }
        }
    }
}
