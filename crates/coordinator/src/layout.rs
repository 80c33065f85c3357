//! Where the Solana program keeps a run, defined once for the program, the bindings
//! (`psyche_client._core`), the SDK and the IDL generator: the program id, PDA seeds, account
//! sizes, the byte offsets clients read, and the error bases.
//!
//! The program's account structs (programs/psyche-coordinator/src/state.rs) assert at compile
//! time that their sizes are these, so a layout change that forgets this file does not build.

use crate::STATE_SIZE;

/// The coordinator program's address (base58; the public key of
/// localnet/psyche_coordinator-keypair.json).
pub const PROGRAM_ID: &str = "FUpMU31XoAdktVVD1HoKfbQer7cpGkpZgXpGMZVgr5WP";

/// Bytes of an Anchor discriminator (`sha256("account:<Name>")[..8]`), first in every account.
pub const DISCRIMINATOR_BYTES: usize = 8;

/// Seed prefix of run PDAs: `[RUN_SEED, run_id]`.
pub const RUN_SEED: &[u8] = b"run";
/// Seed prefix of peer PDAs: `[PEER_SEED, run, wallet]`.
pub const PEER_SEED: &[u8] = b"peer";

/// Run PDA data: discriminator, owner, join authority, coordinator, run id (32 each), state
/// version (u32), bump (u8), 3 reserved bytes.
pub const RUN_SPACE: usize = DISCRIMINATOR_BYTES + 4 * 32 + 4 + 1 + 3;

/// Bytes for each advertised address in a peer PDA.
pub const PEER_ADDR_BYTES: usize = 128;
/// Offset of the run address in a peer PDA's data (what clients filter peers of a run on).
pub const PEER_RUN_OFFSET: usize = DISCRIMINATOR_BYTES;
/// Peer PDA data: discriminator, run, wallet, node key (32 each), update time (i64), two
/// address lengths (u16), bump (u8), 3 reserved bytes, two addresses.
pub const PEER_SPACE: usize =
    DISCRIMINATOR_BYTES + 3 * 32 + 8 + 2 + 2 + 1 + 3 + 2 * PEER_ADDR_BYTES;

/// Offset of the run address in the coordinator account's data.
pub const COORDINATOR_RUN_OFFSET: usize = DISCRIMINATOR_BYTES;
/// Offset of the core state in the coordinator account's data (8-aligned, as `State` needs).
pub const COORDINATOR_STATE_OFFSET: usize = COORDINATOR_RUN_OFFSET + 32;
/// Coordinator account data: discriminator, run address, `State` byte for byte.
pub const COORDINATOR_SPACE: usize = COORDINATOR_STATE_OFFSET + STATE_SIZE;

/// Custom error code of a core error: `CORE_ERROR_BASE + CoreError::code()`.
pub const CORE_ERROR_BASE: u32 = 6000;
/// First of the program's own error codes (after the core's, which stay below it).
pub const PROGRAM_ERROR_BASE: u32 = 6300;

const _: () = assert!(COORDINATOR_STATE_OFFSET.is_multiple_of(8));
const _: () = assert!(RUN_SPACE == 144 && PEER_SPACE == 376 && COORDINATOR_STATE_OFFSET == 40);
