//! Error codes. Framework-level failures reuse Anchor's codes so Anchor clients name them
//! (anchorpy's `LangErrorCode`); this program's own errors start at 6000 and are listed in the
//! IDL's `errors`.

use pinocchio::error::ProgramError;

/// Every error this program returns as `ProgramError::Custom(code)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum PsycheError {
    /// Anchor `InstructionMissing`: data shorter than a discriminator.
    InstructionMissing = 100,
    /// Anchor `InstructionFallbackNotFound`: unknown discriminator.
    InstructionFallbackNotFound = 101,
    /// Anchor `InstructionDidNotDeserialize`: bad arguments.
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
    /// Anchor `DeclaredProgramIdMismatch`: invoked under another program id.
    DeclaredProgramIdMismatch = 4100,
    /// The signer is not the run's authority.
    Unauthorized = 6000,
    /// The run's counter would overflow.
    CounterOverflow = 6001,
}

impl From<PsycheError> for ProgramError {
    fn from(e: PsycheError) -> Self {
        ProgramError::Custom(e as u32)
    }
}
