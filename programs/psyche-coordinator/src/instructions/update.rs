//! `update(config: Option<Config>, model: Option<ModelRef>, join_authority: Option<Pubkey>)`.

use pinocchio::{AccountView, ProgramResult};
use psyche_core::{Config, CoreError, ModelRef, Phase};

use super::owner_ix;
use crate::{args::Args, error::PsycheError, state::Run};

/// The owner changes the run while it is paused (`NotHalted` otherwise).
///
/// Accounts: `owner` (signer), `run` (writable when `join_authority` is given), `coordinator`
/// (writable), `slot_hashes`.
pub fn update(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let mut a = Args(args);
    let config: Option<Config> = a.option()?;
    let model: Option<ModelRef> = a.option()?;
    let join_authority: Option<[u8; 32]> = a.option()?;
    a.end()?;
    owner_ix(accounts, |state, now| {
        if state.phase()? != Phase::Paused {
            return Err(CoreError::NotHalted);
        }
        if let Some(c) = config {
            state.update_config(&c, now)?;
        }
        if let Some(m) = model {
            state.update_model(&m, now)?;
        }
        Ok(())
    })?;
    if let Some(key) = join_authority {
        let run = accounts
            .get_mut(1)
            .ok_or(PsycheError::AccountNotEnoughKeys)?;
        if !run.is_writable() {
            return Err(PsycheError::ConstraintMut.into());
        }
        Run::load_mut(&mut run.try_borrow_mut()?)?.join_authority = key;
    }
    Ok(())
}
