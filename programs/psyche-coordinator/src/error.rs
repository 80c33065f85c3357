//! Error codes. Framework-level failures reuse Anchor's codes so Anchor clients name them
//! (anchorpy's `LangErrorCode`); the core's errors are `6000 + CoreError::code()` (6001..=6028,
//! 6100..=6108) and this program's own errors start at 6300. All custom errors are listed, by
//! name, in the IDL's `errors`.

use pinocchio::error::ProgramError;
use psyche_core::CoreError;

/// Offset of the core's error codes in the custom error space: `6000 + CoreError::code()`.
pub use psyche_core::layout::CORE_ERROR_BASE;
use psyche_core::layout::PROGRAM_ERROR_BASE;

/// Every error this program returns itself as `ProgramError::Custom(code)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum PsycheError {
    /// Anchor `InstructionMissing`: data shorter than a discriminator.
    InstructionMissing = 100,
    /// Anchor `InstructionFallbackNotFound`: unknown discriminator.
    InstructionFallbackNotFound = 101,
    /// Anchor `InstructionDidNotDeserialize`: arguments of the wrong size or encoding.
    InstructionDidNotDeserialize = 102,
    /// Anchor `ConstraintMut`: an account that must be writable is not.
    ConstraintMut = 2000,
    /// Anchor `ConstraintSeeds`: an account is not at its PDA.
    ConstraintSeeds = 2006,
    /// Anchor `AccountDiscriminatorMismatch`: the account holds another type.
    AccountDiscriminatorMismatch = 3002,
    /// Anchor `AccountDidNotDeserialize`: the account's data is too short or misaligned.
    AccountDidNotDeserialize = 3003,
    /// Anchor `AccountNotEnoughKeys`.
    AccountNotEnoughKeys = 3005,
    /// Anchor `AccountOwnedByWrongProgram`.
    AccountOwnedByWrongProgram = 3007,
    /// Anchor `InvalidProgramId`: the system program account is something else.
    InvalidProgramId = 3008,
    /// Anchor `AccountNotSigner`.
    AccountNotSigner = 3010,
    /// Anchor `AccountSysvarMismatch`: the SlotHashes account is not the sysvar.
    AccountSysvarMismatch = 3015,
    /// Anchor `DeclaredProgramIdMismatch`: invoked under another program id.
    DeclaredProgramIdMismatch = 4100,
    /// The signer is not the run's owner.
    Unauthorized = 6300,
    /// The run has a join authority and it did not sign.
    JoinNotAuthorized = 6301,
    /// The coordinator account does not belong to this run (or the run to it).
    CoordinatorMismatch = 6302,
    /// The coordinator account's layout version is not the one this program was built for.
    VersionMismatch = 6303,
    /// The coordinator account does not have `CoordinatorAccount::SPACE` bytes.
    AccountSize = 6304,
    /// `init_run`: the coordinator account is not zeroed (already initialized).
    AccountNotZeroed = 6305,
    /// The SlotHashes sysvar has no entry.
    SlotHashesUnavailable = 6306,
    /// `close_run`: the run is neither paused nor finished.
    RunNotHalted = 6307,
    /// `advertise`: an address is longer than 128 bytes or not UTF-8.
    InvalidAddress = 6308,
    /// `join_run`: the `node` account that signed is not the node key being registered.
    NodeKeyNotSigner = 6309,
}

// The program's own codes start at the shared base (the SDK and the IDL read it from there).
const _: () = assert!(PsycheError::Unauthorized as u32 == PROGRAM_ERROR_BASE);

impl From<PsycheError> for ProgramError {
    fn from(e: PsycheError) -> Self {
        ProgramError::Custom(e as u32)
    }
}

/// The custom program error for a core error: `6000 + code`.
pub fn core_error(e: CoreError) -> ProgramError {
    ProgramError::Custom(CORE_ERROR_BASE + e.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_codes_do_not_collide_with_program_codes() {
        for e in CoreError::ALL {
            let code = CORE_ERROR_BASE + e.code();
            assert!(
                (CORE_ERROR_BASE + 1..PROGRAM_ERROR_BASE).contains(&code),
                "{e:?}"
            );
        }
    }
}
