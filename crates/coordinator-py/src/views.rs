//! Read-only snapshots handed to Python: a client slot, a witness submission, a round of the
//! ring. Built from the state on each call; they do not follow later changes.

use crate::bloom::PyBloom;
use crate::enums::{PyClientState, PyRoundKind};
use crate::errors::core_err;
use psyche_core::derive::{self, Committee};
use psyche_core::state::bit_get;
use psyche_core::{CoreError, RoundKind, State, MAX_CLIENTS};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// One client slot.
#[pyclass(name = "ClientInfo", module = "psyche_client._core", get_all, frozen)]
pub struct PyClientInfo {
    slot: usize,
    wallet: Py<PyBytes>,
    node_key: Py<PyBytes>,
    state: PyClientState,
    joined_epoch: u32,
}

#[pymethods]
impl PyClientInfo {
    fn __repr__(&self) -> String {
        format!("ClientInfo(slot={}, state={:?})", self.slot, self.state)
    }
}

/// One witness submission.
#[pyclass(name = "Submission", module = "psyche_client._core", get_all, frozen)]
pub struct PySubmission {
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
pub struct PyRoundInfo {
    epoch: u32,
    height: u32,
    kind: PyRoundKind,
    seed: Py<PyBytes>,
    step: u64,
    data_index: u64,
    batch_size: u32,
    started_at: i64,
    quorum_at: i64,
    train_secs: u32,
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

/// Slots whose bit is set.
pub fn bitmap_slots(bits: &[u8]) -> Vec<usize> {
    (0..MAX_CLIENTS).filter(|s| bit_get(bits, *s)).collect()
}

/// The snapshot of client slot `slot` (in range; the caller checked).
pub fn client_info(py: Python<'_>, state: &State, slot: usize) -> PyResult<PyClientInfo> {
    let c = state.client(slot).map_err(core_err)?;
    let s = c
        .client_state()
        .ok_or_else(|| core_err(CoreError::InvalidState))?;
    Ok(PyClientInfo {
        slot,
        wallet: PyBytes::new(py, &c.wallet).unbind(),
        node_key: PyBytes::new(py, &c.node_key).unbind(),
        state: s.into(),
        joined_epoch: c.joined_epoch,
    })
}

/// The snapshot of round `height` of the ring.
pub fn round_info(py: Python<'_>, state: &State, height: u32) -> PyResult<PyRoundInfo> {
    let r = state.round(height).map_err(core_err)?;
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
        kind: r.round_kind().unwrap_or(RoundKind::Empty).into(),
        seed: PyBytes::new(py, &r.seed).unbind(),
        step: r.step,
        data_index: r.data_index,
        batch_size: r.batch_size,
        started_at: r.started_at,
        quorum_at: r.quorum_at,
        train_secs: state.train_secs_of(r),
        requeued: r.requeued != 0,
        member_count: r.member_count,
        witness_count: r.witness_count,
        verifier_count: r.verifier_count,
        trainer_count: c.trainers(),
        quorum: derive::quorum(&state.config, r),
        members: bitmap_slots(&r.members),
        ejected: bitmap_slots(&r.ejected),
        reported: bitmap_slots(&r.reported),
        submissions,
    })
}

/// Add the classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyClientInfo>()?;
    m.add_class::<PySubmission>()?;
    m.add_class::<PyRoundInfo>()?;
    Ok(())
}
