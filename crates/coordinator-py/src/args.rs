//! Argument conversions shared by the classes: fixed-size keys with a clear length error.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// A 32-byte key (wallet, node key, run id, randomness, commitment).
pub fn key32(b: &[u8], what: &str) -> PyResult<[u8; 32]> {
    b.try_into()
        .map_err(|_| PyValueError::new_err(format!("{what} must be 32 bytes, got {}", b.len())))
}
