//! The Psyche coordinator as a Solana program.
//!
//! Thin by design: this crate owns accounts, signer/authority checks and PDAs; every rule of a
//! run lives in `psyche_core` (crates/coordinator), compiled into this program for SBF.
//!
//! It is written on pinocchio but speaks Anchor's wire format, so Anchor clients (anchorpy, the
//! TS client) use it through `idl/psyche_coordinator.json` unchanged:
//! - instruction data: `sha256("global:<name>")[..8]` then the Borsh-encoded arguments;
//! - account data: `sha256("account:<Name>")[..8]` then the account's fields (Borsh layout,
//!   which for fixed-size fields is the `repr(C)` layout here, byte for byte);
//! - errors: Anchor's framework codes (100..=3999) and this program's codes from 6000.
//!
//! Why not Anchor itself: see docs/decisions/0001-sbf-toolchain.md.
#![no_std]

// Host builds (tests, the cdylib on x86_64) get std's allocator and panic handler.
#[cfg(not(any(target_os = "solana", target_arch = "bpf")))]
extern crate std;

pub mod accounts;
pub mod args;
pub mod error;
pub mod instructions;
pub mod math;
pub mod state;
mod sys;

#[cfg(all(
    any(target_os = "solana", target_arch = "bpf"),
    not(feature = "no-entrypoint")
))]
mod entrypoint;

use pinocchio::{error::ProgramError, AccountView, Address, ProgramResult};

pub use error::PsycheError;

/// This program's address: `psyche_core::layout::PROGRAM_ID` (the public key of
/// localnet/psyche_coordinator-keypair.json).
pub const ID: Address = Address::from_str_const(psyche_core::layout::PROGRAM_ID);

/// Instruction discriminators: `sha256("global:<name>")[..8]`, as Anchor computes them.
pub mod discriminator {
    /// `init_run`
    pub const INIT_RUN: [u8; 8] = [148, 105, 121, 172, 230, 223, 101, 42];
    /// `update`
    pub const UPDATE: [u8; 8] = [219, 200, 88, 176, 158, 63, 253, 127];
    /// `set_paused`
    pub const SET_PAUSED: [u8; 8] = [91, 60, 125, 192, 176, 225, 166, 218];
    /// `join_run`
    pub const JOIN_RUN: [u8; 8] = [72, 160, 125, 102, 106, 134, 246, 75];
    /// `withdraw`
    pub const WITHDRAW: [u8; 8] = [183, 18, 70, 156, 148, 109, 161, 34];
    /// `tick`
    pub const TICK: [u8; 8] = [92, 79, 44, 8, 101, 80, 63, 15];
    /// `warmup_witness`
    pub const WARMUP_WITNESS: [u8; 8] = [211, 232, 122, 232, 63, 22, 55, 94];
    /// `witness`
    pub const WITNESS: [u8; 8] = [213, 244, 149, 25, 142, 223, 21, 39];
    /// `health_check`
    pub const HEALTH_CHECK: [u8; 8] = [115, 90, 99, 168, 138, 18, 157, 131];
    /// `report`
    pub const REPORT: [u8; 8] = [96, 121, 245, 84, 178, 45, 48, 91];
    /// `checkpoint`
    pub const CHECKPOINT: [u8; 8] = [213, 200, 19, 204, 240, 143, 184, 252];
    /// `close_run`
    pub const CLOSE_RUN: [u8; 8] = [31, 61, 130, 76, 74, 147, 171, 204];
    /// `advertise`
    pub const ADVERTISE: [u8; 8] = [163, 154, 174, 190, 94, 119, 227, 102];
    /// `close_peer`
    pub const CLOSE_PEER: [u8; 8] = [200, 26, 32, 202, 128, 97, 203, 4];
}

/// Routes an instruction by its 8-byte discriminator.
///
/// Inlined into the entrypoint: with the program id, the accounts, the data and the result
/// pointer it would take 6 arguments, and upstream BPF passes at most 5 (no stack arguments).
#[inline(always)]
pub fn process_instruction(
    program_id: &Address,
    accounts: &mut [AccountView],
    data: &[u8],
) -> ProgramResult {
    if program_id != &ID {
        return Err(PsycheError::DeclaredProgramIdMismatch.into());
    }
    dispatch(accounts, data)
}

#[inline(never)]
fn dispatch(accounts: &mut [AccountView], data: &[u8]) -> ProgramResult {
    let (tag, args) = data
        .split_first_chunk::<8>()
        .ok_or(PsycheError::InstructionMissing)?;
    match *tag {
        discriminator::INIT_RUN => instructions::init_run(accounts, args),
        discriminator::UPDATE => instructions::update(accounts, args),
        discriminator::SET_PAUSED => instructions::set_paused(accounts, args),
        discriminator::JOIN_RUN => instructions::join_run(accounts, args),
        discriminator::WITHDRAW => instructions::withdraw(accounts, args),
        discriminator::TICK => instructions::tick(accounts, args),
        discriminator::WARMUP_WITNESS => instructions::warmup_witness(accounts, args),
        discriminator::WITNESS => instructions::witness(accounts, args),
        discriminator::HEALTH_CHECK => instructions::health_check(accounts, args),
        discriminator::REPORT => instructions::report(accounts, args),
        discriminator::CHECKPOINT => instructions::checkpoint(accounts, args),
        discriminator::CLOSE_RUN => instructions::close_run(accounts, args),
        discriminator::ADVERTISE => instructions::advertise(accounts, args),
        discriminator::CLOSE_PEER => instructions::close_peer(accounts, args),
        _ => Err(ProgramError::from(PsycheError::InstructionFallbackNotFound)),
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    fn anchor_discriminator(preimage: &str) -> [u8; 8] {
        let digest = Sha256::digest(preimage.as_bytes());
        let mut out = [0u8; 8];
        out.copy_from_slice(&digest[..8]);
        out
    }

    #[test]
    fn discriminators_are_anchors() {
        assert_eq!(
            discriminator::INIT_RUN,
            anchor_discriminator("global:init_run")
        );
        assert_eq!(discriminator::UPDATE, anchor_discriminator("global:update"));
        assert_eq!(
            discriminator::SET_PAUSED,
            anchor_discriminator("global:set_paused")
        );
        assert_eq!(
            discriminator::JOIN_RUN,
            anchor_discriminator("global:join_run")
        );
        assert_eq!(
            discriminator::WITHDRAW,
            anchor_discriminator("global:withdraw")
        );
        assert_eq!(discriminator::TICK, anchor_discriminator("global:tick"));
        assert_eq!(
            discriminator::WARMUP_WITNESS,
            anchor_discriminator("global:warmup_witness")
        );
        assert_eq!(
            discriminator::WITNESS,
            anchor_discriminator("global:witness")
        );
        assert_eq!(
            discriminator::HEALTH_CHECK,
            anchor_discriminator("global:health_check")
        );
        assert_eq!(discriminator::REPORT, anchor_discriminator("global:report"));
        assert_eq!(
            discriminator::CHECKPOINT,
            anchor_discriminator("global:checkpoint")
        );
        assert_eq!(
            discriminator::CLOSE_RUN,
            anchor_discriminator("global:close_run")
        );
        assert_eq!(
            state::Peer::DISCRIMINATOR,
            anchor_discriminator("account:Peer")
        );
        assert_eq!(
            discriminator::ADVERTISE,
            anchor_discriminator("global:advertise")
        );
        assert_eq!(
            discriminator::CLOSE_PEER,
            anchor_discriminator("global:close_peer")
        );
        assert_eq!(
            state::CoordinatorAccount::DISCRIMINATOR,
            anchor_discriminator("account:CoordinatorAccount")
        );
        assert_eq!(
            state::Run::DISCRIMINATOR,
            anchor_discriminator("account:Run")
        );
    }

    #[test]
    fn unknown_and_short_instructions_are_rejected() {
        let mut accounts: [AccountView; 0] = [];
        assert_eq!(
            process_instruction(&ID, &mut accounts, &[1, 2, 3]),
            Err(PsycheError::InstructionMissing.into())
        );
        assert_eq!(
            process_instruction(&ID, &mut accounts, &[0; 8]),
            Err(PsycheError::InstructionFallbackNotFound.into())
        );
        let other = Address::new_from_array([7; 32]);
        assert_eq!(
            process_instruction(&other, &mut accounts, &discriminator::TICK),
            Err(PsycheError::DeclaredProgramIdMismatch.into())
        );
    }
}
