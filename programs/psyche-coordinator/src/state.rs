//! On-chain account layouts.

use bytemuck::{Pod, Zeroable};

use crate::error::PsycheError;

/// A run account: `Run::DISCRIMINATOR` then this struct, byte for byte.
///
/// `repr(C)` with no implicit padding (checked by bytemuck's derive), so its bytes are also the
/// Borsh encoding the IDL describes. Its address is the PDA `[RUN_SEED, run_id]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Run {
    /// Who may change the run.
    pub authority: [u8; 32],
    /// The run id the PDA is derived from.
    pub run_id: [u8; 32],
    /// Incremented by `bump`.
    pub counter: u64,
    /// `psyche_core::STATE_VERSION` when the run was created.
    pub state_version: u32,
    /// 1 when paused, else 0 (a Borsh `bool`).
    pub paused: u8,
    /// The PDA's canonical bump.
    pub bump: u8,
    /// Keeps the layout free of implicit padding; always zero.
    pub reserved: [u8; 2],
}

/// Seed prefix of run PDAs: `[RUN_SEED, run_id]`.
pub const RUN_SEED: &[u8] = b"run";

impl Run {
    /// `sha256("account:Run")[..8]`, as Anchor computes it.
    pub const DISCRIMINATOR: [u8; 8] = [199, 54, 155, 86, 235, 115, 246, 189];
    /// Size of the account's data: discriminator + fields.
    pub const SPACE: usize = 8 + core::mem::size_of::<Run>();

    /// Reads a run from account data, checking the discriminator.
    pub fn load(data: &[u8]) -> Result<&Run, PsycheError> {
        let body = Self::body(data)?;
        bytemuck::try_from_bytes(body).map_err(|_| PsycheError::AccountDidNotDeserialize)
    }

    /// Borrows a run mutably from account data, checking the discriminator.
    pub fn load_mut(data: &mut [u8]) -> Result<&mut Run, PsycheError> {
        let (tag, body) = data
            .split_first_chunk_mut::<8>()
            .ok_or(PsycheError::AccountDidNotDeserialize)?;
        if *tag != Self::DISCRIMINATOR {
            return Err(PsycheError::AccountDiscriminatorMismatch);
        }
        let body = body
            .get_mut(..core::mem::size_of::<Run>())
            .ok_or(PsycheError::AccountDidNotDeserialize)?;
        bytemuck::try_from_bytes_mut(body).map_err(|_| PsycheError::AccountDidNotDeserialize)
    }

    fn body(data: &[u8]) -> Result<&[u8], PsycheError> {
        let (tag, body) = data
            .split_first_chunk::<8>()
            .ok_or(PsycheError::AccountDidNotDeserialize)?;
        if *tag != Self::DISCRIMINATOR {
            return Err(PsycheError::AccountDiscriminatorMismatch);
        }
        body.get(..core::mem::size_of::<Run>())
            .ok_or(PsycheError::AccountDidNotDeserialize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_fixed() {
        assert_eq!(core::mem::size_of::<Run>(), 80);
        assert_eq!(Run::SPACE, 88);
        assert_eq!(core::mem::offset_of!(Run, counter), 64);
        assert_eq!(core::mem::offset_of!(Run, state_version), 72);
        assert_eq!(core::mem::offset_of!(Run, paused), 76);
        assert_eq!(core::mem::offset_of!(Run, bump), 77);
    }

    #[test]
    fn load_checks_discriminator_and_length() {
        let mut data = [0u64; 11];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut data);
        assert_eq!(
            Run::load(bytes),
            Err(PsycheError::AccountDiscriminatorMismatch)
        );
        bytes[..8].copy_from_slice(&Run::DISCRIMINATOR);
        bytes[8 + 64] = 5;
        assert_eq!(Run::load(bytes).map(|r| r.counter), Ok(5));
        assert_eq!(
            Run::load(&bytes[..40]),
            Err(PsycheError::AccountDidNotDeserialize)
        );
        assert_eq!(Run::load(&[]), Err(PsycheError::AccountDidNotDeserialize));
    }
}
