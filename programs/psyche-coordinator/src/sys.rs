//! What needs the SBF runtime (syscalls); on the host these report `UnsupportedSysvar`, and the
//! handlers that use them are exercised on SBF (tests/solana).

use pinocchio::{error::ProgramError, Address};

use crate::{state::RUN_SEED, ID};

/// Unix time from the Clock sysvar.
#[cfg(any(target_os = "solana", target_arch = "bpf"))]
pub fn now() -> Result<i64, ProgramError> {
    // slot, epoch_start_timestamp, epoch, leader_schedule_epoch, unix_timestamp: 40 bytes.
    // The dedicated syscall, not `Clock::get()`: pinocchio gates its `sol_get_sysvar` path on
    // `target_os = "solana"` only, which this toolchain's target does not set.
    let mut clock = [0u64; 5];
    // SAFETY: the syscall writes exactly the 40-byte Clock struct into `clock`.
    #[allow(deprecated)]
    let rc = unsafe { pinocchio::syscalls::sol_get_clock_sysvar(clock.as_mut_ptr().cast()) };
    if rc != 0 {
        return Err(ProgramError::UnsupportedSysvar);
    }
    Ok(clock[4] as i64)
}

/// The run PDA for `run_id` and its canonical bump.
#[cfg(any(target_os = "solana", target_arch = "bpf"))]
pub fn find_run_address(run_id: &[u8; 32]) -> Result<(Address, u8), ProgramError> {
    Address::try_find_program_address(&[RUN_SEED, run_id], &ID).ok_or(ProgramError::InvalidSeeds)
}

/// The peer PDA for (`run`, `wallet`) and its canonical bump.
#[cfg(any(target_os = "solana", target_arch = "bpf"))]
pub fn find_peer_address(run: &[u8; 32], wallet: &[u8; 32]) -> Result<(Address, u8), ProgramError> {
    Address::try_find_program_address(&[crate::state::PEER_SEED, run, wallet], &ID)
        .ok_or(ProgramError::InvalidSeeds)
}

/// Lamports that make an account of `data_len` bytes rent-exempt, from the Rent sysvar.
///
/// Computed here rather than with pinocchio's `Rent`, which assumes the SIMD-0194 layout
/// (exemption threshold 1) and would under-fund accounts on clusters still at threshold 2.
/// Integer-only on purpose: upstream LLVM's BPF backend cannot call soft-float or 128-bit
/// multiply helpers, so f64 math and `u64::checked_mul` do not link (see the decision doc).
#[cfg(any(target_os = "solana", target_arch = "bpf"))]
pub fn rent_exempt_minimum(data_len: u64) -> Result<u64, ProgramError> {
    /// Bytes every account is charged for besides its data.
    const ACCOUNT_STORAGE_OVERHEAD: u64 = 128;
    // The sysvar as the runtime stores it: lamports_per_byte_year u64, exemption_threshold
    // f64, burn_percent u8 (+ padding): 24 bytes, 8-aligned.
    let mut rent = [0u64; 3];
    // SAFETY: the syscall writes exactly the 24-byte Rent struct into `rent`.
    #[allow(deprecated)]
    let rc = unsafe { pinocchio::syscalls::sol_get_rent_sysvar(rent.as_mut_ptr().cast()) };
    if rc != 0 {
        return Err(ProgramError::UnsupportedSysvar);
    }
    let [lamports_per_byte_year, threshold_bits, _] = rent;
    // Every cluster uses a whole-number threshold: 2.0 (classic) or 1.0 (SIMD-0194).
    let years = match threshold_bits {
        0x4000_0000_0000_0000 => 2, // 2.0f64
        0x3ff0_0000_0000_0000 => 1, // 1.0f64
        _ => return Err(ProgramError::InvalidAccountData),
    };
    let bytes = ACCOUNT_STORAGE_OVERHEAD
        .checked_add(data_len)
        .ok_or(ProgramError::ArithmeticOverflow)?;
    crate::math::mul(bytes, lamports_per_byte_year)
        .and_then(|per_year| crate::math::mul(per_year, years))
        .ok_or(ProgramError::ArithmeticOverflow)
}

#[cfg(not(any(target_os = "solana", target_arch = "bpf")))]
pub fn now() -> Result<i64, ProgramError> {
    Err(ProgramError::UnsupportedSysvar)
}

#[cfg(not(any(target_os = "solana", target_arch = "bpf")))]
pub fn find_run_address(_run_id: &[u8; 32]) -> Result<(Address, u8), ProgramError> {
    let _ = (RUN_SEED, ID);
    Err(ProgramError::UnsupportedSysvar)
}

#[cfg(not(any(target_os = "solana", target_arch = "bpf")))]
pub fn find_peer_address(
    _run: &[u8; 32],
    _wallet: &[u8; 32],
) -> Result<(Address, u8), ProgramError> {
    Err(ProgramError::UnsupportedSysvar)
}

#[cfg(not(any(target_os = "solana", target_arch = "bpf")))]
pub fn rent_exempt_minimum(_data_len: u64) -> Result<u64, ProgramError> {
    Err(ProgramError::UnsupportedSysvar)
}
