//! `Coordinator`: the coordinator state (the account body / TCP state bytes) with every
//! transition and derivation of the core. Thin: each method converts arguments, calls the core
//! and converts the result; every rule lives in `psyche_core`.

use crate::args::key32;
use crate::bloom::bloom_arg;
use crate::config::PyConfig;
use crate::enums::{PyClientState, PyPhase, PyTickOutcome, PyUnhealthy};
use crate::errors::core_err;
use crate::model::{model_new, PyModelRef};
use crate::views::{bitmap_slots, client_info, round_info, PyClientInfo, PyRoundInfo};
use psyche_core::derive::{self, Committee};
use psyche_core::{
    apply_set, Candidate, ClientState, CoreError, ModelKind, Phase, State, WitnessInput,
    WitnessStats, MAX_CLIENTS, STATE_SIZE,
};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The coordinator state (the account body / TCP state bytes) with every transition.
#[pyclass(name = "Coordinator", module = "psyche_client._core")]
pub struct PyCoordinator {
    state: Box<State>,
}

impl PyCoordinator {
    fn round_ref(&self, height: u32) -> PyResult<&psyche_core::Round> {
        self.state.round(height).map_err(core_err)
    }
}

#[pymethods]
impl PyCoordinator {
    /// A new run (starts `Paused`; call `resume`).
    #[new]
    #[pyo3(signature = (run_id, config=None, model=None, now=0))]
    fn new(
        run_id: &[u8],
        config: Option<PyConfig>,
        model: Option<PyModelRef>,
        now: i64,
    ) -> PyResult<Self> {
        let run_id = key32(run_id, "run_id")?;
        let config = config.map(|c| c.core()).unwrap_or_default();
        let model = match model {
            Some(m) => m.inner,
            None => model_new(ModelKind::Peers, "", "")?.inner,
        };
        let mut state = State::boxed_zeroed();
        state
            .init(&run_id, &config, &model, now)
            .map_err(core_err)?;
        Ok(Self { state })
    }

    /// Decode state bytes (as the program stores them / the TCP server sends them).
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        if data.len() != STATE_SIZE {
            return Err(core_err(CoreError::InvalidState));
        }
        let mut state = State::boxed_zeroed();
        bytemuck::bytes_of_mut(&mut *state).copy_from_slice(data);
        state.check().map_err(core_err)?;
        Ok(Self { state })
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.state.as_bytes())
    }

    /// Replace the whole state with new bytes (validated; on error nothing changes).
    fn set_bytes(&mut self, data: &[u8]) -> PyResult<()> {
        let fresh = Self::from_bytes(data)?;
        self.state = fresh.state;
        Ok(())
    }

    fn copy(&self) -> Self {
        Self {
            state: self.state.clone(),
        }
    }

    fn __copy__(&self) -> Self {
        self.copy()
    }

    // ---- fields
    #[getter]
    fn version(&self) -> u32 {
        self.state.version
    }
    #[getter]
    fn phase(&self) -> PyResult<PyPhase> {
        Phase::from_u8(self.state.phase)
            .map(PyPhase::from)
            .ok_or_else(|| core_err(CoreError::InvalidState))
    }
    #[getter]
    fn paused(&self) -> bool {
        self.state.phase == Phase::Paused as u8
    }
    #[getter]
    fn nonce(&self) -> u64 {
        self.state.nonce
    }
    #[getter]
    fn run_id<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.state.run_id)
    }
    #[getter]
    fn epoch(&self) -> u32 {
        self.state.progress.epoch
    }
    #[getter]
    fn height(&self) -> u32 {
        self.state.progress.height
    }
    #[getter]
    fn step(&self) -> u64 {
        self.state.progress.step
    }
    /// Training steps completed (data rounds of epochs that reached cooldown).
    #[getter]
    fn steps_done(&self) -> u64 {
        self.state.progress.steps_done
    }
    #[getter]
    fn data_index(&self) -> u64 {
        self.state.progress.data_index
    }
    #[getter]
    fn epoch_rounds(&self) -> u32 {
        self.state.progress.epoch_rounds
    }
    #[getter]
    fn epochs_completed(&self) -> u32 {
        self.state.progress.epochs_completed
    }
    #[getter]
    fn created_at(&self) -> i64 {
        self.state.created_at
    }
    #[getter]
    fn phase_started_at(&self) -> i64 {
        self.state.phase_started_at
    }
    /// The adaptive timing's estimate of a round's time to witness quorum, seconds (0.0 = none
    /// yet: rounds use `max_round_train_secs`).
    #[getter]
    fn train_estimate_secs(&self) -> f64 {
        self.state.train_est_x16 as f64 / psyche_core::timing::EST_SCALE as f64
    }
    #[getter]
    fn updated_at(&self) -> i64 {
        self.state.updated_at
    }
    #[getter]
    fn min_reached_at(&self) -> i64 {
        self.state.min_reached_at
    }
    #[getter]
    fn checkpointed(&self) -> bool {
        self.state.checkpointed != 0
    }
    /// The slot that may record this epoch's checkpoint (Cooldown only, else None).
    fn checkpointer(&self) -> Option<usize> {
        self.state.checkpointer()
    }
    #[getter]
    fn config(&self) -> PyConfig {
        PyConfig::from_core(&self.state.config)
    }
    #[getter]
    fn model(&self) -> PyModelRef {
        PyModelRef {
            inner: self.state.model,
        }
    }
    /// Wallets ejected from the run (most recent MAX_BANNED); they cannot join again.
    fn banned<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        let n = (self.state.banned_next as usize).min(psyche_core::MAX_BANNED);
        self.state.banned[..n]
            .iter()
            .map(|w| PyBytes::new(py, w))
            .collect()
    }
    /// Data spans `(start, len)` waiting to be trained again (rounds whose results were not
    /// applied), in the order the next data rounds take them.
    fn requeue(&self) -> Vec<(u64, u32)> {
        self.state
            .requeued_spans()
            .iter()
            .map(|s| (s.start, s.len))
            .collect()
    }
    /// Samples that could not be requeued (the requeue was full); expected 0.
    #[getter]
    fn lost_samples(&self) -> u64 {
        self.state.lost_samples
    }
    /// Slots that sent a warmup witness this epoch.
    fn warmup_ready(&self) -> Vec<usize> {
        bitmap_slots(&self.state.warmup_ready)
    }

    // ---- clients
    /// Every non-empty slot.
    fn clients(&self, py: Python<'_>) -> PyResult<Vec<PyClientInfo>> {
        (0..MAX_CLIENTS)
            .filter(|s| self.state.clients[*s].state != ClientState::Empty as u8)
            .map(|s| client_info(py, &self.state, s))
            .collect()
    }
    fn client(&self, py: Python<'_>, slot: usize) -> PyResult<PyClientInfo> {
        client_info(py, &self.state, slot)
    }
    fn find_client(&self, wallet: &[u8]) -> PyResult<Option<usize>> {
        Ok(self.state.find_client(&key32(wallet, "wallet")?))
    }
    /// Number of clients in a state (`ClientState.Healthy`, ...).
    fn count(&self, state: PyClientState) -> usize {
        self.state.count_state(state.into())
    }

    // ---- transitions
    /// Advance on timeouts; returns what the tick did (`TickOutcome`).
    fn tick(&mut self, now: i64, randomness: &[u8]) -> PyResult<PyTickOutcome> {
        let r = key32(randomness, "randomness")?;
        Ok(self.state.tick(now, &r).map_err(core_err)?.into())
    }
    /// Register; returns the slot.
    fn join(&mut self, wallet: &[u8], node_key: &[u8], now: i64) -> PyResult<usize> {
        let w = key32(wallet, "wallet")?;
        let k = key32(node_key, "node_key")?;
        self.state.join(&w, &k, now).map_err(core_err)
    }
    fn withdraw(&mut self, wallet: &[u8], now: i64) -> PyResult<()> {
        self.state
            .withdraw(&key32(wallet, "wallet")?, now)
            .map_err(core_err)
    }
    fn warmup_witness(&mut self, wallet: &[u8], now: i64) -> PyResult<()> {
        self.state
            .warmup_witness(&key32(wallet, "wallet")?, now)
            .map_err(core_err)
    }
    /// Submit witness filters for the current round (position = committee proof).
    #[pyo3(signature = (wallet, position, results, trainers, now, loss_milli=0, tokens_per_sec=0, download_kib=0))]
    #[allow(clippy::too_many_arguments)]
    fn witness(
        &mut self,
        wallet: &[u8],
        position: u16,
        results: &Bound<'_, PyAny>,
        trainers: &Bound<'_, PyAny>,
        now: i64,
        loss_milli: u32,
        tokens_per_sec: u32,
        download_kib: u32,
    ) -> PyResult<()> {
        let w = key32(wallet, "wallet")?;
        let a = bloom_arg(results)?;
        let b = bloom_arg(trainers)?;
        let input = WitnessInput {
            position,
            reserved: 0,
            stats: WitnessStats {
                loss_milli,
                tokens_per_sec,
                download_kib,
                reserved: 0,
            },
            results: a,
            trainers: b,
        };
        self.state.witness(&w, &input, now).map_err(core_err)
    }
    /// Drop `target` for data round `height`; returns the verdict (`Unhealthy`).
    fn health_check(
        &mut self,
        wallet: &[u8],
        target: u16,
        height: u32,
        now: i64,
    ) -> PyResult<PyUnhealthy> {
        let w = key32(wallet, "wallet")?;
        Ok(self
            .state
            .health_check(&w, target, height, now)
            .map_err(core_err)?
            .into())
    }
    /// Verifier mismatch report; returns whether the target was ejected now.
    fn report(&mut self, wallet: &[u8], target: u16, now: i64) -> PyResult<bool> {
        self.state
            .report(&key32(wallet, "wallet")?, target, now)
            .map_err(core_err)
    }
    fn checkpoint(&mut self, wallet: &[u8], model: PyModelRef, now: i64) -> PyResult<()> {
        self.state
            .checkpoint(&key32(wallet, "wallet")?, &model.inner, now)
            .map_err(core_err)
    }
    fn pause(&mut self, now: i64) -> PyResult<()> {
        self.state.pause(now).map_err(core_err)
    }
    fn resume(&mut self, now: i64) -> PyResult<()> {
        self.state.resume(now).map_err(core_err)
    }
    fn update_config(&mut self, config: PyConfig, now: i64) -> PyResult<()> {
        self.state
            .update_config(&config.core(), now)
            .map_err(core_err)
    }
    fn update_model(&mut self, model: PyModelRef, now: i64) -> PyResult<()> {
        self.state.update_model(&model.inner, now).map_err(core_err)
    }

    // ---- derivations
    fn round(&self, py: Python<'_>, height: u32) -> PyResult<PyRoundInfo> {
        round_info(py, &self.state, height)
    }
    /// The shuffled committee: `[(slot, roles)]` by position (roles: ROLE_* bits).
    fn committee(&self, height: u32) -> PyResult<Vec<(usize, u8)>> {
        let c = Committee::compute(self.round_ref(height)?);
        Ok((0..c.n)
            .filter_map(|p| c.slot_at(p).map(|s| (s, c.roles_at(p))))
            .collect())
    }
    /// Committee position of a slot in a round (the witness proof), or None.
    fn position_of(&self, height: u32, slot: usize) -> PyResult<Option<u16>> {
        Ok(Committee::compute(self.round_ref(height)?).position_of(slot))
    }
    /// Role bits of a slot in a round (0 when not a member).
    fn roles(&self, height: u32, slot: usize) -> PyResult<u8> {
        let c = Committee::compute(self.round_ref(height)?);
        Ok(c.position_of(slot).map(|p| c.roles_at(p)).unwrap_or(0))
    }
    /// Check a committee proof: does `slot` sit at `position` with a witness role?
    fn check_witness_proof(&self, height: u32, slot: usize, position: u16) -> PyResult<bool> {
        let c = Committee::compute(self.round_ref(height)?);
        Ok(c.slot_at(position) == Some(slot) && position < c.witnesses)
    }
    /// `[start, end)` data the slot trains in a round, or None.
    fn assignment(&self, height: u32, slot: usize) -> PyResult<Option<(u64, u64)>> {
        self.state.assignment_of(height, slot).map_err(core_err)
    }
    /// Every trainer's assignment: `[(slot, start, end)]` in data order.
    fn assignments(&self, height: u32) -> PyResult<Vec<(usize, u64, u64)>> {
        let r = self.round_ref(height)?;
        let c = Committee::compute(r);
        Ok((0..c.trainers())
            .filter_map(|p| {
                let (lo, hi) = derive::assignment(r, c.trainers(), p)?;
                Some((c.slot_at(p)?, lo, hi))
            })
            .collect())
    }
    /// The two filters the witness at `position` of round `height` submits, as bytes
    /// `(results, trainers)`: `results` holds the 32-byte commitments it received, `trainers` the
    /// wallets of the trainer slots that sent them, salted as the coordinator checks them.
    fn witness_filters<'py>(
        &self,
        py: Python<'py>,
        height: u32,
        position: u16,
        results: Vec<Vec<u8>>,
        trainers: Vec<usize>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let commitments = results
            .iter()
            .map(|c| key32(c, "commitment"))
            .collect::<PyResult<Vec<_>>>()?;
        let (r, t) = psyche_core::witness_filters(
            &self.state,
            height,
            position,
            commitments.iter(),
            trainers,
        )
        .map_err(core_err)?;
        Ok((PyBytes::new(py, &r.bits), PyBytes::new(py, &t.bits)))
    }
    /// The Bloom salt the witness at `position` of round `height` hashes its filters with.
    fn witness_salt(&self, height: u32, position: u16) -> PyResult<u32> {
        Ok(derive::witness_salt(self.round_ref(height)?, position))
    }
    /// Witness quorum of a round.
    fn quorum(&self, height: u32) -> PyResult<u16> {
        Ok(derive::quorum(&self.state.config, self.round_ref(height)?))
    }
    /// The slot whose previous-round result the verifier at `slot` recomputes, or None.
    fn verification_target(&self, height: u32, slot: usize) -> PyResult<Option<usize>> {
        self.state
            .verification_target_of(height, slot)
            .map_err(core_err)
    }
    /// The apply set of data round `height`: candidates are `(batch_start, trainer_slot,
    /// commitment)`; returns the accepted ones as `(batch_start, trainer_slot, commitment, votes)`
    /// in batch order.
    fn apply_set<'py>(
        &self,
        py: Python<'py>,
        height: u32,
        candidates: Vec<(u64, u16, Vec<u8>)>,
    ) -> PyResult<Vec<Accepted<'py>>> {
        let mut cands = candidates
            .iter()
            .map(|(b, t, c)| Ok(Candidate::new(*b, *t, key32(c, "commitment")?)))
            .collect::<PyResult<Vec<_>>>()?;
        let n = apply_set(&self.state, height, &mut cands).map_err(core_err)?;
        Ok(cands[..n]
            .iter()
            .map(|c| {
                (
                    c.batch_start,
                    c.trainer,
                    PyBytes::new(py, &c.commitment),
                    c.votes,
                )
            })
            .collect())
    }
    /// The (slot, batch start) of every trainer of data round `height` whose wallet a strict
    /// majority of round `height + 1`'s trainer filters hold: results a client must have (or
    /// fetch) before it applies the round.
    fn attested_trainers(&self, height: u32) -> PyResult<Vec<(usize, u64)>> {
        let r = self.state.round(height).map_err(core_err)?;
        let c = Committee::compute(r);
        let t = c.trainers();
        let mut out = Vec::new();
        for p in 0..t {
            if let (Some(slot), Some((lo, _))) = (c.slot_at(p), derive::assignment(r, t, p)) {
                if derive::trainer_attested(&self.state, height, slot).map_err(core_err)? {
                    out.push((slot, lo));
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Between epochs: the height of the ended epoch's last applied data round, or None when
    /// none of its rounds still in the ring was applied (`WrongPhase` during an epoch's rounds).
    fn last_applied_of_ended_epoch(&self) -> PyResult<Option<u32>> {
        derive::last_applied_of_ended_epoch(&self.state).map_err(core_err)
    }

    /// Health verdict for `target` in data round `height`: None (healthy) or `Unhealthy`.
    fn health_verdict(&self, height: u32, target: usize) -> PyResult<Option<PyUnhealthy>> {
        Ok(derive::health_verdict(&self.state, height, target)
            .map_err(core_err)?
            .map(PyUnhealthy::from))
    }

    fn __repr__(&self) -> String {
        format!(
            "Coordinator(phase={}, epoch={}, height={}, step={}, nonce={})",
            Phase::from_u8(self.state.phase).map_or("Invalid", |p| p.name()),
            self.state.progress.epoch,
            self.state.progress.height,
            self.state.progress.step,
            self.state.nonce
        )
    }
}

/// An accepted candidate as returned to Python.
type Accepted<'py> = (u64, u16, Bound<'py, PyBytes>, u16);

/// Add the class to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCoordinator>()
}
