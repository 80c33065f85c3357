//! The fixed-size plain-old-data state: the on-chain account body byte for byte.
//!
//! Every enum-like field is stored as a `u8` and decoded fallibly, so any byte pattern can be
//! loaded without undefined behaviour; transitions reject states that do not decode.

use crate::bloom::Bloom;
use crate::config::Config;
use crate::error::{CoreError, CoreResult};
use crate::{MAX_BANNED, MAX_CLIENTS, MAX_WITNESSES, REQUEUE_CAP, ROUND_RING, STATE_VERSION};
use bytemuck::{Pod, Zeroable};

/// Run phase.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Zeroed account, not initialized.
    Uninitialized = 0,
    /// Waiting for `min_clients` members (plus the extra wait).
    WaitingForMembers = 1,
    /// Members load the model and send warmup witnesses.
    Warmup = 2,
    /// Trainers train; witnesses report the previous round's results.
    RoundTrain = 3,
    /// Late witnesses and verifier reports.
    RoundWitness = 4,
    /// The epoch's last results are applied; a checkpoint is recorded.
    Cooldown = 5,
    /// Halted by the operator; config may change.
    Paused = 6,
    /// `total_steps` reached.
    Finished = 7,
}

impl Phase {
    /// Decode.
    pub fn from_u8(v: u8) -> Option<Phase> {
        Some(match v {
            0 => Phase::Uninitialized,
            1 => Phase::WaitingForMembers,
            2 => Phase::Warmup,
            3 => Phase::RoundTrain,
            4 => Phase::RoundWitness,
            5 => Phase::Cooldown,
            6 => Phase::Paused,
            7 => Phase::Finished,
            _ => return None,
        })
    }

    /// Name as in docs/protocol.md.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Uninitialized => "Uninitialized",
            Phase::WaitingForMembers => "WaitingForMembers",
            Phase::Warmup => "Warmup",
            Phase::RoundTrain => "RoundTrain",
            Phase::RoundWitness => "RoundWitness",
            Phase::Cooldown => "Cooldown",
            Phase::Paused => "Paused",
            Phase::Finished => "Finished",
        }
    }
}

/// A client slot's state.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Free slot.
    Empty = 0,
    /// Joined during an epoch; becomes a member when the next epoch opens.
    Pending = 1,
    /// Member in good standing; takes part in rounds.
    Healthy = 2,
    /// Removed by a health check or a missed warmup; slot freed at epoch end.
    Dropped = 3,
    /// Left voluntarily; slot freed at epoch end.
    Withdrawn = 4,
    /// Caught by verifiers; results excluded; slot freed at epoch end.
    Ejected = 5,
}

impl ClientState {
    /// Decode.
    pub fn from_u8(v: u8) -> Option<ClientState> {
        Some(match v {
            0 => ClientState::Empty,
            1 => ClientState::Pending,
            2 => ClientState::Healthy,
            3 => ClientState::Dropped,
            4 => ClientState::Withdrawn,
            5 => ClientState::Ejected,
            _ => return None,
        })
    }

    /// Name.
    pub fn name(self) -> &'static str {
        match self {
            ClientState::Empty => "Empty",
            ClientState::Pending => "Pending",
            ClientState::Healthy => "Healthy",
            ClientState::Dropped => "Dropped",
            ClientState::Withdrawn => "Withdrawn",
            ClientState::Ejected => "Ejected",
        }
    }

    /// Member of the running epoch (not empty, not pending).
    pub fn is_member(self) -> bool {
        !matches!(self, ClientState::Empty | ClientState::Pending)
    }
}

/// Where the model (or the latest checkpoint) comes from.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// A path on the client's disk.
    LocalPath = 1,
    /// An HTTP(S) URL of a safetensors checkpoint directory.
    HttpUrl = 2,
    /// A Hugging Face repo plus revision.
    HuggingFace = 3,
    /// Download from peers over p2p (after the first epoch).
    Peers = 4,
}

impl ModelKind {
    /// Decode.
    pub fn from_u8(v: u8) -> Option<ModelKind> {
        Some(match v {
            1 => ModelKind::LocalPath,
            2 => ModelKind::HttpUrl,
            3 => ModelKind::HuggingFace,
            4 => ModelKind::Peers,
            _ => return None,
        })
    }

    /// Name.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::LocalPath => "LocalPath",
            ModelKind::HttpUrl => "HttpUrl",
            ModelKind::HuggingFace => "HuggingFace",
            ModelKind::Peers => "Peers",
        }
    }
}

/// Bytes for a model location (path, URL or HF repo id).
pub const MODEL_LOCATION_BYTES: usize = 248;
/// Bytes for a model revision (HF revision / commit, or empty).
pub const MODEL_REVISION_BYTES: usize = 64;

/// Hex digits of a content hash (SHA-256) in a model reference's revision.
pub const CONTENT_HASH_HEX: usize = 64;

/// 64 lowercase hex digits: the form of a content hash.
pub fn is_content_hash(b: &[u8]) -> bool {
    b.len() == CONTENT_HASH_HEX
        && b.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Model / checkpoint reference. 320 bytes. Strings are UTF-8, length-prefixed, zero padded.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, PartialEq, Eq)]
pub struct ModelRef {
    /// `ModelKind` as u8.
    pub kind: u8,
    /// Zero.
    pub pad0: u8,
    /// Used bytes of `location`.
    pub location_len: u16,
    /// Used bytes of `revision`.
    pub revision_len: u16,
    /// Zero.
    pub pad1: [u8; 2],
    /// Location bytes.
    pub location: [u8; MODEL_LOCATION_BYTES],
    /// Revision bytes.
    pub revision: [u8; MODEL_REVISION_BYTES],
}

impl core::fmt::Debug for ModelRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ModelRef")
            .field("kind", &self.kind)
            .field("location", &self.location_str())
            .field("revision", &self.revision_str())
            .finish()
    }
}

impl ModelRef {
    /// Build and validate.
    pub fn new(kind: ModelKind, location: &[u8], revision: &[u8]) -> CoreResult<ModelRef> {
        let mut m = ModelRef::zeroed();
        if location.len() > MODEL_LOCATION_BYTES || revision.len() > MODEL_REVISION_BYTES {
            return Err(CoreError::InvalidModelRef);
        }
        m.kind = kind as u8;
        m.location_len = location.len() as u16;
        m.revision_len = revision.len() as u16;
        m.location[..location.len()].copy_from_slice(location);
        m.revision[..revision.len()].copy_from_slice(revision);
        m.validate()?;
        Ok(m)
    }

    /// Rules: known kind; lengths in range; UTF-8; padding zero; location required except for
    /// `Peers`; a revision only for `HuggingFace`.
    pub fn validate(&self) -> CoreResult<()> {
        let kind = ModelKind::from_u8(self.kind).ok_or(CoreError::InvalidModelRef)?;
        let loc = self.location_bytes().ok_or(CoreError::InvalidModelRef)?;
        let rev = self.revision_bytes().ok_or(CoreError::InvalidModelRef)?;
        if self.pad0 != 0 || self.pad1 != [0; 2] {
            return Err(CoreError::InvalidModelRef);
        }
        let tail_zero = self.location[loc.len()..].iter().all(|b| *b == 0)
            && self.revision[rev.len()..].iter().all(|b| *b == 0);
        if !tail_zero || core::str::from_utf8(loc).is_err() || core::str::from_utf8(rev).is_err() {
            return Err(CoreError::InvalidModelRef);
        }
        let hash_or_empty = rev.is_empty() || is_content_hash(rev);
        let ok = match kind {
            ModelKind::Peers => loc.is_empty() && hash_or_empty,
            ModelKind::HuggingFace => !loc.is_empty(),
            ModelKind::LocalPath | ModelKind::HttpUrl => !loc.is_empty() && hash_or_empty,
        };
        if !ok {
            return Err(CoreError::InvalidModelRef);
        }
        if kind == ModelKind::HttpUrl
            && !(loc.starts_with(b"http://") || loc.starts_with(b"https://"))
        {
            return Err(CoreError::InvalidModelRef);
        }
        Ok(())
    }

    /// The content hash this reference pins (64 lowercase hex digits in `revision`; never for
    /// HuggingFace, whose revision is a hub revision), if any.
    pub fn content_hash(&self) -> Option<&[u8]> {
        let rev = self.revision_bytes()?;
        (self.kind != ModelKind::HuggingFace as u8 && is_content_hash(rev)).then_some(rev)
    }

    /// Used location bytes, if the length is in range.
    pub fn location_bytes(&self) -> Option<&[u8]> {
        self.location.get(..self.location_len as usize)
    }

    /// Used revision bytes, if the length is in range.
    pub fn revision_bytes(&self) -> Option<&[u8]> {
        self.revision.get(..self.revision_len as usize)
    }

    /// Location as text ("" if malformed).
    pub fn location_str(&self) -> &str {
        self.location_bytes()
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// Revision as text ("" if malformed).
    pub fn revision_str(&self) -> &str {
        self.revision_bytes()
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

/// One client slot. 72 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct Client {
    /// Wallet public key (signs transactions).
    pub wallet: [u8; 32],
    /// ed25519 node key (signs results and TCP messages; the libp2p peer id).
    pub node_key: [u8; 32],
    /// Epoch in which the client became a member (or will, if pending).
    pub joined_epoch: u32,
    /// `ClientState` as u8.
    pub state: u8,
    /// Zero.
    pub pad: [u8; 3],
}

impl Client {
    /// Decoded state (`None` for a corrupt byte).
    pub fn client_state(&self) -> Option<ClientState> {
        ClientState::from_u8(self.state)
    }

    /// Healthy member.
    pub fn is_healthy(&self) -> bool {
        self.state == ClientState::Healthy as u8
    }
}

/// Compact statistics a witness reports with its filters (integers only).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct WitnessStats {
    /// Training loss of the witness's own batch, times 1000.
    pub loss_milli: u32,
    /// The witness's training throughput, tokens per second.
    pub tokens_per_sec: u32,
    /// Bytes of results it downloaded for the attested round, in KiB.
    pub download_kib: u32,
    /// Zero.
    pub reserved: u32,
}

/// The body of a `witness` instruction (plain bytes, readable in place from instruction data).
/// 660 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct WitnessInput {
    /// Committee position of the witness in the current round (the proof).
    pub position: u16,
    /// Zero.
    pub reserved: u16,
    /// Stats.
    pub stats: WitnessStats,
    /// Salted filter of received result commitments.
    pub results: Bloom,
    /// Salted filter of the wallets of trainers whose result was received.
    pub trainers: Bloom,
}

/// One witness submission. 660 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct WitnessSubmission {
    /// Slot of the witness.
    pub client: u16,
    /// Its committee position (the proof).
    pub position: u16,
    /// Stats.
    pub stats: WitnessStats,
    /// Commitments (32-byte hashes) of the previous round's results the witness received,
    /// hashed with the witness's salt (`derive::witness_salt`).
    pub results: Bloom,
    /// Wallets of the previous round's trainers whose valid result the witness received (same
    /// salt).
    pub trainers: Bloom,
}

/// Round kind.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundKind {
    /// Ring entry not used.
    Empty = 0,
    /// Trainers train an assigned batch.
    Data = 1,
    /// Epoch's last round: no data; witnesses attest the last data round.
    Drain = 2,
}

/// A bitmap over client slots.
pub type SlotBitmap = [u8; MAX_CLIENTS / 8];

/// Read a bit.
pub fn bit_get(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// Set a bit (no-op when out of range).
pub fn bit_set(bits: &mut [u8], i: usize) {
    if let Some(b) = bits.get_mut(i / 8) {
        *b |= 1 << (i % 8);
    }
}

/// One round of the ring. 10,752 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct Round {
    /// Round seed (committee shuffle, verification offsets).
    pub seed: [u8; 32],
    /// First sample of the round's global batch.
    pub data_index: u64,
    /// Unix seconds the round started.
    pub started_at: i64,
    /// Unix seconds the witness quorum was reached (0 = not yet).
    pub quorum_at: i64,
    /// Global step of a data round (the step counter when it started).
    pub step: u64,
    /// Epoch.
    pub epoch: u32,
    /// Height (round number within the epoch, from 0).
    pub height: u32,
    /// Global batch size (0 in a drain round).
    pub batch_size: u32,
    /// Members taking part (bits set in `members`).
    pub member_count: u16,
    /// Witness committee size.
    pub witness_count: u16,
    /// Verifier count.
    pub verifier_count: u16,
    /// Witness submissions stored.
    pub submissions_len: u16,
    /// `RoundKind` as u8.
    pub kind: u8,
    /// 1 once this data round's span was put back on the requeue (its results are not applied).
    pub requeued: u8,
    /// This round's train window in seconds (the adaptive timing's choice at round start; 0 in
    /// rounds of a state from before adaptive timing: `max_round_train_secs`).
    pub train_secs: u16,
    /// Bitmap over committee positions (< MAX_WITNESSES) that submitted.
    pub witnessed: u32,
    /// Zero.
    pub pad2: u32,
    /// Slots taking part (healthy at round start).
    pub members: SlotBitmap,
    /// Verifier slots that reported this round.
    pub reported: SlotBitmap,
    /// Slots ejected by reports received in this round.
    pub ejected: SlotBitmap,
    /// Witness submissions, in arrival order (`submissions_len` used).
    pub submissions: [WitnessSubmission; MAX_WITNESSES],
}

impl Round {
    /// Decoded kind.
    pub fn round_kind(&self) -> Option<RoundKind> {
        match self.kind {
            0 => Some(RoundKind::Empty),
            1 => Some(RoundKind::Data),
            2 => Some(RoundKind::Drain),
            _ => None,
        }
    }

    /// Stored submissions (clamped to capacity).
    pub fn submissions(&self) -> &[WitnessSubmission] {
        let n = (self.submissions_len as usize).min(MAX_WITNESSES);
        &self.submissions[..n]
    }
}

/// Progress counters. 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct Progress {
    /// Next data sample (everything before it was assigned in an applied-or-pending round).
    pub data_index: u64,
    /// Data rounds started in the whole run (monotonic; the `step` in result commitments).
    pub step: u64,
    /// Training steps completed: data rounds of epochs that reached cooldown. The run finishes
    /// when this reaches `total_steps`; aborted epochs do not count.
    pub steps_done: u64,
    /// Current epoch (increments when an epoch ends, normally or aborted).
    pub epoch: u32,
    /// Current round height within the epoch.
    pub height: u32,
    /// Data rounds in the current epoch (fixed when warmup ends).
    pub epoch_rounds: u32,
    /// Epochs that ended normally (with cooldown).
    pub epochs_completed: u32,
}

/// The whole coordinator state: the account body. Size `STATE_SIZE` (see tests/layout).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct State {
    /// `STATE_VERSION`.
    pub version: u32,
    /// `Phase` as u8.
    pub phase: u8,
    /// 1 when a checkpoint was recorded in this epoch's cooldown.
    pub checkpointed: u8,
    /// Zero.
    pub pad: [u8; 2],
    /// Bumped on every change.
    pub nonce: u64,
    /// Run id (e.g. sha256 of the run name, or the program's run PDA seed).
    pub run_id: [u8; 32],
    /// Unix seconds of creation.
    pub created_at: i64,
    /// Unix seconds the current phase started.
    pub phase_started_at: i64,
    /// Unix seconds of the last change.
    pub updated_at: i64,
    /// Unix seconds `min_clients` was reached while waiting (0 = not reached).
    pub min_reached_at: i64,
    /// Counters.
    pub progress: Progress,
    /// Config.
    pub config: Config,
    /// Model / latest checkpoint.
    pub model: ModelRef,
    /// Members that sent a warmup witness this epoch.
    pub warmup_ready: SlotBitmap,
    /// Client slots.
    pub clients: [Client; MAX_CLIENTS],
    /// Ring of recent rounds, indexed by `height % ROUND_RING`.
    pub rounds: [Round; ROUND_RING],
    /// Ejections so far; the next ban goes to `banned[banned_next % MAX_BANNED]`.
    pub banned_next: u32,
    /// Estimate of a round's time to witness quorum, 1/16 s (0 = none yet); see `timing`.
    pub train_est_x16: u32,
    /// Wallets of the most recent ejected clients; they cannot join again.
    pub banned: [[u8; 32]; MAX_BANNED],
    /// Entries used in `requeue`.
    pub requeue_len: u32,
    /// Zero.
    pub pad_requeue: u32,
    /// Samples that could not be requeued because the requeue was full (expected to stay 0).
    pub lost_samples: u64,
    /// Data spans of rounds whose results were not applied (no witness quorum, or an aborted
    /// epoch), trained again by the next data rounds before any fresh data (FIFO).
    pub requeue: [Span; REQUEUE_CAP],
}

/// A span of samples `[start, start + len)`. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct Span {
    /// First sample.
    pub start: u64,
    /// Number of samples.
    pub len: u32,
    /// Zero.
    pub pad: u32,
}

/// Size of the state in bytes.
pub const STATE_SIZE: usize = core::mem::size_of::<State>();

impl core::fmt::Debug for State {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("State")
            .field("version", &self.version)
            .field("phase", &self.phase)
            .field("nonce", &self.nonce)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

impl State {
    /// Borrow a state from account bytes (length and 8-byte alignment checked).
    pub fn from_bytes(bytes: &[u8]) -> CoreResult<&State> {
        bytemuck::try_from_bytes(bytes).map_err(|_| CoreError::InvalidState)
    }

    /// Mutable variant of `from_bytes`.
    pub fn from_bytes_mut(bytes: &mut [u8]) -> CoreResult<&mut State> {
        bytemuck::try_from_bytes_mut(bytes).map_err(|_| CoreError::InvalidState)
    }

    /// The state's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::bytes_of(self)
    }

    /// A zeroed state on the heap (std only; on chain the account is the storage).
    #[cfg(feature = "std")]
    pub fn boxed_zeroed() -> std::boxed::Box<State> {
        bytemuck::zeroed_box()
    }

    /// Decoded phase.
    pub fn phase(&self) -> CoreResult<Phase> {
        Phase::from_u8(self.phase).ok_or(CoreError::InvalidState)
    }

    /// Checks the version, the phase and every client state byte decode.
    pub fn check(&self) -> CoreResult<()> {
        if self.version != STATE_VERSION {
            return Err(CoreError::InvalidState);
        }
        if matches!(self.phase()?, Phase::Uninitialized) {
            return Err(CoreError::InvalidState);
        }
        if self.clients.iter().any(|c| c.client_state().is_none()) {
            return Err(CoreError::InvalidState);
        }
        if self.rounds.iter().any(|r| r.round_kind().is_none()) {
            return Err(CoreError::InvalidState);
        }
        Ok(())
    }

    /// The pending requeue entries.
    pub fn requeued_spans(&self) -> &[Span] {
        &self.requeue[..(self.requeue_len as usize).min(REQUEUE_CAP)]
    }

    /// Whether a wallet was ejected (within the last `MAX_BANNED` ejections).
    pub fn is_banned(&self, wallet: &[u8; 32]) -> bool {
        let n = (self.banned_next as usize).min(MAX_BANNED);
        self.banned[..n].iter().any(|b| b == wallet)
    }

    /// Slot of a wallet.
    pub fn find_client(&self, wallet: &[u8; 32]) -> Option<usize> {
        self.clients
            .iter()
            .position(|c| c.state != ClientState::Empty as u8 && &c.wallet == wallet)
    }

    /// Client at a slot.
    pub fn client(&self, slot: usize) -> CoreResult<&Client> {
        self.clients.get(slot).ok_or(CoreError::IndexOutOfRange)
    }

    /// Number of clients in a given state.
    pub fn count_state(&self, s: ClientState) -> usize {
        self.clients.iter().filter(|c| c.state == s as u8).count()
    }

    /// The ring entry for `height` of the current epoch, if still held.
    pub fn round(&self, height: u32) -> CoreResult<&Round> {
        let r = &self.rounds[height as usize % ROUND_RING];
        if r.kind == RoundKind::Empty as u8
            || r.height != height
            || r.epoch != self.progress.epoch
            || height > self.progress.height
            || !self.in_rounds()
        {
            return Err(CoreError::RoundUnavailable);
        }
        Ok(r)
    }

    /// Mutable ring entry (same checks as `round`).
    pub fn round_mut(&mut self, height: u32) -> CoreResult<&mut Round> {
        self.round(height)?;
        Ok(&mut self.rounds[height as usize % ROUND_RING])
    }

    /// The epoch is in its rounds or cooldown (the ring is meaningful).
    pub fn in_rounds(&self) -> bool {
        matches!(
            Phase::from_u8(self.phase),
            Some(Phase::RoundTrain | Phase::RoundWitness | Phase::Cooldown)
        )
    }

    /// A round's witness window is closed (its submissions and ejections are final).
    pub fn round_final(&self, height: u32) -> CoreResult<&Round> {
        let r = self.round(height)?;
        let open = height == self.progress.height
            && matches!(
                Phase::from_u8(self.phase),
                Some(Phase::RoundTrain | Phase::RoundWitness)
            );
        if open {
            return Err(CoreError::RoundNotFinal);
        }
        Ok(r)
    }
}
