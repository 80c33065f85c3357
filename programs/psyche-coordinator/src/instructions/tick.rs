//! `tick()`.

use pinocchio::{AccountView, ProgramResult};

use super::{load_run, tick_then};
use crate::{
    accounts::{self, Spec},
    args::Args,
};

/// `[run, coordinator (mut), slot_hashes]`.
const ACCOUNTS: [Spec; 3] = [
    Spec::ANY.owned(),
    Spec::ANY.writable().owned(),
    Spec::SLOT_HASHES,
];

/// Permissionless: performs the due phase change, if any.
pub fn tick(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    Args(args).end()?;
    let [run, coordinator, slot_hashes] = accounts::load(accounts, &ACCOUNTS)?;
    let run_state = load_run(run)?;
    tick_then(run, &run_state, coordinator, slot_hashes, |_, _| Ok(()))
}
