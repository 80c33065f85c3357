//! Run configuration (part of the state) with defaults and validation.

use crate::error::{CoreError, CoreResult};
use crate::{MAX_CLIENTS, MAX_WITNESSES};
use bytemuck::{Pod, Zeroable};

/// Largest global batch (samples per step) a config may ask for.
pub const MAX_BATCH_SIZE: u32 = 1 << 24;

/// The run configuration. 64 bytes, no implicit padding. Times are whole seconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct Config {
    /// Training steps (data rounds) in the whole run; the run finishes at the end of the epoch in
    /// which `step` reaches this.
    pub total_steps: u64,
    /// Global batch (samples) at step 0.
    pub batch_size_start: u32,
    /// Global batch once the ramp is over.
    pub batch_size_end: u32,
    /// Steps over which the batch ramps linearly from start to end (0 = no ramp).
    pub batch_ramp_steps: u32,
    /// Data rounds per epoch (a drain round follows them).
    pub rounds_per_epoch: u32,
    /// Extra seconds to wait for more members once `min_clients` have joined.
    pub waiting_extra_secs: u32,
    /// Warmup length (model download/load); ends early when every member sent warmup_witness.
    pub warmup_secs: u32,
    /// Longest a RoundTrain phase may last (the adaptive train window's upper bound).
    pub max_round_train_secs: u32,
    /// RoundWitness phase length (late witnesses, verifier reports).
    pub round_witness_secs: u32,
    /// Seconds RoundTrain continues after the witness quorum was reached.
    pub witness_grace_secs: u32,
    /// Cooldown length (checkpoint).
    pub cooldown_secs: u32,
    /// Members needed to start an epoch (and to keep it going).
    pub min_clients: u16,
    /// Per-epoch cap on members plus pending joiners.
    pub max_clients: u16,
    /// Witness committee size per round (capped at the member count).
    pub witnesses_per_round: u16,
    /// Witness quorum, percent of the round's witness committee (rounded up).
    pub witness_quorum_pct: u8,
    /// Share of members (percent, rounded up, at most members - 1) that verify instead of training.
    pub verification_pct: u8,
    /// Verifiers assigned to each verified result.
    pub verifiers_per_target: u8,
    /// Mismatch reports from distinct assigned verifiers that eject the target.
    pub eject_reports: u8,
    /// Shortest train window the adaptive timing may choose (see `timing`); equal to
    /// `max_round_train_secs` (or more: it is capped there) for fixed windows. The floor is at
    /// least `witness_grace_secs + 1`.
    pub min_round_train_secs: u16,
    /// Reserved, zero.
    pub reserved: [u8; 4],
}

impl Default for Config {
    fn default() -> Self {
        Self {
            total_steps: 1000,
            batch_size_start: 64,
            batch_size_end: 256,
            batch_ramp_steps: 100,
            rounds_per_epoch: 20,
            waiting_extra_secs: 30,
            warmup_secs: 120,
            max_round_train_secs: 120,
            round_witness_secs: 15,
            witness_grace_secs: 5,
            cooldown_secs: 60,
            min_clients: 2,
            max_clients: MAX_CLIENTS as u16,
            witnesses_per_round: 8,
            witness_quorum_pct: 66,
            verification_pct: 10,
            verifiers_per_target: 1,
            eject_reports: 1,
            min_round_train_secs: 10,
            reserved: [0; 4],
        }
    }
}

impl Config {
    /// Check every field; the first violated rule is returned.
    pub fn validate(&self) -> CoreResult<()> {
        if self.max_clients == 0 || self.max_clients as usize > MAX_CLIENTS {
            return Err(CoreError::ConfigMaxClients);
        }
        if self.min_clients == 0 || self.min_clients > self.max_clients {
            return Err(CoreError::ConfigMinClients);
        }
        if self.witnesses_per_round == 0 || self.witnesses_per_round as usize > MAX_WITNESSES {
            return Err(CoreError::ConfigWitnesses);
        }
        if self.witness_quorum_pct == 0 || self.witness_quorum_pct > 100 {
            return Err(CoreError::ConfigQuorum);
        }
        if self.verification_pct > 50 {
            return Err(CoreError::ConfigVerification);
        }
        if self.verifiers_per_target == 0
            || self.eject_reports == 0
            || self.eject_reports > self.verifiers_per_target
        {
            return Err(CoreError::ConfigEjection);
        }
        if self.warmup_secs == 0
            || self.max_round_train_secs == 0
            || self.round_witness_secs == 0
            || self.cooldown_secs == 0
            || self.witness_grace_secs >= self.max_round_train_secs
        {
            return Err(CoreError::ConfigTimes);
        }
        if self.rounds_per_epoch == 0 || self.total_steps == 0 {
            return Err(CoreError::ConfigSteps);
        }
        if self.batch_size_start == 0
            || self.batch_size_end == 0
            || self.batch_size_start > MAX_BATCH_SIZE
            || self.batch_size_end > MAX_BATCH_SIZE
        {
            return Err(CoreError::ConfigBatch);
        }
        Ok(())
    }

    /// Global batch size at `step`: linear ramp from `batch_size_start` to `batch_size_end` over
    /// `batch_ramp_steps` steps, integer arithmetic (rounded toward the start value).
    pub fn batch_size_at(&self, step: u64) -> u32 {
        let start = self.batch_size_start as u64;
        let end = self.batch_size_end as u64;
        let ramp = self.batch_ramp_steps as u64;
        if ramp == 0 || step >= ramp {
            return self.batch_size_end;
        }
        // Unsigned only (SBF v0 has no signed division); |end - start| < 2^32 and step < ramp <
        // 2^32, so the products fit a u64.
        let v = if end >= start {
            start + (end - start) * step / ramp
        } else {
            start - (start - end) * step / ramp
        };
        v.clamp(1, MAX_BATCH_SIZE as u64) as u32
    }

    /// Witness quorum for a committee of `witnesses`: ceil(witnesses * pct / 100), at least 1.
    pub fn quorum_for(pct: u8, witnesses: u16) -> u16 {
        let q = (witnesses as u32 * pct as u32).div_ceil(100);
        q.max(1) as u16
    }
}
