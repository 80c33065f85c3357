//! The Solana program's layout constants (`psyche_core::layout`), exported once so the SDK
//! (`psyche_client.solana.program`) and the IDL generator read the values the program is built
//! with instead of keeping copies.

use psyche_core::layout;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("PROGRAM_ID", layout::PROGRAM_ID)?;
    m.add("DISCRIMINATOR_BYTES", layout::DISCRIMINATOR_BYTES)?;
    m.add("RUN_SEED", PyBytes::new(py, layout::RUN_SEED))?;
    m.add("PEER_SEED", PyBytes::new(py, layout::PEER_SEED))?;
    m.add("RUN_SPACE", layout::RUN_SPACE)?;
    m.add("PEER_ADDR_BYTES", layout::PEER_ADDR_BYTES)?;
    m.add("PEER_RUN_OFFSET", layout::PEER_RUN_OFFSET)?;
    m.add("PEER_SPACE", layout::PEER_SPACE)?;
    m.add("COORDINATOR_RUN_OFFSET", layout::COORDINATOR_RUN_OFFSET)?;
    m.add("COORDINATOR_STATE_OFFSET", layout::COORDINATOR_STATE_OFFSET)?;
    m.add("COORDINATOR_SPACE", layout::COORDINATOR_SPACE)?;
    m.add("CORE_ERROR_BASE", layout::CORE_ERROR_BASE)?;
    m.add("PROGRAM_ERROR_BASE", layout::PROGRAM_ERROR_BASE)?;
    Ok(())
}
