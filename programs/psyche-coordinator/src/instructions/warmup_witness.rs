//! `warmup_witness()`.

use pinocchio::{AccountView, ProgramResult};

use super::member_ix;
use crate::args::Args;

/// A member reports it loaded the model. Accounts: a member instruction's.
pub fn warmup_witness(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    Args(args).end()?;
    member_ix(accounts, |state, wallet, now| {
        state.warmup_witness(wallet, now)
    })
}
