//! `report(target: u16)`.

use pinocchio::{AccountView, ProgramResult};

use super::member_ix;
use crate::args::Args;

/// A verifier reports its assigned target's result as wrong. Accounts: a member instruction's.
pub fn report(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let mut a = Args(args);
    let target: u16 = a.pod()?;
    a.end()?;
    member_ix(accounts, |state, wallet, now| {
        state.report(wallet, target, now).map(|_| ())
    })
}
