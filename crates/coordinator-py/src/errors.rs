//! `CoreError` as Python exceptions: one class per core error (all subclasses of
//! `CoordinatorError`), with `name` and `code` class attributes and the core's rule text as the
//! message, so Python, the TCP server and the program report the same words.

use psyche_core::CoreError;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use std::ffi::CString;

pyo3::create_exception!(
    _core,
    CoordinatorError,
    PyException,
    "A coordinator rule was violated; the subclass name is the core's error name."
);

static ERROR_TYPES: PyOnceLock<Vec<(u32, Py<PyType>)>> = PyOnceLock::new();

/// The exception class of every core error, created once, in code order.
fn error_types(py: Python<'_>) -> PyResult<&Vec<(u32, Py<PyType>)>> {
    ERROR_TYPES.get_or_try_init(py, || {
        let base = py.get_type::<CoordinatorError>();
        let mut out = Vec::new();
        for e in CoreError::ALL {
            let name = CString::new(format!("psyche_client._core.{}", e.name()))
                .map_err(|_| PyValueError::new_err("bad error name"))?;
            let doc = CString::new(e.message())
                .map_err(|_| PyValueError::new_err("bad error message"))?;
            let ty = PyErr::new_type(py, &name, Some(&doc), Some(&base), None)?;
            ty.bind(py).setattr("name", e.name())?;
            ty.bind(py).setattr("code", e.code())?;
            out.push((e.code(), ty));
        }
        Ok(out)
    })
}

/// The Python exception for a core error; its message is the rule the error reports.
pub fn core_err(e: CoreError) -> PyErr {
    Python::attach(|py| match error_types(py) {
        Ok(types) => match types.iter().find(|(c, _)| *c == e.code()) {
            Some((_, ty)) => PyErr::from_type(ty.bind(py).clone(), e.message()),
            None => CoordinatorError::new_err(e.message()),
        },
        Err(err) => err,
    })
}

/// Error name for a numeric code (as the program / TCP server report them).
#[pyfunction]
fn error_name(code: u32) -> Option<&'static str> {
    CoreError::from_code(code).map(|e| e.name())
}

/// The rule text of a numeric code (the message every front end shows for it).
#[pyfunction]
fn error_message(code: u32) -> Option<&'static str> {
    CoreError::from_code(code).map(|e| e.message())
}

/// Add `CoordinatorError`, every error class and the lookup functions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CoordinatorError", py.get_type::<CoordinatorError>())?;
    for (code, ty) in error_types(py)? {
        if let Some(e) = CoreError::from_code(*code) {
            m.add(e.name(), ty.bind(py))?;
        }
    }
    m.add_function(wrap_pyfunction!(error_name, m)?)?;
    m.add_function(wrap_pyfunction!(error_message, m)?)?;
    Ok(())
}
