//! `advertise(p2p_addr: string, fast_addr: string)`.

use pinocchio::{
    cpi::{Seed, Signer},
    error::ProgramError,
    AccountView, ProgramResult,
};
use psyche_core::{CoreError, STATE_VERSION};

use super::{core, create_pda, load_run};
use crate::{
    accounts::{self, require_address, Spec},
    args::Args,
    error::{core_error, PsycheError},
    state::{CoordinatorAccount, Peer, Run, PEER_ADDR_BYTES, PEER_SEED},
    sys, ID,
};

/// `[user (signer, mut), run, coordinator, peer (mut), system_program]`.
const ACCOUNTS: [Spec; 5] = [
    Spec::ANY.signer().writable(),
    Spec::ANY.owned(),
    Spec::ANY.owned(),
    Spec::ANY.writable(),
    Spec::SYSTEM_PROGRAM,
];

/// A registered client publishes its p2p endpoints in its peer PDA `[PEER_SEED, run, wallet]`
/// (created on first use, the wallet pays the rent; later calls overwrite it). The entry
/// carries the node key the run registered for the wallet.
pub fn advertise(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let mut a = Args(args);
    let p2p_addr = a.string(PEER_ADDR_BYTES)?;
    let fast_addr = a.string(PEER_ADDR_BYTES)?;
    a.end()?;
    let [user, run, coordinator, peer, _system_program] = accounts::load(accounts, &ACCOUNTS)?;
    let run_state = load_run(run)?;
    let wallet = user.address().to_bytes();
    let node_key = registered_node_key(run, &run_state, coordinator, &wallet)?;
    let run_key = run.address().to_bytes();
    let (expected, bump) = sys::find_peer_address(&run_key, &wallet)?;
    require_address(peer, &expected)?;
    let fresh = !peer.owned_by(&ID);
    if fresh {
        let bump_seed = [bump];
        let seeds = [
            Seed::from(PEER_SEED),
            Seed::from(&run_key),
            Seed::from(&wallet),
            Seed::from(&bump_seed),
        ];
        create_pda(user, peer, Peer::SPACE, &[Signer::from(&seeds)])?;
    }
    let now = sys::now()?;
    let mut data = peer.try_borrow_mut()?;
    let entry = Peer::load_mut(&mut data, fresh)?;
    if !fresh && (entry.run != run_key || entry.wallet != wallet) {
        return Err(PsycheError::ConstraintSeeds.into());
    }
    entry.run = run_key;
    entry.wallet = wallet;
    entry.node_key = node_key;
    entry.updated_at = now;
    entry.bump = bump;
    entry.p2p_addr_len = p2p_addr.len() as u16;
    entry.fast_addr_len = fast_addr.len() as u16;
    entry.p2p_addr = [0; PEER_ADDR_BYTES];
    entry.fast_addr = [0; PEER_ADDR_BYTES];
    // Lengths are at most PEER_ADDR_BYTES (`Args::string`); `get_mut` keeps this panic-free.
    entry
        .p2p_addr
        .get_mut(..p2p_addr.len())
        .ok_or(PsycheError::InvalidAddress)?
        .copy_from_slice(p2p_addr);
    entry
        .fast_addr
        .get_mut(..fast_addr.len())
        .ok_or(PsycheError::InvalidAddress)?
        .copy_from_slice(fast_addr);
    Ok(())
}

/// The node key the run registered for `wallet`, read from the (read-only) coordinator
/// account after checking it belongs to `run` and has this program's layout version.
fn registered_node_key(
    run: &AccountView,
    run_state: &Run,
    coordinator: &AccountView,
    wallet: &[u8; 32],
) -> Result<[u8; 32], ProgramError> {
    if coordinator.address().to_bytes() != run_state.coordinator {
        return Err(PsycheError::CoordinatorMismatch.into());
    }
    let data = coordinator.try_borrow()?;
    let (header, state) = CoordinatorAccount::load(&data)?;
    if header.run != run.address().to_bytes() {
        return Err(PsycheError::CoordinatorMismatch.into());
    }
    if state.version != STATE_VERSION {
        return Err(PsycheError::VersionMismatch.into());
    }
    let slot = state
        .find_client(wallet)
        .ok_or(core_error(CoreError::UnknownClient))?;
    Ok(core(state.client(slot))?.node_key)
}
