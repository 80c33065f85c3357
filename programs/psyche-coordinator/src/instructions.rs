//! Instruction handlers. Each checks its accounts the way Anchor's `#[derive(Accounts)]` would
//! (signer, writable, owner, size, discriminator, PDA, has-one) and returns Anchor's error codes
//! for those; the run's rules are the core's (`psyche_core::State`), whose errors are returned as
//! `6000 + CoreError::code()`.
//!
//! Every handler that changes the state ticks it first (clock from the Clock sysvar, randomness
//! from the most recent SlotHashes entry), then applies its own transition. A failed transition
//! fails the transaction, which also discards the tick.

use bytemuck::Pod;
use pinocchio::{
    cpi::{Seed, Signer},
    error::ProgramError,
    AccountView, Address, ProgramResult,
};
use pinocchio_system::instructions::{Allocate, Assign, CreateAccount, Transfer};
use psyche_core::{Config, CoreResult, ModelRef, Phase, State, WitnessInput, STATE_VERSION};

use crate::{
    error::{core_error, PsycheError},
    state::{CoordinatorAccount, Peer, Run, PEER_ADDR_BYTES, PEER_SEED, RUN_SEED},
    ID,
};

/// The system program's address (all zeros).
const SYSTEM_PROGRAM_ID: Address = Address::new_from_array([0; 32]);

/// The SlotHashes sysvar's address (`SysvarS1otHashes111111111111111111111111111`).
pub const SLOT_HASHES_ID: Address = pinocchio::sysvars::slot_hashes::SLOTHASHES_ID;

// ------------------------------------------------------------------------------ argument parsing

/// Reads the arguments one after another (Borsh layout of fixed-size values) and requires that
/// nothing is left over at the end, so an oversize payload is rejected.
struct Args<'a>(&'a [u8]);

impl<'a> Args<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProgramError> {
        if self.0.len() < n {
            return Err(PsycheError::InstructionDidNotDeserialize.into());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn pod<T: Pod>(&mut self) -> Result<T, ProgramError> {
        let b = self.bytes(core::mem::size_of::<T>())?;
        bytemuck::try_pod_read_unaligned(b)
            .map_err(|_| PsycheError::InstructionDidNotDeserialize.into())
    }

    fn key(&mut self) -> Result<[u8; 32], ProgramError> {
        self.pod()
    }

    fn bool(&mut self) -> Result<bool, ProgramError> {
        match self.bytes(1)? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(PsycheError::InstructionDidNotDeserialize.into()),
        }
    }

    fn option<T: Pod>(&mut self) -> Result<Option<T>, ProgramError> {
        if self.bool()? {
            self.pod().map(Some)
        } else {
            Ok(None)
        }
    }

    /// A Borsh `string` (u32 length, UTF-8 bytes) of at most `max` bytes.
    fn string(&mut self, max: usize) -> Result<&'a [u8], ProgramError> {
        let len: u32 = self.pod()?;
        let len = len as usize;
        if len > max {
            return Err(PsycheError::InvalidAddress.into());
        }
        let bytes = self.bytes(len)?;
        core::str::from_utf8(bytes).map_err(|_| PsycheError::InvalidAddress)?;
        Ok(bytes)
    }

    fn end(self) -> ProgramResult {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(PsycheError::InstructionDidNotDeserialize.into())
        }
    }
}

// ------------------------------------------------------------------------------ account checks

fn require_signer(a: &AccountView) -> ProgramResult {
    if a.is_signer() {
        Ok(())
    } else {
        Err(PsycheError::AccountNotSigner.into())
    }
}

fn require_writable(a: &AccountView) -> ProgramResult {
    if a.is_writable() {
        Ok(())
    } else {
        Err(PsycheError::ConstraintMut.into())
    }
}

fn require_owned(a: &AccountView) -> ProgramResult {
    if a.owned_by(&ID) {
        Ok(())
    } else {
        Err(PsycheError::AccountOwnedByWrongProgram.into())
    }
}

/// Loads (a copy of) the run: owned by this program, right size and discriminator.
///
/// The run's address is not re-derived: only this program creates accounts it owns with the
/// `Run` discriminator, and only at their PDA (checked in `init_run`).
fn load_run(run: &AccountView) -> Result<Run, ProgramError> {
    require_owned(run)?;
    let data = run.try_borrow()?;
    Ok(*Run::load(&data)?)
}

/// Checks the coordinator account (writable, owned, size, discriminator, bound to `run` both
/// ways, layout version) and runs `f` on its state.
fn with_state<R>(
    run_address: &Address,
    run: &Run,
    coordinator: &mut AccountView,
    f: impl FnOnce(&mut State) -> Result<R, ProgramError>,
) -> Result<R, ProgramError> {
    require_writable(coordinator)?;
    require_owned(coordinator)?;
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

/// The most recent slot hash: the randomness every tick gets.
fn randomness(slot_hashes: &AccountView) -> Result<[u8; 32], ProgramError> {
    if slot_hashes.address() != &SLOT_HASHES_ID {
        return Err(PsycheError::AccountSysvarMismatch.into());
    }
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

fn core<T>(r: CoreResult<T>) -> Result<T, ProgramError> {
    r.map_err(core_error)
}

/// The accounts of a member instruction: `[user (signer), run, coordinator (mut), slot_hashes]`.
/// Ticks, then runs `f(state, wallet, now)`.
fn member_ix(
    accounts: &mut [AccountView],
    f: impl FnOnce(&mut State, &[u8; 32], i64) -> CoreResult<()>,
) -> ProgramResult {
    let [user, run, coordinator, slot_hashes, ..] = accounts else {
        return Err(PsycheError::AccountNotEnoughKeys.into());
    };
    require_signer(user)?;
    let wallet = user.address().to_bytes();
    let run_state = load_run(run)?;
    let seed = randomness(slot_hashes)?;
    let now = sys::now()?;
    with_state(run.address(), &run_state, coordinator, |state| {
        core(state.tick(now, &seed))?;
        core(f(state, &wallet, now))
    })
}

/// The accounts of an owner instruction: `[owner (signer), run, coordinator (mut),
/// slot_hashes]`. Ticks, then runs `f(run, state, now)`.
fn owner_ix(
    accounts: &mut [AccountView],
    f: impl FnOnce(&mut State, i64) -> CoreResult<()>,
) -> Result<(), ProgramError> {
    let [owner, run, coordinator, slot_hashes, ..] = accounts else {
        return Err(PsycheError::AccountNotEnoughKeys.into());
    };
    require_signer(owner)?;
    let run_state = load_run(run)?;
    if run_state.owner != owner.address().to_bytes() {
        return Err(PsycheError::Unauthorized.into());
    }
    let seed = randomness(slot_hashes)?;
    let now = sys::now()?;
    with_state(run.address(), &run_state, coordinator, |state| {
        core(state.tick(now, &seed))?;
        core(f(state, now))
    })
}

// ------------------------------------------------------------------------------ instructions

/// `init_run(run_id: [u8; 32], join_authority: Pubkey, config: Config, model: ModelRef)`.
///
/// Accounts: `owner` (signer, writable: pays for the run PDA and owns the run), `run`
/// (writable, the PDA `[RUN_SEED, run_id]`, created here), `coordinator` (signer, writable:
/// created just before in the same transaction by `system_program::create_account` with
/// `CoordinatorAccount::SPACE` bytes and this program as owner), `system_program`.
/// The state starts `Paused` (the core's `init`); `set_paused(false)` opens it.
pub fn init_run(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let [owner, run, coordinator, system_program, ..] = accounts else {
        return Err(PsycheError::AccountNotEnoughKeys.into());
    };
    let mut a = Args(args);
    let run_id = a.key()?;
    let join_authority = a.key()?;
    let config: Config = a.pod()?;
    let model: ModelRef = a.pod()?;
    a.end()?;

    require_signer(owner)?;
    require_signer(coordinator)?;
    require_writable(owner)?;
    require_writable(run)?;
    require_writable(coordinator)?;
    require_owned(coordinator)?;
    if coordinator.data_len() != CoordinatorAccount::SPACE {
        return Err(PsycheError::AccountSize.into());
    }
    if system_program.address() != &SYSTEM_PROGRAM_ID {
        return Err(PsycheError::InvalidProgramId.into());
    }
    let (expected, bump) = sys::find_run_address(&run_id)?;
    if run.address() != &expected {
        return Err(PsycheError::ConstraintSeeds.into());
    }
    let now = sys::now()?;

    let bump_seed = [bump];
    let seeds = [
        Seed::from(RUN_SEED),
        Seed::from(&run_id),
        Seed::from(&bump_seed),
    ];
    create_pda(owner, run, Run::SPACE, &[Signer::from(&seeds)])?;

    let record = Run {
        owner: owner.address().to_bytes(),
        join_authority,
        coordinator: coordinator.address().to_bytes(),
        run_id,
        state_version: STATE_VERSION,
        bump,
        reserved: [0; 3],
    };
    Run::store(&mut run.try_borrow_mut()?, &record)?;
    let run_address = run.address().to_bytes();
    let mut data = coordinator.try_borrow_mut()?;
    let state = CoordinatorAccount::init(&mut data, &run_address)?;
    core(state.init(&run_id, &config, &model, now))
}

/// `update(config: Option<Config>, model: Option<ModelRef>, join_authority: Option<Pubkey>)`:
/// the owner changes the run while it is paused (`NotHalted` otherwise).
///
/// Accounts: `owner` (signer), `run` (writable), `coordinator` (writable), `slot_hashes`.
pub fn update(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let mut a = Args(args);
    let config: Option<Config> = a.option()?;
    let model: Option<ModelRef> = a.option()?;
    let join_authority: Option<[u8; 32]> = a.option()?;
    a.end()?;
    owner_ix(accounts, |state, now| {
        if state.phase()? != Phase::Paused {
            return Err(psyche_core::CoreError::NotHalted);
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
        require_writable(run)?;
        Run::load_mut(&mut run.try_borrow_mut()?)?.join_authority = key;
    }
    Ok(())
}

/// `set_paused(paused: bool)`: the owner pauses (aborting a running epoch) or resumes the run.
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

/// `join_run(node_key: [u8; 32])`: registers the signer's wallet with its node key.
///
/// Accounts: `user` (signer), `authorizer` (signer: the run's join authority when it has one,
/// any signer — usually `user` again — when it has none), `run`, `coordinator` (writable),
/// `slot_hashes`.
pub fn join_run(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let mut a = Args(args);
    let node_key = a.key()?;
    a.end()?;
    let [user, authorizer, rest @ ..] = accounts else {
        return Err(PsycheError::AccountNotEnoughKeys.into());
    };
    require_signer(authorizer)?;
    let run = rest.first().ok_or(PsycheError::AccountNotEnoughKeys)?;
    let run_state = load_run(run)?;
    if run_state.join_authority != [0; 32]
        && run_state.join_authority != authorizer.address().to_bytes()
    {
        return Err(PsycheError::JoinNotAuthorized.into());
    }
    // Re-assemble `[user, run, coordinator, slot_hashes]`.
    let [run, coordinator, slot_hashes, ..] = rest else {
        return Err(PsycheError::AccountNotEnoughKeys.into());
    };
    require_signer(user)?;
    let wallet = user.address().to_bytes();
    let seed = randomness(slot_hashes)?;
    let now = sys::now()?;
    with_state(run.address(), &run_state, coordinator, |state| {
        core(state.tick(now, &seed))?;
        core(state.join(&wallet, &node_key, now)).map(|_| ())
    })
}

/// `withdraw()`: the signer leaves the run. Accounts as `join_run` without `authorizer`.
pub fn withdraw(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    Args(args).end()?;
    member_ix(accounts, |state, wallet, now| state.withdraw(wallet, now))
}

/// `tick()`: permissionless; performs the due phase change, if any.
///
/// Accounts: `run`, `coordinator` (writable), `slot_hashes`.
pub fn tick(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    Args(args).end()?;
    let [run, coordinator, slot_hashes, ..] = accounts else {
        return Err(PsycheError::AccountNotEnoughKeys.into());
    };
    let run_state = load_run(run)?;
    let seed = randomness(slot_hashes)?;
    let now = sys::now()?;
    with_state(run.address(), &run_state, coordinator, |state| {
        core(state.tick(now, &seed)).map(|_| ())
    })
}

/// `warmup_witness()`: a member reports it loaded the model.
pub fn warmup_witness(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    Args(args).end()?;
    member_ix(accounts, |state, wallet, now| {
        state.warmup_witness(wallet, now)
    })
}

/// `witness(input: WitnessInput)`: a witness of the current round submits its filters.
pub fn witness(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let mut a = Args(args);
    let input: WitnessInput = a.pod()?;
    a.end()?;
    member_ix(accounts, |state, wallet, now| {
        state.witness(wallet, &input, now)
    })
}

/// `health_check(target: u16, height: u32)`: a member drops an unhealthy target.
pub fn health_check(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let mut a = Args(args);
    let target: u16 = a.pod()?;
    let height: u32 = a.pod()?;
    a.end()?;
    member_ix(accounts, |state, wallet, now| {
        state.health_check(wallet, target, height, now).map(|_| ())
    })
}

/// `report(target: u16)`: a verifier reports its assigned target's result as wrong.
pub fn report(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let mut a = Args(args);
    let target: u16 = a.pod()?;
    a.end()?;
    member_ix(accounts, |state, wallet, now| {
        state.report(wallet, target, now).map(|_| ())
    })
}

/// `checkpoint(model: ModelRef)`: a healthy member records the epoch's checkpoint in Cooldown.
pub fn checkpoint(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let mut a = Args(args);
    let model: ModelRef = a.pod()?;
    a.end()?;
    member_ix(accounts, |state, wallet, now| {
        state.checkpoint(wallet, &model, now)
    })
}

/// `close_run()`: the owner closes a paused or finished run; both accounts' rent goes to the
/// owner.
///
/// Accounts: `owner` (signer, writable), `run` (writable), `coordinator` (writable).
pub fn close_run(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    Args(args).end()?;
    let [owner, run, coordinator, ..] = accounts else {
        return Err(PsycheError::AccountNotEnoughKeys.into());
    };
    require_signer(owner)?;
    require_writable(owner)?;
    require_writable(run)?;
    let run_state = load_run(run)?;
    if run_state.owner != owner.address().to_bytes() {
        return Err(PsycheError::Unauthorized.into());
    }
    with_state(run.address(), &run_state, coordinator, |state| match state
        .phase()
        .map_err(core_error)?
    {
        Phase::Paused | Phase::Finished => Ok(()),
        _ => Err(PsycheError::RunNotHalted.into()),
    })?;
    let total = owner
        .lamports()
        .checked_add(run.lamports())
        .and_then(|l| l.checked_add(coordinator.lamports()))
        .ok_or(ProgramError::ArithmeticOverflow)?;
    owner.set_lamports(total);
    for account in [run, coordinator] {
        // Wipe the discriminator too, so nothing in this transaction can use it again.
        if let Some(tag) = account.try_borrow_mut()?.get_mut(..8) {
            tag.fill(0);
        }
        account.set_lamports(0);
        account.close()?;
    }
    Ok(())
}

/// `advertise(p2p_addr: string, fast_addr: string)`: a registered client publishes its p2p
/// endpoints in its peer PDA `[PEER_SEED, run, wallet]` (created on first use, the wallet pays
/// the rent; later calls overwrite it). The entry carries the node key the run registered for
/// the wallet.
///
/// Accounts: `user` (signer, writable), `run`, `coordinator`, `peer` (writable), `system_program`.
pub fn advertise(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let mut a = Args(args);
    let p2p_addr = a.string(PEER_ADDR_BYTES)?;
    let fast_addr = a.string(PEER_ADDR_BYTES)?;
    a.end()?;
    let [user, run, coordinator, peer, system_program, ..] = accounts else {
        return Err(PsycheError::AccountNotEnoughKeys.into());
    };
    require_signer(user)?;
    require_writable(user)?;
    require_writable(peer)?;
    if system_program.address() != &SYSTEM_PROGRAM_ID {
        return Err(PsycheError::InvalidProgramId.into());
    }
    let run_state = load_run(run)?;
    let wallet = user.address().to_bytes();
    let node_key = {
        require_owned(coordinator)?;
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
            .find_client(&wallet)
            .ok_or(core_error(psyche_core::CoreError::UnknownClient))?;
        core(state.client(slot))?.node_key
    };
    let run_key = run.address().to_bytes();
    let (expected, bump) = sys::find_peer_address(&run_key, &wallet)?;
    if peer.address() != &expected {
        return Err(PsycheError::ConstraintSeeds.into());
    }
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

/// `close_peer()`: the wallet removes its peer entry; the rent returns to it.
///
/// Accounts: `user` (signer, writable), `peer` (writable).
pub fn close_peer(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    Args(args).end()?;
    let [user, peer, ..] = accounts else {
        return Err(PsycheError::AccountNotEnoughKeys.into());
    };
    require_signer(user)?;
    require_writable(user)?;
    require_writable(peer)?;
    require_owned(peer)?;
    {
        let mut data = peer.try_borrow_mut()?;
        let entry = Peer::load_mut(&mut data, false)?;
        if entry.wallet != user.address().to_bytes() {
            return Err(PsycheError::Unauthorized.into());
        }
        if let Some(tag) = data.get_mut(..8) {
            tag.fill(0);
        }
    }
    let total = user
        .lamports()
        .checked_add(peer.lamports())
        .ok_or(ProgramError::ArithmeticOverflow)?;
    user.set_lamports(total);
    peer.set_lamports(0);
    peer.close()
}

/// What needs the SBF runtime (syscalls); on the host these report `UnsupportedSysvar`, and the
/// handlers that use them are exercised on SBF (tests/solana).
mod sys {
    use pinocchio::{error::ProgramError, Address};

    use crate::{state::RUN_SEED, ID};

    /// Unix time from the Clock sysvar.
    #[cfg(any(target_os = "solana", target_arch = "bpf"))]
    pub fn now() -> Result<i64, ProgramError> {
        // slot, epoch_start_timestamp, epoch, leader_schedule_epoch, unix_timestamp: 40 bytes.
        // The dedicated syscall, not `Clock::get()`: pinocchio gates its `sol_get_sysvar` path on
        // `target_os = "solana"` only, which this toolchain's target does not set.
        let mut clock = [0u64; 5];
        // SAFETY: the syscall writes exactly the 40-byte Clock struct into `clock`.
        #[allow(deprecated)]
        let rc = unsafe { pinocchio::syscalls::sol_get_clock_sysvar(clock.as_mut_ptr().cast()) };
        if rc != 0 {
            return Err(ProgramError::UnsupportedSysvar);
        }
        Ok(clock[4] as i64)
    }

    /// The run PDA for `run_id` and its canonical bump.
    #[cfg(any(target_os = "solana", target_arch = "bpf"))]
    pub fn find_run_address(run_id: &[u8; 32]) -> Result<(Address, u8), ProgramError> {
        Address::try_find_program_address(&[RUN_SEED, run_id], &ID)
            .ok_or(ProgramError::InvalidSeeds)
    }

    /// The peer PDA for (`run`, `wallet`) and its canonical bump.
    #[cfg(any(target_os = "solana", target_arch = "bpf"))]
    pub fn find_peer_address(
        run: &[u8; 32],
        wallet: &[u8; 32],
    ) -> Result<(Address, u8), ProgramError> {
        Address::try_find_program_address(&[crate::state::PEER_SEED, run, wallet], &ID)
            .ok_or(ProgramError::InvalidSeeds)
    }

    /// Lamports that make an account of `data_len` bytes rent-exempt, from the Rent sysvar.
    ///
    /// Computed here rather than with pinocchio's `Rent`, which assumes the SIMD-0194 layout
    /// (exemption threshold 1) and would under-fund accounts on clusters still at threshold 2.
    /// Integer-only on purpose: upstream LLVM's BPF backend cannot call soft-float or 128-bit
    /// multiply helpers, so f64 math and `u64::checked_mul` do not link (see the decision doc).
    #[cfg(any(target_os = "solana", target_arch = "bpf"))]
    pub fn rent_exempt_minimum(data_len: u64) -> Result<u64, ProgramError> {
        /// Bytes every account is charged for besides its data.
        const ACCOUNT_STORAGE_OVERHEAD: u64 = 128;
        // The sysvar as the runtime stores it: lamports_per_byte_year u64, exemption_threshold
        // f64, burn_percent u8 (+ padding): 24 bytes, 8-aligned.
        let mut rent = [0u64; 3];
        // SAFETY: the syscall writes exactly the 24-byte Rent struct into `rent`.
        #[allow(deprecated)]
        let rc = unsafe { pinocchio::syscalls::sol_get_rent_sysvar(rent.as_mut_ptr().cast()) };
        if rc != 0 {
            return Err(ProgramError::UnsupportedSysvar);
        }
        let [lamports_per_byte_year, threshold_bits, _] = rent;
        // Every cluster uses a whole-number threshold: 2.0 (classic) or 1.0 (SIMD-0194).
        let years = match threshold_bits {
            0x4000_0000_0000_0000 => 2, // 2.0f64
            0x3ff0_0000_0000_0000 => 1, // 1.0f64
            _ => return Err(ProgramError::InvalidAccountData),
        };
        let bytes = ACCOUNT_STORAGE_OVERHEAD
            .checked_add(data_len)
            .ok_or(ProgramError::ArithmeticOverflow)?;
        crate::math::mul(bytes, lamports_per_byte_year)
            .and_then(|per_year| crate::math::mul(per_year, years))
            .ok_or(ProgramError::ArithmeticOverflow)
    }

    #[cfg(not(any(target_os = "solana", target_arch = "bpf")))]
    pub fn now() -> Result<i64, ProgramError> {
        Err(ProgramError::UnsupportedSysvar)
    }

    #[cfg(not(any(target_os = "solana", target_arch = "bpf")))]
    pub fn find_run_address(_run_id: &[u8; 32]) -> Result<(Address, u8), ProgramError> {
        let _ = (RUN_SEED, ID);
        Err(ProgramError::UnsupportedSysvar)
    }

    #[cfg(not(any(target_os = "solana", target_arch = "bpf")))]
    pub fn find_peer_address(
        _run: &[u8; 32],
        _wallet: &[u8; 32],
    ) -> Result<(Address, u8), ProgramError> {
        Err(ProgramError::UnsupportedSysvar)
    }

    #[cfg(not(any(target_os = "solana", target_arch = "bpf")))]
    pub fn rent_exempt_minimum(_data_len: u64) -> Result<u64, ProgramError> {
        Err(ProgramError::UnsupportedSysvar)
    }
}
