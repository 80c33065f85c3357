//! `set_paused(paused: bool)`.

use pinocchio::{AccountView, ProgramResult};

use super::owner_ix;
use crate::args::Args;

/// The owner pauses (aborting a running epoch) or resumes the run.
///
/// Accounts: `owner` (signer), `run`, `coordinator` (writable), `slot_hashes`.
pub fn set_paused(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let mut a = Args(args);
    let paused = a.bool()?;
    a.end()?;
    owner_ix(accounts, |state, now| {
        if paused {
            state.pause(now)
        } else {
            state.resume(now)
        }
    })
}
