//! The core's enums as Python classes (`_core.Phase.Finished`, ...), so phases, client states,
//! round kinds, verdicts, tick outcomes and model kinds cross the binding typed, not as strings.
//!
//! A member prints as its name (`str`, f-strings, `format`) and `.name` is the plain string for
//! JSON and wire messages. Comparing a member with a `str` raises `TypeError` instead of quietly
//! being `False`: a leftover `phase == "Finished"` is a bug that should fail loudly.

use psyche_core::{ClientState, ModelKind, Phase, RoundKind, TickOutcome, Unhealthy};
use pyo3::basic::CompareOp;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

macro_rules! py_enum {
    ($(#[$doc:meta])* $py:ident = $pyname:literal, $core:ident { $($v:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[pyclass(name = $pyname, module = "psyche_client._core", frozen)]
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub enum $py {
            $($v,)+
        }

        impl From<$core> for $py {
            fn from(c: $core) -> Self {
                match c {
                    $($core::$v => $py::$v,)+
                }
            }
        }

        impl $py {
            /// Every member, in declaration (core) order.
            pub const ALL: &'static [$py] = &[$($py::$v,)+];
        }

        #[pymethods]
        impl $py {
            /// The member's name, e.g. for JSON.
            #[getter]
            fn name(&self) -> &'static str {
                match self {
                    $($py::$v => stringify!($v),)+
                }
            }
            /// Every member, in the core's order.
            #[staticmethod]
            fn members() -> Vec<$py> {
                Self::ALL.to_vec()
            }
            /// The member with this name (for parsing JSON or command lines).
            #[staticmethod]
            fn from_name(name: &str) -> PyResult<$py> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|m| m.name() == name)
                    .ok_or_else(|| {
                        pyo3::exceptions::PyValueError::new_err(format!(
                            "unknown {} {name:?}",
                            $pyname
                        ))
                    })
            }
            fn __str__(&self) -> &'static str {
                self.name()
            }
            fn __repr__(&self) -> String {
                format!("{}.{}", $pyname, self.name())
            }
            fn __format__(&self, py: Python<'_>, spec: &str) -> PyResult<Py<PyAny>> {
                let name = PyString::new(py, self.name());
                Ok(name.call_method1("__format__", (spec,))?.unbind())
            }
            fn __hash__(&self) -> u64 {
                0x5053_5943_0000 + *self as u64
            }
            fn __richcmp__(
                &self,
                py: Python<'_>,
                other: &Bound<'_, PyAny>,
                op: CompareOp,
            ) -> PyResult<Py<PyAny>> {
                if let Ok(o) = other.cast::<$py>() {
                    let o = *o.get();
                    return match op {
                        CompareOp::Eq => Ok((*self == o).into_pyobject(py)?.to_owned().into_any().unbind()),
                        CompareOp::Ne => Ok((*self != o).into_pyobject(py)?.to_owned().into_any().unbind()),
                        _ => Ok(py.NotImplemented()),
                    };
                }
                if other.is_instance_of::<PyString>() {
                    return Err(PyTypeError::new_err(format!(
                        "compare {} with _core.{}.{}, not the string {}",
                        self.__repr__(),
                        $pyname,
                        other,
                        other.repr()?
                    )));
                }
                Ok(py.NotImplemented())
            }
        }
    };
}

py_enum! {
    /// Run phase.
    PyPhase = "Phase", Phase {
        Uninitialized, WaitingForMembers, Warmup, RoundTrain, RoundWitness, Cooldown, Paused,
        Finished,
    }
}

py_enum! {
    /// State of a client slot.
    PyClientState = "ClientState", ClientState {
        Empty, Pending, Healthy, Dropped, Withdrawn, Ejected,
    }
}

py_enum! {
    /// Kind of a round of the ring.
    PyRoundKind = "RoundKind", RoundKind { Empty, Data, Drain }
}

py_enum! {
    /// Why a health check drops a client (the verdict).
    PyUnhealthy = "Unhealthy", Unhealthy { MissingResult, MissedWitness }
}

py_enum! {
    /// What a tick did.
    PyTickOutcome = "TickOutcome", TickOutcome { Idle, Updated, Transitioned }
}

py_enum! {
    /// Where a model comes from.
    PyModelKind = "ModelKind", ModelKind { LocalPath, HttpUrl, HuggingFace, Peers }
}

impl From<PyClientState> for ClientState {
    fn from(s: PyClientState) -> Self {
        match s {
            PyClientState::Empty => ClientState::Empty,
            PyClientState::Pending => ClientState::Pending,
            PyClientState::Healthy => ClientState::Healthy,
            PyClientState::Dropped => ClientState::Dropped,
            PyClientState::Withdrawn => ClientState::Withdrawn,
            PyClientState::Ejected => ClientState::Ejected,
        }
    }
}

impl From<PyModelKind> for ModelKind {
    fn from(k: PyModelKind) -> Self {
        match k {
            PyModelKind::LocalPath => ModelKind::LocalPath,
            PyModelKind::HttpUrl => ModelKind::HttpUrl,
            PyModelKind::HuggingFace => ModelKind::HuggingFace,
            PyModelKind::Peers => ModelKind::Peers,
        }
    }
}

/// Add every enum class to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPhase>()?;
    m.add_class::<PyClientState>()?;
    m.add_class::<PyRoundKind>()?;
    m.add_class::<PyUnhealthy>()?;
    m.add_class::<PyTickOutcome>()?;
    m.add_class::<PyModelKind>()?;
    Ok(())
}
