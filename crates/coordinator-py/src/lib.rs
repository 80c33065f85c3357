//! Python bindings of the coordinator core, importable as `psyche_client._core`.
use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("STATE_VERSION", psyche_core::STATE_VERSION)?;
    Ok(())
}
