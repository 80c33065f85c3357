//! Python bindings of the coordinator core, importable as `psyche_client._core`.
//!
//! Thin: every rule lives in `psyche_core`; these modules convert types. One module per job:
//! `errors` (CoreError as exception classes), `enums` (typed phases, states, kinds, verdicts),
//! `bloom` (read-only filters, hash vectors), `config`, `model`, `views` (read-only snapshots),
//! `coordinator` (the state with its transitions) and `layout` (the program's account layout).
//! `psyche_client/_core.pyi` describes the result; tests/core/test_stub.py fails when the two
//! drift.

mod args;
mod bloom;
mod config;
mod coordinator;
mod enums;
mod errors;
mod layout;
mod model;
mod views;

use psyche_core::derive;
use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("STATE_VERSION", psyche_core::STATE_VERSION)?;
    m.add("STATE_SIZE", psyche_core::STATE_SIZE)?;
    m.add("MAX_CLIENTS", psyche_core::MAX_CLIENTS)?;
    m.add("MAX_WITNESSES", psyche_core::MAX_WITNESSES)?;
    m.add("ROUND_RING", psyche_core::ROUND_RING)?;
    m.add("MAX_BANNED", psyche_core::MAX_BANNED)?;
    m.add("REQUEUE_CAP", psyche_core::REQUEUE_CAP)?;
    m.add("WITNESS_IX_DATA_BYTES", psyche_core::WITNESS_IX_DATA_BYTES)?;
    m.add("ROLE_TRAINER", derive::ROLE_TRAINER)?;
    m.add("ROLE_WITNESS", derive::ROLE_WITNESS)?;
    m.add("ROLE_VERIFIER", derive::ROLE_VERIFIER)?;
    errors::register(m)?;
    enums::register(m)?;
    bloom::register(m)?;
    config::register(m)?;
    model::register(m)?;
    views::register(m)?;
    coordinator::register(m)?;
    layout::register(m)?;
    Ok(())
}
