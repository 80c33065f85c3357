//! Typed errors. Every transition returns one of these on misuse and leaves the state unchanged.

macro_rules! errors {
    ($($(#[$m:meta])* $name:ident = $code:literal => $msg:literal,)*) => {
        /// Every error a transition or a derivation can return. `code()` is stable (it is the
        /// Anchor program's custom error offset and the TCP server's error number).
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum CoreError {
            $($(#[$m])* $name = $code,)*
        }

        impl CoreError {
            /// All errors, in code order.
            pub const ALL: &'static [CoreError] = &[$(CoreError::$name,)*];

            /// The variant's name, e.g. `"WrongPhase"`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(CoreError::$name => stringify!($name),)*
                }
            }

            /// The rule the error reports, stated as the rule (e.g. `"min_clients must be ≥ 1 and
            /// ≤ max_clients"`). One table shared by the program, the TCP server and Python.
            pub const fn message(self) -> &'static str {
                match self {
                    $(CoreError::$name => $msg,)*
                }
            }

            /// Stable numeric code.
            pub const fn code(self) -> u32 {
                self as u32
            }

            /// The error with this code.
            pub fn from_code(code: u32) -> Option<CoreError> {
                CoreError::ALL.iter().copied().find(|e| e.code() == code)
            }
        }
    };
}

errors! {
    /// The bytes are not a valid state (wrong version, unknown phase or client state, bad length).
    InvalidState = 1 => "the bytes are not a valid coordinator state (wrong size or version, unknown phase or client state)",
    /// The run is not in a phase that accepts this action.
    WrongPhase = 2 => "the run is not in a phase that accepts this action",
    /// The wallet is not registered in this run.
    UnknownClient = 3 => "the wallet is not registered in this run",
    /// The wallet or node key is already registered.
    DuplicateClient = 4 => "a wallet and a node key may each be registered only once",
    /// An all-zero public key.
    InvalidKey = 5 => "a public key must not be all zeros",
    /// No free slot, or the per-epoch client cap is reached.
    Full = 6 => "no free client slot: max_clients are registered, or this epoch's cap is reached",
    /// The run has finished.
    RunFinished = 7 => "the run has finished (total_steps reached)",
    /// The client is not healthy (dropped, withdrawn, ejected, or still pending).
    NotHealthy = 8 => "the client must be healthy (not pending, dropped, withdrawn or ejected)",
    /// The witness already submitted in this round (or warmup).
    DuplicateWitness = 9 => "a witness submits once per round and once per warmup",
    /// The claimed committee position is not a witness position.
    NotWitness = 10 => "the committee position must be a witness position (below the round's witness count)",
    /// The committee proof does not match the round's shuffle.
    BadProof = 11 => "the committee proof must match: the wallet's slot is not at that position of the round's shuffle",
    /// The client is not a verifier this round.
    NotVerifier = 12 => "only a verifier of this round may report",
    /// The verifier is not assigned this target.
    NotAssigned = 13 => "a verifier may report only the target it is assigned this round",
    /// The verifier already reported this round.
    DuplicateReport = 14 => "a verifier reports at most once per round",
    /// An index (slot, position, height) is out of range.
    IndexOutOfRange = 15 => "slot, position or height out of range",
    /// The round is not (or no longer) in the ring of recent rounds.
    RoundUnavailable = 16 => "the round must be in the ring of the ROUND_RING most recent rounds",
    /// The round's witness window is still open; its outcome is not final yet.
    RoundNotFinal = 17 => "the round's witness window is still open; its outcome is not final yet",
    /// Fewer witnesses than the quorum submitted, so nothing can be decided from that round.
    NotEnoughWitnesses = 18 => "fewer witnesses than the quorum submitted, so nothing can be decided from that round",
    /// The health check found the target healthy.
    StillHealthy = 19 => "a health check must find the target unhealthy; it is healthy",
    /// A checkpoint was already recorded this epoch.
    AlreadyCheckpointed = 20 => "a checkpoint is recorded at most once per epoch",
    /// The model reference is malformed.
    InvalidModelRef = 21 => "a model reference needs a known kind, UTF-8 location (at most 248 bytes; required except for Peers; http(s):// for HttpUrl) and revision (at most 64 bytes; for HuggingFace a hub revision, for the other kinds empty or a content hash of 64 lowercase hex digits)",
    /// The action needs the run to be paused.
    NotHalted = 22 => "the run must be paused for this",
    /// Already paused.
    AlreadyPaused = 23 => "the run is already paused",
    /// Not paused.
    NotPaused = 24 => "the run must be paused to resume",
    /// The client was ejected.
    ClientEjected = 25 => "the client was ejected",
    /// The client has already withdrawn.
    AlreadyWithdrawn = 26 => "the client has already withdrawn",
    /// The wallet was ejected from this run and may not join again.
    Banned = 27 => "the wallet was ejected from this run and may not join again",
    /// No trainer of the round was attested by a majority of the next round's witnesses.
    NothingWitnessed = 28 => "a round applies only if a strict majority of the next round's witnesses attest at least one of its trainers; none did, so its data is trained again and it does not count as a step",
    /// Only the epoch's designated checkpointer may record the checkpoint.
    NotCheckpointer = 29 => "only the epoch's designated checkpointer (a healthy member picked by the drain round's seed) may record the checkpoint",
    /// A checkpoint must name its content hash.
    CheckpointUnhashed = 30 => "a checkpoint must carry the model's content hash (64 lowercase hex digits) as its revision, unless it is a HuggingFace revision",
    /// Config: min_clients must be at least 1 and at most max_clients.
    ConfigMinClients = 100 => "min_clients must be ≥ 1 and ≤ max_clients",
    /// Config: max_clients must be 1..=MAX_CLIENTS.
    ConfigMaxClients = 101 => "max_clients must be ≥ 1 and ≤ MAX_CLIENTS (256)",
    /// Config: witnesses_per_round must be 1..=MAX_WITNESSES.
    ConfigWitnesses = 102 => "witnesses_per_round must be ≥ 1 and ≤ MAX_WITNESSES (16)",
    /// Config: witness_quorum_pct must be 1..=100.
    ConfigQuorum = 103 => "witness_quorum_pct must be ≥ 1 and ≤ 100",
    /// Config: verification_pct must be 0..=50.
    ConfigVerification = 104 => "verification_pct must be ≤ 50",
    /// Config: verifiers_per_target must be >= 1 and eject_reports 1..=verifiers_per_target.
    ConfigEjection = 105 => "verifiers_per_target must be ≥ 1 and eject_reports ≥ 1 and ≤ verifiers_per_target",
    /// Config: warmup, round and cooldown times must be positive and the grace shorter than a round.
    ConfigTimes = 106 => "warmup_secs, max_round_train_secs, round_witness_secs and cooldown_secs must be ≥ 1 and witness_grace_secs < max_round_train_secs",
    /// Config: rounds_per_epoch and total_steps must be positive.
    ConfigSteps = 107 => "rounds_per_epoch and total_steps must be ≥ 1",
    /// Config: batch sizes must be positive (and at most 2^24).
    ConfigBatch = 108 => "batch_size_start and batch_size_end must be ≥ 1 and ≤ 2^24",
}

impl core::fmt::Display for CoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CoreError {}

/// Result alias.
pub type CoreResult<T> = Result<T, CoreError>;

#[cfg(test)]
mod tests {
    use super::CoreError;

    #[test]
    fn every_error_states_its_rule() {
        for e in CoreError::ALL {
            assert!(!e.message().is_empty(), "{e:?}");
            assert_eq!(CoreError::from_code(e.code()), Some(*e));
        }
        // The numbers quoted in the table are the constants'.
        let max_clients = alloc_free_contains(CoreError::ConfigMaxClients.message(), "(256)");
        assert!(max_clients && crate::MAX_CLIENTS == 256);
        assert!(alloc_free_contains(
            CoreError::ConfigWitnesses.message(),
            "(16)"
        ));
        assert_eq!(crate::MAX_WITNESSES, 16);
        assert_eq!(crate::state::MODEL_LOCATION_BYTES, 248);
        assert_eq!(crate::state::MODEL_REVISION_BYTES, 64);
        assert_eq!(crate::config::MAX_BATCH_SIZE, 1 << 24);
    }

    fn alloc_free_contains(hay: &str, needle: &str) -> bool {
        hay.contains(needle)
    }
}
