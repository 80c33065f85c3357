//! `Config`: the run configuration as a Python class with keyword construction, `replace`,
//! `to_dict` and the core's validation (typed errors).

use crate::errors::core_err;
use psyche_core::Config;
use pyo3::prelude::*;

macro_rules! config_class {
    ($($f:ident : $t:ty),* $(,)?) => {
        /// Run configuration; every field has a sane default (see docs/protocol.md).
        #[pyclass(name = "Config", module = "psyche_client._core", get_all, set_all)]
        #[derive(Clone)]
        pub struct PyConfig {
            $($f: $t,)*
        }

        impl PyConfig {
            pub fn from_core(c: &Config) -> Self {
                Self { $($f: c.$f,)* }
            }
            pub fn core(&self) -> Config {
                Config { $($f: self.$f,)* reserved: [0; 4] }
            }
        }

        #[pymethods]
        impl PyConfig {
            #[new]
            #[pyo3(signature = (*, $($f=None),*))]
            #[allow(clippy::too_many_arguments)]
            fn new($($f: Option<$t>),*) -> Self {
                let mut c = Config::default();
                $(if let Some(v) = $f { c.$f = v; })*
                Self::from_core(&c)
            }
            /// All fields as a dict.
            fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
                let d = pyo3::types::PyDict::new(py);
                $(d.set_item(stringify!($f), self.$f)?;)*
                Ok(d)
            }
            /// A copy with the given fields replaced.
            #[pyo3(signature = (*, $($f=None),*))]
            #[allow(clippy::too_many_arguments)]
            fn replace(&self, $($f: Option<$t>),*) -> Self {
                let mut c = self.clone();
                $(if let Some(v) = $f { c.$f = v; })*
                c
            }
            fn __eq__(&self, other: &Self) -> bool {
                self.core() == other.core()
            }
            fn __repr__(&self) -> String {
                format!("Config({:?})", self.core())
            }
            /// Raise the typed error of the first violated rule.
            fn validate(&self) -> PyResult<()> {
                self.core().validate().map_err(core_err)
            }
            /// Global batch size at a step (the ramp).
            fn batch_size_at(&self, step: u64) -> u32 {
                self.core().batch_size_at(step)
            }
        }
    };
}

config_class! {
    total_steps: u64,
    batch_size_start: u32,
    batch_size_end: u32,
    batch_ramp_steps: u32,
    rounds_per_epoch: u32,
    waiting_extra_secs: u32,
    warmup_secs: u32,
    max_round_train_secs: u32,
    round_witness_secs: u32,
    witness_grace_secs: u32,
    cooldown_secs: u32,
    min_clients: u16,
    max_clients: u16,
    witnesses_per_round: u16,
    witness_quorum_pct: u8,
    verification_pct: u8,
    verifiers_per_target: u8,
    eject_reports: u8,
    min_round_train_secs: u16,
}

/// Add the class to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyConfig>()
}
