//! Instruction arguments: Borsh encoding of fixed-size values, read in place.

use bytemuck::Pod;
use pinocchio::{error::ProgramError, ProgramResult};

use crate::error::PsycheError;

/// Reads the arguments one after another (Borsh layout of fixed-size values) and requires that
/// nothing is left over at the end, so an oversize payload is rejected.
pub struct Args<'a>(pub &'a [u8]);

impl<'a> Args<'a> {
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProgramError> {
        if self.0.len() < n {
            return Err(PsycheError::InstructionDidNotDeserialize.into());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    pub fn pod<T: Pod>(&mut self) -> Result<T, ProgramError> {
        let b = self.bytes(core::mem::size_of::<T>())?;
        bytemuck::try_pod_read_unaligned(b)
            .map_err(|_| PsycheError::InstructionDidNotDeserialize.into())
    }

    pub fn key(&mut self) -> Result<[u8; 32], ProgramError> {
        self.pod()
    }

    pub fn bool(&mut self) -> Result<bool, ProgramError> {
        match self.bytes(1)? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(PsycheError::InstructionDidNotDeserialize.into()),
        }
    }

    pub fn option<T: Pod>(&mut self) -> Result<Option<T>, ProgramError> {
        if self.bool()? {
            self.pod().map(Some)
        } else {
            Ok(None)
        }
    }

    /// A Borsh `string` (u32 length, UTF-8 bytes) of at most `max` bytes.
    pub fn string(&mut self, max: usize) -> Result<&'a [u8], ProgramError> {
        let len: u32 = self.pod()?;
        let len = len as usize;
        if len > max {
            return Err(PsycheError::InvalidAddress.into());
        }
        let bytes = self.bytes(len)?;
        core::str::from_utf8(bytes).map_err(|_| PsycheError::InvalidAddress)?;
        Ok(bytes)
    }

    pub fn end(self) -> ProgramResult {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(PsycheError::InstructionDidNotDeserialize.into())
        }
    }
}
