//! `close_peer()`.

use pinocchio::{AccountView, ProgramResult};

use super::close_into;
use crate::{
    accounts::{self, Spec},
    args::Args,
    error::PsycheError,
    state::Peer,
};

/// `[user (signer, mut), peer (mut, owned)]`.
const ACCOUNTS: [Spec; 2] = [Spec::ANY.signer().writable(), Spec::ANY.writable().owned()];

/// The wallet removes its peer entry; the rent returns to it.
pub fn close_peer(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    Args(args).end()?;
    let [user, peer] = accounts::load(accounts, &ACCOUNTS)?;
    if Peer::load_mut(&mut peer.try_borrow_mut()?, false)?.wallet != user.address().to_bytes() {
        return Err(PsycheError::Unauthorized.into());
    }
    close_into(user, peer)
}
