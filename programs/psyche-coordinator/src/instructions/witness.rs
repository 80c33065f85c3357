//! `witness(input: WitnessInput)`.

use pinocchio::{AccountView, ProgramResult};
use psyche_core::WitnessInput;

use super::member_ix;
use crate::args::Args;

/// A witness of the current round submits its filters. Accounts: a member instruction's.
pub fn witness(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let mut a = Args(args);
    let input: WitnessInput = a.pod()?;
    a.end()?;
    member_ix(accounts, |state, wallet, now| {
        state.witness(wallet, &input, now)
    })
}
