//! Instruction handlers, one file each. A handler parses its arguments (`crate::args`), checks
//! its accounts with the one loader (`crate::accounts::load`, Anchor's error codes), then
//! applies the core's rule (`psyche_core::State`), whose errors are returned as
//! `CORE_ERROR_BASE + CoreError::code()`.
//!
//! Every handler that changes the state ticks it first (clock from the Clock sysvar, randomness
//! from the most recent SlotHashes entry), then applies its own transition. A failed transition
//! fails the transaction, which also discards the tick. This file holds what several handlers
//! share: the run and coordinator loaders, the tick, PDA creation and the member/owner shapes.

mod advertise;
mod checkpoint;
mod close_peer;
mod close_run;
mod health_check;
mod init_run;
mod join_run;
mod report;
mod set_paused;
mod tick;
mod update;
mod warmup_witness;
mod withdraw;
mod witness;

pub use self::{
    advertise::advertise, checkpoint::checkpoint, close_peer::close_peer, close_run::close_run,
    health_check::health_check, init_run::init_run, join_run::join_run, report::report,
    set_paused::set_paused, tick::tick, update::update, warmup_witness::warmup_witness,
    withdraw::withdraw, witness::witness,
};

use pinocchio::{cpi::Signer, error::ProgramError, AccountView, Address, ProgramResult};
use pinocchio_system::instructions::{Allocate, Assign, CreateAccount, Transfer};
use psyche_core::{CoreResult, State, STATE_VERSION};

use crate::{
    accounts::{self, Spec},
    error::{core_error, PsycheError},
    state::{CoordinatorAccount, Run},
    sys, ID,
};

pub use crate::accounts::SLOT_HASHES_ID;

/// Accounts of a member instruction: `[user (signer), run, coordinator (mut), slot_hashes]`.
const MEMBER: [Spec; 4] = [
    Spec::ANY.signer(),
    Spec::ANY.owned(),
    Spec::ANY.writable().owned(),
    Spec::SLOT_HASHES,
];

/// Accounts of an owner instruction: `[owner (signer), run, coordinator (mut), slot_hashes]`.
const OWNER: [Spec; 4] = MEMBER;

/// A core result as the program's error (`CORE_ERROR_BASE + code`).
fn core<T>(r: CoreResult<T>) -> Result<T, ProgramError> {
    r.map_err(core_error)
}

/// Loads (a copy of) the run: its owner was checked by the loader; this checks size and
/// discriminator.
///
/// The run's address is not re-derived: only this program creates accounts it owns with the
/// `Run` discriminator, and only at their PDA (checked in `init_run`).
fn load_run(run: &AccountView) -> Result<Run, ProgramError> {
    let data = run.try_borrow()?;
    Ok(*Run::load(&data)?)
}

/// Checks the coordinator account (size, discriminator, bound to `run` both ways, layout
/// version; writable and owner were checked by the loader) and runs `f` on its state.
fn with_state<R>(
    run_address: &Address,
    run: &Run,
    coordinator: &mut AccountView,
    f: impl FnOnce(&mut State) -> Result<R, ProgramError>,
) -> Result<R, ProgramError> {
    if coordinator.address().to_bytes() != run.coordinator {
        return Err(PsycheError::CoordinatorMismatch.into());
    }
    let mut data = coordinator.try_borrow_mut()?;
    let (header, state) = CoordinatorAccount::load_mut(&mut data)?;
    if header.run != run_address.to_bytes() {
        return Err(PsycheError::CoordinatorMismatch.into());
    }
    if state.version != STATE_VERSION || run.state_version != STATE_VERSION {
        return Err(PsycheError::VersionMismatch.into());
    }
    f(state)
}

/// The most recent slot hash: the randomness every tick gets (the loader checked the address).
fn randomness(slot_hashes: &AccountView) -> Result<[u8; 32], ProgramError> {
    let data = slot_hashes.try_borrow()?;
    // u64 entry count, then (slot u64, hash [32]) entries, most recent first.
    let count = data
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    let hash = data.get(16..48).filter(|_| count > 0);
    let hash = hash.ok_or(PsycheError::SlotHashesUnavailable)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(hash);
    Ok(out)
}

/// Ticks the run's state, then runs `f(state, now)`: the body of every state-changing handler.
fn tick_then<R>(
    run: &AccountView,
    run_state: &Run,
    coordinator: &mut AccountView,
    slot_hashes: &AccountView,
    f: impl FnOnce(&mut State, i64) -> CoreResult<R>,
) -> Result<R, ProgramError> {
    let seed = randomness(slot_hashes)?;
    let now = sys::now()?;
    with_state(run.address(), run_state, coordinator, |state| {
        core(state.tick(now, &seed))?;
        core(f(state, now))
    })
}

/// A member instruction (`MEMBER` accounts): ticks, then runs `f(state, wallet, now)`.
fn member_ix(
    accounts: &mut [AccountView],
    f: impl FnOnce(&mut State, &[u8; 32], i64) -> CoreResult<()>,
) -> ProgramResult {
    let [user, run, coordinator, slot_hashes] = accounts::load(accounts, &MEMBER)?;
    let wallet = user.address().to_bytes();
    let run_state = load_run(run)?;
    tick_then(run, &run_state, coordinator, slot_hashes, |state, now| {
        f(state, &wallet, now)
    })
}

/// An owner instruction (`OWNER` accounts, the signer must be the run's owner): ticks, then
/// runs `f(state, now)`.
fn owner_ix(
    accounts: &mut [AccountView],
    f: impl FnOnce(&mut State, i64) -> CoreResult<()>,
) -> ProgramResult {
    let [owner, run, coordinator, slot_hashes] = accounts::load(accounts, &OWNER)?;
    let run_state = load_run(run)?;
    require_owner(&run_state, owner)?;
    tick_then(run, &run_state, coordinator, slot_hashes, f)
}

/// The signer must be the run's owner (`Unauthorized`).
fn require_owner(run: &Run, owner: &AccountView) -> ProgramResult {
    if run.owner == owner.address().to_bytes() {
        Ok(())
    } else {
        Err(PsycheError::Unauthorized.into())
    }
}

/// Creates the program-owned PDA `account` with `space` bytes, rent paid by `payer`. An address
/// that someone funded beforehand (which would make `create_account` fail) is topped up,
/// allocated and assigned instead, so nobody can block a PDA by sending it lamports.
fn create_pda(
    payer: &AccountView,
    account: &AccountView,
    space: usize,
    signer: &[Signer],
) -> ProgramResult {
    let rent = sys::rent_exempt_minimum(space as u64)?;
    if account.lamports() == 0 {
        return CreateAccount {
            from: payer,
            to: account,
            lamports: rent,
            space: space as u64,
            owner: &ID,
        }
        .invoke_signed(signer);
    }
    let missing = rent.saturating_sub(account.lamports());
    if missing > 0 {
        Transfer {
            from: payer,
            to: account,
            lamports: missing,
        }
        .invoke()?;
    }
    Allocate {
        account,
        space: space as u64,
    }
    .invoke_signed(signer)?;
    Assign {
        account,
        owner: &ID,
    }
    .invoke_signed(signer)
}

/// Moves all of `account`'s lamports to `to` and closes it, wiping its discriminator first so
/// nothing later in the transaction can use it again.
fn close_into(to: &mut AccountView, account: &mut AccountView) -> ProgramResult {
    let total = to
        .lamports()
        .checked_add(account.lamports())
        .ok_or(ProgramError::ArithmeticOverflow)?;
    to.set_lamports(total);
    if let Some(tag) = account.try_borrow_mut()?.get_mut(..8) {
        tag.fill(0);
    }
    account.set_lamports(0);
    account.close()
}
