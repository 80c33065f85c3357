//! `withdraw()`.

use pinocchio::{AccountView, ProgramResult};

use super::member_ix;
use crate::args::Args;

/// The signer leaves the run. Accounts: a member instruction's (`user`, `run`, `coordinator`,
/// `slot_hashes`).
pub fn withdraw(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    Args(args).end()?;
    member_ix(accounts, |state, wallet, now| state.withdraw(wallet, now))
}
