//! Instruction handlers. Each checks its accounts the way Anchor's `#[derive(Accounts)]` would
//! (signer, writable, owner, PDA, discriminator) and returns Anchor's error codes.

use pinocchio::{
    cpi::{Seed, Signer},
    error::ProgramError,
    AccountView, Address, ProgramResult,
};
use pinocchio_system::instructions::CreateAccount;

use crate::{
    error::PsycheError,
    state::{Run, RUN_SEED},
    ID,
};

/// The system program's address (all zeros).
const SYSTEM_PROGRAM_ID: Address = Address::new_from_array([0; 32]);

/// `init_run(run_id: [u8; 32])`.
///
/// Accounts: `authority` (signer, writable: pays and becomes the run's authority), `run`
/// (writable, the PDA `[RUN_SEED, run_id]`, created here), `system_program`.
pub fn init_run(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let [authority, run, system_program, ..] = accounts else {
        return Err(PsycheError::AccountNotEnoughKeys.into());
    };
    let run_id: [u8; 32] = args
        .try_into()
        .map_err(|_| PsycheError::InstructionDidNotDeserialize)?;
    if !authority.is_signer() {
        return Err(PsycheError::AccountNotSigner.into());
    }
    if !authority.is_writable() || !run.is_writable() {
        return Err(PsycheError::ConstraintMut.into());
    }
    if system_program.address() != &SYSTEM_PROGRAM_ID {
        return Err(PsycheError::InvalidProgramId.into());
    }
    let (expected, bump) = sys::find_run_address(&run_id)?;
    if run.address() != &expected {
        return Err(PsycheError::ConstraintSeeds.into());
    }

    let bump_seed = [bump];
    let seeds = [
        Seed::from(RUN_SEED),
        Seed::from(&run_id),
        Seed::from(&bump_seed),
    ];
    let lamports = sys::rent_exempt_minimum(Run::SPACE as u64)?;
    CreateAccount {
        from: authority,
        to: run,
        lamports,
        space: Run::SPACE as u64,
        owner: &ID,
    }
    .invoke_signed(&[Signer::from(&seeds)])?;

    let mut data = run.try_borrow_mut()?;
    let (tag, _) = data
        .split_first_chunk_mut::<8>()
        .ok_or(PsycheError::AccountDidNotDeserialize)?;
    *tag = Run::DISCRIMINATOR;
    let state = Run::load_mut(&mut data)?;
    *state = Run {
        authority: authority.address().to_bytes(),
        run_id,
        counter: 0,
        state_version: psyche_core::STATE_VERSION,
        paused: 0,
        bump,
        reserved: [0; 2],
    };
    Ok(())
}

/// `bump()`: the run's authority increments its counter.
///
/// Accounts: `authority` (signer), `run` (writable).
pub fn bump(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    if !args.is_empty() {
        return Err(PsycheError::InstructionDidNotDeserialize.into());
    }
    with_run_as_authority(accounts, |run| {
        run.counter = run
            .counter
            .checked_add(1)
            .ok_or(PsycheError::CounterOverflow)?;
        Ok(())
    })
}

/// `set_paused(paused: bool)`: the run's authority pauses or resumes it.
///
/// Accounts: `authority` (signer), `run` (writable).
pub fn set_paused(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let paused = match args {
        [0] => 0,
        [1] => 1,
        _ => return Err(PsycheError::InstructionDidNotDeserialize.into()),
    };
    with_run_as_authority(accounts, |run| {
        run.paused = paused;
        Ok(())
    })
}

/// Checks `[authority, run, ..]` (authority signs and is the run's authority; run is writable,
/// owned by this program and holds a `Run`), then applies `change` to the run.
///
/// The run's address is not re-derived: only this program can create accounts it owns, and it
/// only creates `Run`s at their PDA, so owner + discriminator identify a genuine run.
fn with_run_as_authority(
    accounts: &mut [AccountView],
    change: impl FnOnce(&mut Run) -> Result<(), PsycheError>,
) -> ProgramResult {
    let [authority, run, ..] = accounts else {
        return Err(PsycheError::AccountNotEnoughKeys.into());
    };
    if !authority.is_signer() {
        return Err(PsycheError::AccountNotSigner.into());
    }
    if !run.is_writable() {
        return Err(PsycheError::ConstraintMut.into());
    }
    if !run.owned_by(&ID) {
        return Err(PsycheError::AccountOwnedByWrongProgram.into());
    }
    let mut data = run.try_borrow_mut()?;
    let state = Run::load_mut(&mut data)?;
    if state.authority != authority.address().to_bytes() {
        return Err(PsycheError::Unauthorized.into());
    }
    change(state).map_err(ProgramError::from)
}

/// What needs the SBF runtime (syscalls); on the host these report `UnsupportedSysvar`, and the
/// handlers that use them are exercised on SBF (tests/solana).
mod sys {
    use pinocchio::{error::ProgramError, Address};

    use crate::{state::RUN_SEED, ID};

    /// The run PDA for `run_id` and its canonical bump.
    #[cfg(any(target_os = "solana", target_arch = "bpf"))]
    pub fn find_run_address(run_id: &[u8; 32]) -> Result<(Address, u8), ProgramError> {
        Address::try_find_program_address(&[RUN_SEED, run_id], &ID)
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
    pub fn find_run_address(_run_id: &[u8; 32]) -> Result<(Address, u8), ProgramError> {
        let _ = (RUN_SEED, ID);
        Err(ProgramError::UnsupportedSysvar)
    }

    #[cfg(not(any(target_os = "solana", target_arch = "bpf")))]
    pub fn rent_exempt_minimum(_data_len: u64) -> Result<u64, ProgramError> {
        Err(ProgramError::UnsupportedSysvar)
    }
}
