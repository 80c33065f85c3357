//! `init_run(run_id: [u8; 32], join_authority: Pubkey, config: Config, model: ModelRef)`.

use pinocchio::{
    cpi::{Seed, Signer},
    AccountView, ProgramResult,
};
use psyche_core::{Config, ModelRef, STATE_VERSION};

use super::{core, create_pda};
use crate::{
    accounts::{self, require_address, Spec},
    args::Args,
    state::{CoordinatorAccount, Run, RUN_SEED},
    sys,
};

/// `[owner (signer, mut), run (mut), coordinator (signer, mut, owned, sized), system_program]`.
const ACCOUNTS: [Spec; 4] = [
    Spec::ANY.signer().writable(),
    Spec::ANY.writable(),
    Spec::ANY
        .signer()
        .writable()
        .owned()
        .size(CoordinatorAccount::SPACE),
    Spec::SYSTEM_PROGRAM,
];

/// Creates a run.
///
/// Accounts: `owner` (pays for the run PDA and owns the run), `run` (the PDA
/// `[RUN_SEED, run_id]`, created here), `coordinator` (created just before in the same
/// transaction by `system_program::create_account` with `CoordinatorAccount::SPACE` bytes and
/// this program as owner), `system_program`. The state starts `Paused` (the core's `init`);
/// `set_paused(false)` opens it.
pub fn init_run(accounts: &mut [AccountView], args: &[u8]) -> ProgramResult {
    let [owner, run, coordinator, _system_program] = accounts::load(accounts, &ACCOUNTS)?;
    let mut a = Args(args);
    let run_id = a.key()?;
    let join_authority = a.key()?;
    let config: Config = a.pod()?;
    let model: ModelRef = a.pod()?;
    a.end()?;

    let (expected, bump) = sys::find_run_address(&run_id)?;
    require_address(run, &expected)?;
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
