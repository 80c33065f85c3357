//! On-chain account layouts.
//!
//! Two accounts per run:
//! - `Run`, the run-instance PDA `[RUN_SEED, run_id]`: owner, join authority and the address of
//!   the run's coordinator account;
//! - `CoordinatorAccount`, a plain keypair account created by the client with the system
//!   program's `create_account` in the same transaction as `init_run` (64,216 bytes: more than a
//!   program may allocate through CPI), holding the run's address and `psyche_core::State`
//!   byte for byte, edited in place.

use bytemuck::{Pod, Zeroable};
use psyche_core::{layout, State};

pub use psyche_core::layout::{PEER_ADDR_BYTES, PEER_SEED, RUN_SEED};

use crate::error::PsycheError;

/// A run account: `Run::DISCRIMINATOR` then this struct, byte for byte.
///
/// `repr(C)` with no implicit padding (checked by bytemuck's derive), so its bytes are also the
/// Borsh encoding the IDL describes. Its address is the PDA `[RUN_SEED, run_id]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Run {
    /// Who may update, pause, resume and close the run.
    pub owner: [u8; 32],
    /// When not all zeros, every `join_run` must be co-signed by this key.
    pub join_authority: [u8; 32],
    /// The run's coordinator account.
    pub coordinator: [u8; 32],
    /// The run id the PDA is derived from.
    pub run_id: [u8; 32],
    /// `psyche_core::STATE_VERSION` when the run was created.
    pub state_version: u32,
    /// The PDA's canonical bump.
    pub bump: u8,
    /// Keeps the layout free of implicit padding; always zero.
    pub reserved: [u8; 3],
}

impl Run {
    /// `sha256("account:Run")[..8]`, as Anchor computes it.
    pub const DISCRIMINATOR: [u8; 8] = [199, 54, 155, 86, 235, 115, 246, 189];
    /// Size of the account's data: discriminator + fields (`layout::RUN_SPACE`).
    pub const SPACE: usize = layout::RUN_SPACE;

    /// Reads a run from account data, checking the discriminator and the exact size.
    pub fn load(data: &[u8]) -> Result<&Run, PsycheError> {
        if data.len() != Self::SPACE {
            return Err(PsycheError::AccountDidNotDeserialize);
        }
        let (tag, body) = data
            .split_first_chunk::<8>()
            .ok_or(PsycheError::AccountDidNotDeserialize)?;
        if *tag != Self::DISCRIMINATOR {
            return Err(PsycheError::AccountDiscriminatorMismatch);
        }
        bytemuck::try_from_bytes(body).map_err(|_| PsycheError::AccountDidNotDeserialize)
    }

    /// Writes the discriminator and `run` into fresh account data.
    pub fn store(data: &mut [u8], run: &Run) -> Result<(), PsycheError> {
        if data.len() != Self::SPACE {
            return Err(PsycheError::AccountDidNotDeserialize);
        }
        let (tag, body) = data
            .split_first_chunk_mut::<8>()
            .ok_or(PsycheError::AccountDidNotDeserialize)?;
        *tag = Self::DISCRIMINATOR;
        body.copy_from_slice(bytemuck::bytes_of(run));
        Ok(())
    }

    /// Mutable view (discriminator checked).
    pub fn load_mut(data: &mut [u8]) -> Result<&mut Run, PsycheError> {
        if data.len() != Self::SPACE {
            return Err(PsycheError::AccountDidNotDeserialize);
        }
        let (tag, body) = data
            .split_first_chunk_mut::<8>()
            .ok_or(PsycheError::AccountDidNotDeserialize)?;
        if *tag != Self::DISCRIMINATOR {
            return Err(PsycheError::AccountDiscriminatorMismatch);
        }
        bytemuck::try_from_bytes_mut(body).map_err(|_| PsycheError::AccountDidNotDeserialize)
    }
}

/// A client's advertised p2p endpoints: the PDA `[PEER_SEED, run, wallet]`, created by
/// `advertise` (the wallet pays its rent) and closed by `close_peer`. The node key is copied
/// from the client's slot in the run, so an entry always names the key the run registered.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Peer {
    /// The run (PDA).
    pub run: [u8; 32],
    /// The client's wallet.
    pub wallet: [u8; 32],
    /// Its node key (libp2p identity), as registered at join.
    pub node_key: [u8; 32],
    /// Unix time of the last `advertise`.
    pub updated_at: i64,
    /// Used bytes of `p2p_addr`.
    pub p2p_addr_len: u16,
    /// Used bytes of `fast_addr`.
    pub fast_addr_len: u16,
    /// The PDA's canonical bump.
    pub bump: u8,
    /// Zero.
    pub reserved: [u8; 3],
    /// libp2p multiaddr (UTF-8, zero padded).
    pub p2p_addr: [u8; PEER_ADDR_BYTES],
    /// Fast-path address (UTF-8, zero padded).
    pub fast_addr: [u8; PEER_ADDR_BYTES],
}

impl Peer {
    /// `sha256("account:Peer")[..8]`, as Anchor computes it.
    pub const DISCRIMINATOR: [u8; 8] = [50, 8, 19, 55, 40, 253, 37, 58];
    /// Size of the account's data: discriminator + fields (`layout::PEER_SPACE`).
    pub const SPACE: usize = layout::PEER_SPACE;

    /// Mutable view of a peer account's data; `fresh` accepts all-zero data (just created) and
    /// writes the discriminator.
    pub fn load_mut(data: &mut [u8], fresh: bool) -> Result<&mut Peer, PsycheError> {
        if data.len() != Self::SPACE {
            return Err(PsycheError::AccountDidNotDeserialize);
        }
        let (tag, body) = data
            .split_first_chunk_mut::<8>()
            .ok_or(PsycheError::AccountDidNotDeserialize)?;
        if fresh && *tag == [0; 8] {
            *tag = Self::DISCRIMINATOR;
        }
        if *tag != Self::DISCRIMINATOR {
            return Err(PsycheError::AccountDiscriminatorMismatch);
        }
        bytemuck::try_from_bytes_mut(body).map_err(|_| PsycheError::AccountDidNotDeserialize)
    }
}

/// Header of the coordinator account, after the discriminator and before the state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct CoordinatorHeader {
    /// The run (PDA) this coordinator belongs to.
    pub run: [u8; 32],
}

/// The coordinator account: discriminator, `CoordinatorHeader`, `psyche_core::State`.
pub struct CoordinatorAccount;

impl CoordinatorAccount {
    /// `sha256("account:CoordinatorAccount")[..8]`, as Anchor computes it.
    pub const DISCRIMINATOR: [u8; 8] = [239, 33, 177, 55, 44, 155, 86, 43];
    /// Offset of the state in the account's data (8-aligned, as `State` needs):
    /// `layout::COORDINATOR_STATE_OFFSET`.
    pub const STATE_OFFSET: usize = layout::COORDINATOR_STATE_OFFSET;
    /// Size of the account's data (`layout::COORDINATOR_SPACE`).
    pub const SPACE: usize = layout::COORDINATOR_SPACE;

    /// Splits initialized account data into header and state, checking size and discriminator
    /// (the state's version is checked by the caller against `STATE_VERSION`).
    pub fn load_mut(data: &mut [u8]) -> Result<(&mut CoordinatorHeader, &mut State), PsycheError> {
        if data.len() != Self::SPACE {
            return Err(PsycheError::AccountSize);
        }
        let (tag, rest) = data
            .split_first_chunk_mut::<8>()
            .ok_or(PsycheError::AccountSize)?;
        if *tag != Self::DISCRIMINATOR {
            return Err(PsycheError::AccountDiscriminatorMismatch);
        }
        let (header, state) = rest.split_at_mut(core::mem::size_of::<CoordinatorHeader>());
        let header: &mut CoordinatorHeader = bytemuck::try_from_bytes_mut(header)
            .map_err(|_| PsycheError::AccountDidNotDeserialize)?;
        let state =
            State::from_bytes_mut(state).map_err(|_| PsycheError::AccountDidNotDeserialize)?;
        Ok((header, state))
    }

    /// Read-only view: header and state (same checks as `load_mut`).
    pub fn load(data: &[u8]) -> Result<(&CoordinatorHeader, &State), PsycheError> {
        if data.len() != Self::SPACE {
            return Err(PsycheError::AccountSize);
        }
        let (tag, rest) = data
            .split_first_chunk::<8>()
            .ok_or(PsycheError::AccountSize)?;
        if *tag != Self::DISCRIMINATOR {
            return Err(PsycheError::AccountDiscriminatorMismatch);
        }
        let (header, state) = rest.split_at(core::mem::size_of::<CoordinatorHeader>());
        let header: &CoordinatorHeader =
            bytemuck::try_from_bytes(header).map_err(|_| PsycheError::AccountDidNotDeserialize)?;
        let state = State::from_bytes(state).map_err(|_| PsycheError::AccountDidNotDeserialize)?;
        Ok((header, state))
    }

    /// For `init_run`: requires zeroed data of the right size, writes discriminator and header,
    /// and returns the (zeroed) state for `State::init`.
    pub fn init<'a>(data: &'a mut [u8], run: &[u8; 32]) -> Result<&'a mut State, PsycheError> {
        if data.len() != Self::SPACE {
            return Err(PsycheError::AccountSize);
        }
        // The discriminator and the header must be zero: the account was just created.
        // (The state itself is re-initialized by `State::init`.)
        if data.iter().take(Self::STATE_OFFSET).any(|&b| b != 0) {
            return Err(PsycheError::AccountNotZeroed);
        }
        let (tag, rest) = data
            .split_first_chunk_mut::<8>()
            .ok_or(PsycheError::AccountSize)?;
        *tag = Self::DISCRIMINATOR;
        let (header, state) = rest.split_at_mut(core::mem::size_of::<CoordinatorHeader>());
        header.copy_from_slice(run);
        State::from_bytes_mut(state).map_err(|_| PsycheError::AccountDidNotDeserialize)
    }
}

// The shared layout constants are these structs' sizes: a field change that forgets
// `psyche_core::layout` does not build.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(layout::DISCRIMINATOR_BYTES + size_of::<Run>() == layout::RUN_SPACE);
    assert!(layout::DISCRIMINATOR_BYTES + size_of::<Peer>() == layout::PEER_SPACE);
    assert!(layout::DISCRIMINATOR_BYTES + offset_of!(Peer, run) == layout::PEER_RUN_OFFSET);
    assert!(
        layout::DISCRIMINATOR_BYTES + offset_of!(CoordinatorHeader, run)
            == layout::COORDINATOR_RUN_OFFSET
    );
    assert!(
        layout::DISCRIMINATOR_BYTES + size_of::<CoordinatorHeader>()
            == layout::COORDINATOR_STATE_OFFSET
    );
    assert!(
        layout::COORDINATOR_STATE_OFFSET + psyche_core::STATE_SIZE == layout::COORDINATOR_SPACE
    );
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_fixed() {
        assert_eq!(core::mem::size_of::<Run>(), 136);
        assert_eq!(Run::SPACE, 144);
        assert_eq!(core::mem::offset_of!(Run, coordinator), 64);
        assert_eq!(core::mem::offset_of!(Run, state_version), 128);
        assert_eq!(CoordinatorAccount::STATE_OFFSET, 40);
        assert_eq!(CoordinatorAccount::SPACE, 64_216);
        assert_eq!(core::mem::size_of::<Peer>(), 368);
        assert_eq!(Peer::SPACE, 376);
    }

    #[test]
    fn load_checks_discriminator_and_length() {
        let mut data = [0u64; 18];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut data);
        assert_eq!(
            Run::load(bytes),
            Err(PsycheError::AccountDiscriminatorMismatch)
        );
        bytes[..8].copy_from_slice(&Run::DISCRIMINATOR);
        bytes[8 + 128] = 5;
        assert_eq!(Run::load(bytes).map(|r| r.state_version), Ok(5));
        assert_eq!(
            Run::load(&bytes[..40]),
            Err(PsycheError::AccountDidNotDeserialize)
        );
        assert_eq!(Run::load(&[]), Err(PsycheError::AccountDidNotDeserialize));
    }

    #[test]
    fn coordinator_checks_size_discriminator_and_zeroes() {
        let mut words = std::vec![0u64; CoordinatorAccount::SPACE / 8];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        assert_eq!(
            CoordinatorAccount::load_mut(bytes).err(),
            Some(PsycheError::AccountDiscriminatorMismatch)
        );
        assert_eq!(
            CoordinatorAccount::load_mut(&mut bytes[..100]).err(),
            Some(PsycheError::AccountSize)
        );
        assert!(CoordinatorAccount::init(bytes, &[3; 32]).is_ok());
        assert_eq!(
            CoordinatorAccount::init(bytes, &[3; 32]).err(),
            Some(PsycheError::AccountNotZeroed)
        );
        let (header, _) = CoordinatorAccount::load_mut(bytes).unwrap();
        assert_eq!(header.run, [3; 32]);
    }
}
