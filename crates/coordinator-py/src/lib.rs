//! Python bindings of the coordinator core, importable as `psyche_client._core`.
//!
//! Thin: every rule lives in `psyche_core`; this file converts types and maps `CoreError` to a
//! Python exception class of the same name (all subclasses of `CoordinatorError`).

use psyche_core::derive::{self, Committee};
use psyche_core::state::bit_get;
use psyche_core::{
    apply_set, Bloom, Candidate, ClientState, Config, CoreError, ModelKind, ModelRef, Phase,
    RoundKind, State, TickOutcome, Unhealthy, WitnessInput, WitnessStats, BLOOM_BITS, BLOOM_BYTES,
    BLOOM_HASHES, MAX_CLIENTS, MAX_WITNESSES, ROUND_RING, STATE_SIZE, STATE_VERSION,
};
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyType};
use std::ffi::CString;

pyo3::create_exception!(
    _core,
    CoordinatorError,
    PyException,
    "A coordinator rule was violated; the subclass name is the core's error name."
);

static ERROR_TYPES: PyOnceLock<Vec<(u32, Py<PyType>)>> = PyOnceLock::new();

fn error_types(py: Python<'_>) -> PyResult<&Vec<(u32, Py<PyType>)>> {
    ERROR_TYPES.get_or_try_init(py, || {
        let base = py.get_type::<CoordinatorError>();
        let mut out = Vec::new();
        for e in CoreError::ALL {
            let name = CString::new(format!("psyche_client._core.{}", e.name()))
                .map_err(|_| PyValueError::new_err("bad error name"))?;
            let ty = PyErr::new_type(py, &name, None, Some(&base), None)?;
            ty.bind(py).setattr("name", e.name())?;
            ty.bind(py).setattr("code", e.code())?;
            out.push((e.code(), ty));
        }
        Ok(out)
    })
}

fn core_err(e: CoreError) -> PyErr {
    Python::attach(|py| match error_types(py) {
        Ok(types) => match types.iter().find(|(c, _)| *c == e.code()) {
            Some((_, ty)) => PyErr::from_type(
                ty.bind(py).clone(),
                format!("{}: {}", e.name(), describe(e)),
            ),
            None => CoordinatorError::new_err(e.name()),
        },
        Err(err) => err,
    })
}

fn describe(e: CoreError) -> &'static str {
    match e {
        CoreError::InvalidState => "the bytes are not a valid coordinator state",
        CoreError::WrongPhase => "the run is not in a phase that accepts this",
        CoreError::UnknownClient => "the wallet is not registered",
        CoreError::DuplicateClient => "the wallet or node key is already registered",
        CoreError::InvalidKey => "all-zero key",
        CoreError::Full => "no free slot this epoch",
        CoreError::RunFinished => "the run has finished",
        CoreError::NotHealthy => "the client is not healthy",
        CoreError::DuplicateWitness => "already witnessed",
        CoreError::NotWitness => "not a witness position",
        CoreError::BadProof => "the committee proof does not match",
        CoreError::NotVerifier => "not a verifier this round",
        CoreError::NotAssigned => "target not assigned to this verifier",
        CoreError::DuplicateReport => "already reported this round",
        CoreError::IndexOutOfRange => "index out of range",
        CoreError::RoundUnavailable => "round not in the ring",
        CoreError::RoundNotFinal => "round still open",
        CoreError::NotEnoughWitnesses => "witness quorum not reached",
        CoreError::StillHealthy => "the target is healthy",
        CoreError::AlreadyCheckpointed => "checkpoint already recorded this epoch",
        CoreError::InvalidModelRef => "malformed model reference",
        CoreError::NotHalted => "the run must be paused",
        CoreError::AlreadyPaused => "already paused",
        CoreError::NotPaused => "not paused",
        CoreError::ClientEjected => "the client was ejected",
        CoreError::AlreadyWithdrawn => "already withdrawn",
        CoreError::Banned => "the wallet was ejected from this run",
        _ => "invalid config",
    }
}

fn key32(b: &[u8], what: &str) -> PyResult<[u8; 32]> {
    b.try_into()
        .map_err(|_| PyValueError::new_err(format!("{what} must be 32 bytes, got {}", b.len())))
}

fn bloom_arg(obj: &Bound<'_, PyAny>) -> PyResult<Bloom> {
    if let Ok(b) = obj.cast::<PyBloom>() {
        return Ok(b.borrow().inner);
    }
    let bytes: Vec<u8> = obj.extract()?;
    Bloom::from_slice(&bytes).ok_or_else(|| {
        PyValueError::new_err(format!(
            "a bloom filter is {BLOOM_BYTES} bytes, got {}",
            bytes.len()
        ))
    })
}

// ------------------------------------------------------------------ Bloom

/// A witness Bloom filter (murmur3 x64_128 double hashing; see docs/protocol.md).
#[pyclass(name = "Bloom", module = "psyche_client._core")]
#[derive(Clone)]
struct PyBloom {
    inner: Bloom,
}

#[pymethods]
impl PyBloom {
    #[new]
    #[pyo3(signature = (data=None))]
    fn new(data: Option<&[u8]>) -> PyResult<Self> {
        match data {
            None => Ok(Self {
                inner: Bloom::new(),
            }),
            Some(d) => Bloom::from_slice(d)
                .map(|inner| Self { inner })
                .ok_or_else(|| {
                    PyValueError::new_err(format!("a bloom filter is {BLOOM_BYTES} bytes"))
                }),
        }
    }
    /// Insert a key (under a witness salt; 0 = unsalted).
    #[pyo3(signature = (key, salt=0))]
    fn add(&mut self, key: &[u8], salt: u32) {
        self.inner.add_salted(key, salt);
    }
    /// Whether the key may be present (under a witness salt; 0 = unsalted).
    #[pyo3(signature = (key, salt=0))]
    fn contains(&self, key: &[u8], salt: u32) -> bool {
        self.inner.contains_salted(key, salt)
    }
    fn __contains__(&self, key: &[u8]) -> bool {
        self.inner.contains(key)
    }
    fn count_ones(&self) -> u32 {
        self.inner.count_ones()
    }
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.bits)
    }
    fn __eq__(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
    fn __repr__(&self) -> String {
        format!("Bloom({} bits set)", self.inner.count_ones())
    }
}

// ------------------------------------------------------------------ Config

macro_rules! config_class {
    ($($f:ident : $t:ty),* $(,)?) => {
        /// Run configuration; every field has a sane default (see docs/protocol.md).
        #[pyclass(name = "Config", module = "psyche_client._core", get_all, set_all)]
        #[derive(Clone)]
        struct PyConfig {
            $($f: $t,)*
        }

        impl PyConfig {
            fn from_core(c: &Config) -> Self {
                Self { $($f: c.$f,)* }
            }
            fn core(&self) -> Config {
                Config { $($f: self.$f,)* reserved: [0; 6] }
            }
        }

        #[pymethods]
        impl PyConfig {
            #[new]
            #[pyo3(signature = (*, $($f=None),*))]
            #[allow(clippy::too_many_arguments)]
            fn new($($f: Option<$t>),*) -> Self {
                let mut c = Config::default();
                $(if let Some(v) = $f { c.$f = v; })*
                Self::from_core(&c)
            }
            /// All fields as a dict.
            fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
                let d = pyo3::types::PyDict::new(py);
                $(d.set_item(stringify!($f), self.$f)?;)*
                Ok(d)
            }
            /// A copy with the given fields replaced.
            #[pyo3(signature = (*, $($f=None),*))]
            #[allow(clippy::too_many_arguments)]
            fn replace(&self, $($f: Option<$t>),*) -> Self {
                let mut c = self.clone();
                $(if let Some(v) = $f { c.$f = v; })*
                c
            }
            fn __eq__(&self, other: &Self) -> bool {
                self.core() == other.core()
            }
            fn __repr__(&self) -> String {
                format!("Config({:?})", self.core())
            }
            /// Raise the typed error of the first violated rule.
            fn validate(&self) -> PyResult<()> {
                self.core().validate().map_err(core_err)
            }
            /// Global batch size at a step (the ramp).
            fn batch_size_at(&self, step: u64) -> u32 {
                self.core().batch_size_at(step)
            }
        }
    };
}

config_class! {
    total_steps: u64,
    batch_size_start: u32,
    batch_size_end: u32,
    batch_ramp_steps: u32,
    rounds_per_epoch: u32,
    waiting_extra_secs: u32,
    warmup_secs: u32,
    max_round_train_secs: u32,
    round_witness_secs: u32,
    witness_grace_secs: u32,
    cooldown_secs: u32,
    min_clients: u16,
    max_clients: u16,
    witnesses_per_round: u16,
    witness_quorum_pct: u8,
    verification_pct: u8,
    verifiers_per_target: u8,
    eject_reports: u8,
}

// ------------------------------------------------------------------ ModelRef

/// Where the model or the latest checkpoint comes from.
#[pyclass(name = "ModelRef", module = "psyche_client._core")]
#[derive(Clone)]
struct PyModelRef {
    inner: ModelRef,
}

fn model_new(kind: ModelKind, loc: &str, rev: &str) -> PyResult<PyModelRef> {
    ModelRef::new(kind, loc.as_bytes(), rev.as_bytes())
        .map(|inner| PyModelRef { inner })
        .map_err(core_err)
}

#[pymethods]
impl PyModelRef {
    #[staticmethod]
    fn local_path(path: &str) -> PyResult<Self> {
        model_new(ModelKind::LocalPath, path, "")
    }
    #[staticmethod]
    fn http_url(url: &str) -> PyResult<Self> {
        model_new(ModelKind::HttpUrl, url, "")
    }
    #[staticmethod]
    #[pyo3(signature = (repo, revision=""))]
    fn hugging_face(repo: &str, revision: &str) -> PyResult<Self> {
        model_new(ModelKind::HuggingFace, repo, revision)
    }
    #[staticmethod]
    fn peers() -> PyResult<Self> {
        model_new(ModelKind::Peers, "", "")
    }
    #[getter]
    fn kind(&self) -> &'static str {
        ModelKind::from_u8(self.inner.kind)
            .map(|k| k.name())
            .unwrap_or("Invalid")
    }
    #[getter]
    fn location(&self) -> String {
        self.inner.location_str().to_owned()
    }
    #[getter]
    fn revision(&self) -> String {
        self.inner.revision_str().to_owned()
    }
    fn __eq__(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
    fn __repr__(&self) -> String {
        format!(
            "ModelRef({}, {:?}, {:?})",
            self.kind(),
            self.location(),
            self.revision()
        )
    }
}

// ------------------------------------------------------------------ read-only views

/// One client slot.
#[pyclass(name = "ClientInfo", module = "psyche_client._core", get_all, frozen)]
struct PyClientInfo {
    slot: usize,
    wallet: Py<PyBytes>,
    node_key: Py<PyBytes>,
    state: &'static str,
    joined_epoch: u32,
}

#[pymethods]
impl PyClientInfo {
    fn __repr__(&self) -> String {
        format!("ClientInfo(slot={}, state={})", self.slot, self.state)
    }
}

/// One witness submission.
#[pyclass(name = "Submission", module = "psyche_client._core", get_all, frozen)]
struct PySubmission {
    client: u16,
    position: u16,
    loss_milli: u32,
    tokens_per_sec: u32,
    download_kib: u32,
    results: PyBloom,
    trainers: PyBloom,
}

/// One round of the ring.
#[pyclass(name = "RoundInfo", module = "psyche_client._core", get_all, frozen)]
struct PyRoundInfo {
    epoch: u32,
    height: u32,
    kind: &'static str,
    seed: Py<PyBytes>,
    step: u64,
    data_index: u64,
    batch_size: u32,
    started_at: i64,
    quorum_at: i64,
    requeued: bool,
    member_count: u16,
    witness_count: u16,
    verifier_count: u16,
    trainer_count: u16,
    quorum: u16,
    members: Vec<usize>,
    ejected: Vec<usize>,
    reported: Vec<usize>,
    submissions: Vec<Py<PySubmission>>,
}

fn bitmap_slots(bits: &[u8]) -> Vec<usize> {
    (0..MAX_CLIENTS).filter(|s| bit_get(bits, *s)).collect()
}

// ------------------------------------------------------------------ Coordinator

/// The coordinator state (the account body / TCP state bytes) with every transition.
#[pyclass(name = "Coordinator", module = "psyche_client._core")]
struct PyCoordinator {
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
            None => ModelRef::new(ModelKind::Peers, b"", b"").map_err(core_err)?,
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
    fn phase(&self) -> &'static str {
        Phase::from_u8(self.state.phase)
            .map(|p| p.name())
            .unwrap_or("Invalid")
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
    fn clients(&self, py: Python<'_>) -> Vec<PyClientInfo> {
        (0..MAX_CLIENTS)
            .filter(|s| self.state.clients[*s].state != ClientState::Empty as u8)
            .map(|s| self.client_info(py, s))
            .collect()
    }
    fn client(&self, py: Python<'_>, slot: usize) -> PyResult<PyClientInfo> {
        self.state.client(slot).map_err(core_err)?;
        Ok(self.client_info(py, slot))
    }
    fn find_client(&self, wallet: &[u8]) -> PyResult<Option<usize>> {
        Ok(self.state.find_client(&key32(wallet, "wallet")?))
    }
    /// Number of clients in a state ("Healthy", "Pending", ...).
    fn count(&self, state: &str) -> PyResult<usize> {
        let s = (0..=5u8)
            .filter_map(ClientState::from_u8)
            .find(|s| s.name() == state)
            .ok_or_else(|| PyValueError::new_err(format!("unknown client state {state:?}")))?;
        Ok(self.state.count_state(s))
    }

    // ---- transitions
    /// Advance on timeouts; returns "Idle", "Updated" or "Transitioned".
    fn tick(&mut self, now: i64, randomness: &[u8]) -> PyResult<&'static str> {
        let r = key32(randomness, "randomness")?;
        Ok(match self.state.tick(now, &r).map_err(core_err)? {
            TickOutcome::Idle => "Idle",
            TickOutcome::Updated => "Updated",
            TickOutcome::Transitioned => "Transitioned",
        })
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
    /// Drop `target` for data round `height`; returns "MissingResult" or "MissedWitness".
    fn health_check(
        &mut self,
        wallet: &[u8],
        target: u16,
        height: u32,
        now: i64,
    ) -> PyResult<&'static str> {
        let w = key32(wallet, "wallet")?;
        Ok(unhealthy_name(
            self.state
                .health_check(&w, target, height, now)
                .map_err(core_err)?,
        ))
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
        let r = self.round_ref(height)?;
        let c = Committee::compute(r);
        let submissions = r
            .submissions()
            .iter()
            .map(|s| {
                Py::new(
                    py,
                    PySubmission {
                        client: s.client,
                        position: s.position,
                        loss_milli: s.stats.loss_milli,
                        tokens_per_sec: s.stats.tokens_per_sec,
                        download_kib: s.stats.download_kib,
                        results: PyBloom { inner: s.results },
                        trainers: PyBloom { inner: s.trainers },
                    },
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyRoundInfo {
            epoch: r.epoch,
            height: r.height,
            kind: match r.round_kind() {
                Some(RoundKind::Data) => "Data",
                Some(RoundKind::Drain) => "Drain",
                _ => "Empty",
            },
            seed: PyBytes::new(py, &r.seed).unbind(),
            step: r.step,
            data_index: r.data_index,
            batch_size: r.batch_size,
            started_at: r.started_at,
            quorum_at: r.quorum_at,
            requeued: r.requeued != 0,
            member_count: r.member_count,
            witness_count: r.witness_count,
            verifier_count: r.verifier_count,
            trainer_count: c.trainers(),
            quorum: derive::quorum(&self.state.config, r),
            members: bitmap_slots(&r.members),
            ejected: bitmap_slots(&r.ejected),
            reported: bitmap_slots(&r.reported),
            submissions,
        })
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
    /// Health verdict for `target` in data round `height`: None (healthy), "MissingResult" or
    /// "MissedWitness".
    fn health_verdict(&self, height: u32, target: usize) -> PyResult<Option<&'static str>> {
        Ok(derive::health_verdict(&self.state, height, target)
            .map_err(core_err)?
            .map(unhealthy_name))
    }

    fn __repr__(&self) -> String {
        format!(
            "Coordinator(phase={}, epoch={}, height={}, step={}, nonce={})",
            self.phase(),
            self.state.progress.epoch,
            self.state.progress.height,
            self.state.progress.step,
            self.state.nonce
        )
    }
}

impl PyCoordinator {
    fn client_info(&self, py: Python<'_>, slot: usize) -> PyClientInfo {
        let c = &self.state.clients[slot];
        PyClientInfo {
            slot,
            wallet: PyBytes::new(py, &c.wallet).unbind(),
            node_key: PyBytes::new(py, &c.node_key).unbind(),
            state: c.client_state().map(|s| s.name()).unwrap_or("Invalid"),
            joined_epoch: c.joined_epoch,
        }
    }
}

/// An accepted candidate as returned to Python.
type Accepted<'py> = (u64, u16, Bound<'py, PyBytes>, u16);

fn unhealthy_name(u: Unhealthy) -> &'static str {
    match u {
        Unhealthy::MissingResult => "MissingResult",
        Unhealthy::MissedWitness => "MissedWitness",
    }
}

/// murmur3 x64_128 of `data`: `(h1, h2)`, as `mmh3.hash64(data, seed, signed=False)`.
#[pyfunction]
#[pyo3(signature = (data, seed=0))]
fn murmur3_x64_128(data: &[u8], seed: u32) -> (u64, u64) {
    psyche_core::murmur3_x64_128(data, seed)
}

/// The Bloom bit indices of a key (under a witness salt; 0 = unsalted).
#[pyfunction(name = "bloom_indices")]
#[pyo3(signature = (key, salt=0))]
fn py_bloom_indices(key: &[u8], salt: u32) -> Vec<u32> {
    psyche_core::bloom_indices_salted(key, salt).to_vec()
}

/// Error name for a numeric code (as the program / TCP server report them).
#[pyfunction]
fn error_name(code: u32) -> Option<&'static str> {
    CoreError::from_code(code).map(|e| e.name())
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("STATE_VERSION", STATE_VERSION)?;
    m.add("STATE_SIZE", STATE_SIZE)?;
    m.add("MAX_CLIENTS", MAX_CLIENTS)?;
    m.add("MAX_WITNESSES", MAX_WITNESSES)?;
    m.add("ROUND_RING", ROUND_RING)?;
    m.add("MAX_BANNED", psyche_core::MAX_BANNED)?;
    m.add("REQUEUE_CAP", psyche_core::REQUEUE_CAP)?;
    m.add("WITNESS_IX_DATA_BYTES", psyche_core::WITNESS_IX_DATA_BYTES)?;
    m.add("BLOOM_BITS", BLOOM_BITS)?;
    m.add("BLOOM_BYTES", BLOOM_BYTES)?;
    m.add("BLOOM_HASHES", BLOOM_HASHES)?;
    m.add("ROLE_TRAINER", derive::ROLE_TRAINER)?;
    m.add("ROLE_WITNESS", derive::ROLE_WITNESS)?;
    m.add("ROLE_VERIFIER", derive::ROLE_VERIFIER)?;
    m.add("CoordinatorError", py.get_type::<CoordinatorError>())?;
    for (code, ty) in error_types(py)? {
        if let Some(e) = CoreError::from_code(*code) {
            m.add(e.name(), ty.bind(py))?;
        }
    }
    m.add_class::<PyBloom>()?;
    m.add_class::<PyConfig>()?;
    m.add_class::<PyModelRef>()?;
    m.add_class::<PyClientInfo>()?;
    m.add_class::<PySubmission>()?;
    m.add_class::<PyRoundInfo>()?;
    m.add_class::<PyCoordinator>()?;
    m.add_function(wrap_pyfunction!(murmur3_x64_128, m)?)?;
    m.add_function(wrap_pyfunction!(py_bloom_indices, m)?)?;
    m.add_function(wrap_pyfunction!(error_name, m)?)?;
    Ok(())
}
