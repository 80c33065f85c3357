//! Typed errors. Every transition returns one of these on misuse and leaves the state unchanged.

macro_rules! errors {
    ($($(#[$m:meta])* $name:ident = $code:literal,)*) => {
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
    InvalidState = 1,
    /// The run is not in a phase that accepts this action.
    WrongPhase = 2,
    /// The wallet is not registered in this run.
    UnknownClient = 3,
    /// The wallet or node key is already registered.
    DuplicateClient = 4,
    /// An all-zero public key.
    InvalidKey = 5,
    /// No free slot, or the per-epoch client cap is reached.
    Full = 6,
    /// The run has finished.
    RunFinished = 7,
    /// The client is not healthy (dropped, withdrawn, ejected, or still pending).
    NotHealthy = 8,
    /// The witness already submitted in this round (or warmup).
    DuplicateWitness = 9,
    /// The claimed committee position is not a witness position.
    NotWitness = 10,
    /// The committee proof does not match the round's shuffle.
    BadProof = 11,
    /// The client is not a verifier this round.
    NotVerifier = 12,
    /// The verifier is not assigned this target.
    NotAssigned = 13,
    /// The verifier already reported this round.
    DuplicateReport = 14,
    /// An index (slot, position, height) is out of range.
    IndexOutOfRange = 15,
    /// The round is not (or no longer) in the ring of recent rounds.
    RoundUnavailable = 16,
    /// The round's witness window is still open; its outcome is not final yet.
    RoundNotFinal = 17,
    /// Fewer witnesses than the quorum submitted, so nothing can be decided from that round.
    NotEnoughWitnesses = 18,
    /// The health check found the target healthy.
    StillHealthy = 19,
    /// A checkpoint was already recorded this epoch.
    AlreadyCheckpointed = 20,
    /// The model reference is malformed.
    InvalidModelRef = 21,
    /// The action needs the run to be paused.
    NotHalted = 22,
    /// Already paused.
    AlreadyPaused = 23,
    /// Not paused.
    NotPaused = 24,
    /// The client was ejected.
    ClientEjected = 25,
    /// The client has already withdrawn.
    AlreadyWithdrawn = 26,
    /// The wallet was ejected from this run and may not join again.
    Banned = 27,
    /// Config: min_clients must be at least 1 and at most max_clients.
    ConfigMinClients = 100,
    /// Config: max_clients must be 1..=MAX_CLIENTS.
    ConfigMaxClients = 101,
    /// Config: witnesses_per_round must be 1..=MAX_WITNESSES.
    ConfigWitnesses = 102,
    /// Config: witness_quorum_pct must be 1..=100.
    ConfigQuorum = 103,
    /// Config: verification_pct must be 0..=50.
    ConfigVerification = 104,
    /// Config: verifiers_per_target must be >= 1 and eject_reports 1..=verifiers_per_target.
    ConfigEjection = 105,
    /// Config: warmup, round and cooldown times must be positive and the grace shorter than a round.
    ConfigTimes = 106,
    /// Config: rounds_per_epoch and total_steps must be positive.
    ConfigSteps = 107,
    /// Config: batch sizes must be positive (and at most 2^24).
    ConfigBatch = 108,
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
