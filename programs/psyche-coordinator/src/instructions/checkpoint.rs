//! `checkpoint(model: ModelRef)`.

use pinocchio::{AccountView, ProgramResult};
use psyche_core::ModelRef;

use super::member_ix;
use crate::args::Args;

/// A healthy member records the epoch's checkpoint in Cooldown. Accounts: a member
/// instruction's.
pub fn checkpoint(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let mut a = Args(args);
    let model: ModelRef = a.pod()?;
    a.end()?;
    member_ix(accounts, |state, wallet, now| {
        state.checkpoint(wallet, &model, now)
    })
}
