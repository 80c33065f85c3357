//! Read-only access to witness Bloom filters. Filters are built by the core
//! (`Coordinator.witness_filters`), next to the rules that read them; Python can decode one,
//! test membership and count bits, but never sets bits itself.

use psyche_core::{Bloom, BLOOM_BYTES};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A witness Bloom filter, read-only (murmur3 x64_128 double hashing; see docs/protocol.md).
#[pyclass(name = "Bloom", module = "psyche_client._core", frozen)]
#[derive(Clone)]
pub struct PyBloom {
    pub inner: Bloom,
}

fn wrong_length(len: usize) -> PyErr {
    PyValueError::new_err(format!("a bloom filter is {BLOOM_BYTES} bytes, got {len}"))
}

#[pymethods]
impl PyBloom {
    /// Decode filter bytes; no argument is the empty filter.
    #[new]
    #[pyo3(signature = (data=None))]
    fn new(data: Option<&[u8]>) -> PyResult<Self> {
        match data {
            None => Ok(Self {
                inner: Bloom::new(),
            }),
            Some(d) => Bloom::from_slice(d)
                .map(|inner| Self { inner })
                .ok_or_else(|| wrong_length(d.len())),
        }
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

/// A filter argument: a `Bloom` or its bytes.
pub fn bloom_arg(obj: &Bound<'_, PyAny>) -> PyResult<Bloom> {
    if let Ok(b) = obj.cast::<PyBloom>() {
        return Ok(b.get().inner);
    }
    let bytes: Vec<u8> = obj.extract()?;
    Bloom::from_slice(&bytes).ok_or_else(|| wrong_length(bytes.len()))
}

/// murmur3 x64_128 of `data`: `(h1, h2)`, as `mmh3.hash64(data, seed, signed=False)`.
#[pyfunction]
#[pyo3(signature = (data, seed=0))]
fn murmur3_x64_128(data: &[u8], seed: u32) -> (u64, u64) {
    psyche_core::murmur3_x64_128(data, seed)
}

/// The Bloom bit indices of a key (under a witness salt; 0 = unsalted); for the cross-language
/// hash vectors.
#[pyfunction(name = "bloom_indices")]
#[pyo3(signature = (key, salt=0))]
fn py_bloom_indices(key: &[u8], salt: u32) -> Vec<u32> {
    psyche_core::bloom_indices_salted(key, salt).to_vec()
}

/// Add the class and the hash functions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("BLOOM_BITS", psyche_core::BLOOM_BITS)?;
    m.add("BLOOM_BYTES", BLOOM_BYTES)?;
    m.add("BLOOM_HASHES", psyche_core::BLOOM_HASHES)?;
    m.add_class::<PyBloom>()?;
    m.add_function(wrap_pyfunction!(murmur3_x64_128, m)?)?;
    m.add_function(wrap_pyfunction!(py_bloom_indices, m)?)?;
    Ok(())
}
