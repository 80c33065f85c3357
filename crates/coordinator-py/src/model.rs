//! `ModelRef`: where the model or the latest checkpoint comes from (validated by the core).

use crate::enums::PyModelKind;
use crate::errors::core_err;
use psyche_core::{CoreError, ModelKind, ModelRef};
use pyo3::prelude::*;

/// Where the model or the latest checkpoint comes from.
#[pyclass(name = "ModelRef", module = "psyche_client._core")]
#[derive(Clone)]
pub struct PyModelRef {
    pub inner: ModelRef,
}

/// A validated reference.
pub fn model_new(kind: ModelKind, loc: &str, rev: &str) -> PyResult<PyModelRef> {
    ModelRef::new(kind, loc.as_bytes(), rev.as_bytes())
        .map(|inner| PyModelRef { inner })
        .map_err(core_err)
}

#[pymethods]
impl PyModelRef {
    /// A checkpoint directory; `content_hash` (64 lowercase hex) pins what it must contain.
    #[staticmethod]
    #[pyo3(signature = (path, content_hash=""))]
    fn local_path(path: &str, content_hash: &str) -> PyResult<Self> {
        model_new(ModelKind::LocalPath, path, content_hash)
    }
    /// A checkpoint served over http(s); `content_hash` as for `local_path`.
    #[staticmethod]
    #[pyo3(signature = (url, content_hash=""))]
    fn http_url(url: &str, content_hash: &str) -> PyResult<Self> {
        model_new(ModelKind::HttpUrl, url, content_hash)
    }
    #[staticmethod]
    #[pyo3(signature = (repo, revision=""))]
    fn hugging_face(repo: &str, revision: &str) -> PyResult<Self> {
        model_new(ModelKind::HuggingFace, repo, revision)
    }
    /// The model lives with the run's members; `content_hash` as for `local_path`.
    #[staticmethod]
    #[pyo3(signature = (content_hash=""))]
    fn peers(content_hash: &str) -> PyResult<Self> {
        model_new(ModelKind::Peers, "", content_hash)
    }
    /// The content hash this reference pins (never for HuggingFace), or None.
    #[getter]
    fn content_hash(&self) -> Option<String> {
        self.inner
            .content_hash()
            .and_then(|b| core::str::from_utf8(b).ok())
            .map(str::to_owned)
    }
    #[getter]
    fn kind(&self) -> PyResult<PyModelKind> {
        ModelKind::from_u8(self.inner.kind)
            .map(PyModelKind::from)
            .ok_or_else(|| core_err(CoreError::InvalidModelRef))
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
        let kind = ModelKind::from_u8(self.inner.kind).map_or("Invalid", |k| k.name());
        format!(
            "ModelRef({kind}, {:?}, {:?})",
            self.location(),
            self.revision()
        )
    }
}

/// Add the class to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyModelRef>()
}
