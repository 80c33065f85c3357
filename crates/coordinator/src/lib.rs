//! The Psyche coordinator core: the run state machine shared, byte for byte, by the Solana
//! program, the TCP server and every client. See docs/protocol.md for the specification.
//!
//! `no_std`, no allocator, no floats, fixed-size plain-old-data state operated on in place.
#![no_std]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[cfg(feature = "std")]
extern crate std;

pub mod bloom;
pub mod config;
pub mod derive;
pub mod error;
pub mod layout;
pub mod murmur;
pub mod rng;
pub mod state;
pub mod timing;
pub mod transitions;

pub use bloom::{
    bloom_indices, bloom_indices_salted, Bloom, BLOOM_BITS, BLOOM_BYTES, BLOOM_HASHES,
};
pub use config::Config;
pub use derive::{
    apply_set, health_verdict, witness_filters, witness_salt, Candidate, Committee, Unhealthy,
};
pub use error::{CoreError, CoreResult};
pub use murmur::murmur3_x64_128;
pub use state::{
    Client, ClientState, ModelKind, ModelRef, Phase, Progress, Round, RoundKind, Span, State,
    WitnessInput, WitnessStats, WitnessSubmission, STATE_SIZE,
};
pub use transitions::TickOutcome;

/// Layout version of the coordinator state.
pub const STATE_VERSION: u32 = 1;
/// Client slots (compile-time cap; `Config::max_clients` may be lower).
pub const MAX_CLIENTS: usize = 256;
/// Largest witness committee.
pub const MAX_WITNESSES: usize = 16;
/// Recent rounds kept in the state.
pub const ROUND_RING: usize = 4;
/// Ejected wallets remembered (a ring); they cannot join the run again.
pub const MAX_BANNED: usize = 64;
/// Unapplied data spans remembered for retraining.
pub const REQUEUE_CAP: usize = 8;
/// Consecutive rounds without a witness quorum after which the epoch is aborted (at most
/// `ROUND_RING`, since the rounds are judged from the ring).
pub const STALL_ROUNDS: usize = 3;
const _: () = assert!(STALL_ROUNDS >= 1 && STALL_ROUNDS <= ROUND_RING);

/// Instruction data of a `witness` instruction: Anchor discriminator (8) + `WitnessInput`
/// (position, reserved, stats, two filters).
pub const WITNESS_IX_DATA_BYTES: usize = 8 + core::mem::size_of::<WitnessInput>();

/// Size of a legacy Solana transaction with one signature, `accounts` distinct account keys and
/// instructions whose (account-index count, data length) are given: 1 + 64 signatures, 3 header,
/// compact-u16 key count, 32 per key, 32 blockhash, then per instruction program index, compact
/// account count, indices, compact data length, data.
pub const fn legacy_tx_bytes(accounts: usize, ixs: &[(usize, usize)]) -> usize {
    const fn compact(n: usize) -> usize {
        if n < 0x80 {
            1
        } else if n < 0x4000 {
            2
        } else {
            3
        }
    }
    let mut total = 1 + 64 + 3 + compact(accounts) + 32 * accounts + 32 + compact(ixs.len());
    let mut i = 0;
    while i < ixs.len() {
        let (k, d) = ixs[i];
        total += 1 + compact(k) + k + compact(d) + d;
        i += 1;
    }
    total
}

const _: () = assert!(MAX_CLIENTS.is_multiple_of(8) && MAX_CLIENTS <= u16::MAX as usize);
const _: () = assert!(MAX_WITNESSES <= 32);
const _: () = assert!(STATE_SIZE.is_multiple_of(8));
