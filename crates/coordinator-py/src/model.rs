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
