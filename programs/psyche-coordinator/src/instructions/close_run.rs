//! `close_run()`.

use pinocchio::{AccountView, ProgramResult};
use psyche_core::Phase;

use super::{close_into, load_run, require_owner, with_state};
use crate::{
    accounts::{self, Spec},
    args::Args,
    error::{core_error, PsycheError},
};

/// `[owner (signer, mut), run (mut), coordinator (mut)]`.
const ACCOUNTS: [Spec; 3] = [
    Spec::ANY.signer().writable(),
    Spec::ANY.writable().owned(),
    Spec::ANY.writable().owned(),
];

/// The owner closes a paused or finished run; both accounts' rent goes to the owner.
pub fn close_run(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    Args(args).end()?;
    let [owner, run, coordinator] = accounts::load(accounts, &ACCOUNTS)?;
    let run_state = load_run(run)?;
    require_owner(&run_state, owner)?;
    with_state(run.address(), &run_state, coordinator, |state| match state
        .phase()
        .map_err(core_error)?
    {
        Phase::Paused | Phase::Finished => Ok(()),
        _ => Err(PsycheError::RunNotHalted.into()),
    })?;
    close_into(owner, run)?;
    close_into(owner, coordinator)
}
