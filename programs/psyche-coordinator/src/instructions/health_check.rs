//! `health_check(target: u16, height: u32)`.

use pinocchio::{AccountView, ProgramResult};

use super::member_ix;
use crate::args::Args;

/// A member drops an unhealthy target. Accounts: a member instruction's.
pub fn health_check(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let mut a = Args(args);
    let target: u16 = a.pod()?;
    let height: u32 = a.pod()?;
    a.end()?;
    member_ix(accounts, |state, wallet, now| {
        state.health_check(wallet, target, height, now).map(|_| ())
    })
}
