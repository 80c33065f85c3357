//! `join_run(node_key: [u8; 32])`.

use pinocchio::{AccountView, ProgramResult};

use super::{load_run, tick_then};
use crate::{
    accounts::{self, Spec},
    args::Args,
    error::PsycheError,
};

/// `[user (signer), authorizer (signer), node (signer), run, coordinator (mut), slot_hashes]`.
const ACCOUNTS: [Spec; 6] = [
    Spec::ANY.signer(),
    Spec::ANY.signer(),
    Spec::ANY.signer(),
    Spec::ANY.owned(),
    Spec::ANY.writable().owned(),
    Spec::SLOT_HASHES,
];

/// Registers the signer's wallet with its node key.
///
/// Accounts: `user`, `authorizer` (the run's join authority when it has one, any signer —
/// usually `user` again — when it has none), `node` (the node key itself, signing: proof that
/// the joiner holds it, so nobody can register a victim's key first), `run`, `coordinator`,
/// `slot_hashes`.
pub fn join_run(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let mut a = Args(args);
    let node_key = a.key()?;
    a.end()?;
    let [user, authorizer, node, run, coordinator, slot_hashes] =
        accounts::load(accounts, &ACCOUNTS)?;
    if node.address().to_bytes() != node_key {
        return Err(PsycheError::NodeKeyNotSigner.into());
    }
    let run_state = load_run(run)?;
    if run_state.join_authority != [0; 32]
        && run_state.join_authority != authorizer.address().to_bytes()
    {
        return Err(PsycheError::JoinNotAuthorized.into());
    }
    let wallet = user.address().to_bytes();
    tick_then(run, &run_state, coordinator, slot_hashes, |state, now| {
        state.join(&wallet, &node_key, now).map(|_| ())
    })
}
