//! The one account loader: each instruction declares what it requires of its accounts (signer,
//! writable, owned by this program, data size, fixed address) as a `const` list of `Spec`s, and
//! `load` checks them all and hands back the accounts by position.
//!
//! Checks run kind by kind over the declared accounts (every signer, then every writable, every
//! owner, every size, every address), so each violation returns the Anchor error code its
//! constraint has in Anchor. What depends on arguments or account contents (PDA seeds,
//! discriminators, has-one links) is checked by the handler after `load`.

use pinocchio::{error::ProgramError, AccountView, Address};

use crate::{error::PsycheError, ID};

/// The system program's address (all zeros).
pub const SYSTEM_PROGRAM_ID: Address = Address::new_from_array([0; 32]);

/// The SlotHashes sysvar's address (`SysvarS1otHashes111111111111111111111111111`).
pub const SLOT_HASHES_ID: Address = pinocchio::sysvars::slot_hashes::SLOTHASHES_ID;

/// What one instruction account must be. Built with the `const` methods, e.g.
/// `Spec::ANY.signer().writable()`.
pub struct Spec {
    signer: bool,
    writable: bool,
    owned: bool,
    /// Exact data length (`AccountSize` otherwise), if any.
    size: Option<usize>,
    /// Exact address and the error for another one, if any.
    address: Option<(Address, PsycheError)>,
}

impl Spec {
    /// No requirement.
    pub const ANY: Spec = Spec {
        signer: false,
        writable: false,
        owned: false,
        size: None,
        address: None,
    };
    /// The SlotHashes sysvar (`AccountSysvarMismatch` otherwise).
    pub const SLOT_HASHES: Spec =
        Spec::ANY.address(SLOT_HASHES_ID, PsycheError::AccountSysvarMismatch);
    /// The system program (`InvalidProgramId` otherwise).
    pub const SYSTEM_PROGRAM: Spec =
        Spec::ANY.address(SYSTEM_PROGRAM_ID, PsycheError::InvalidProgramId);

    /// Must sign (`AccountNotSigner`).
    pub const fn signer(self) -> Spec {
        Spec {
            signer: true,
            ..self
        }
    }

    /// Must be writable (`ConstraintMut`).
    pub const fn writable(self) -> Spec {
        Spec {
            writable: true,
            ..self
        }
    }

    /// Must be owned by this program (`AccountOwnedByWrongProgram`).
    pub const fn owned(self) -> Spec {
        Spec {
            owned: true,
            ..self
        }
    }

    /// Must hold exactly `len` bytes of data (`AccountSize`).
    pub const fn size(self, len: usize) -> Spec {
        Spec {
            size: Some(len),
            ..self
        }
    }

    /// Must be at `address` (`err` otherwise).
    pub const fn address(self, address: Address, err: PsycheError) -> Spec {
        Spec {
            address: Some((address, err)),
            ..self
        }
    }
}

/// Checks the first `N` accounts against `specs` and returns them (extra accounts are ignored,
/// as Anchor does; fewer is `AccountNotEnoughKeys`).
#[inline(always)]
pub fn load<'a, const N: usize>(
    accounts: &'a mut [AccountView],
    specs: &[Spec; N],
) -> Result<&'a mut [AccountView; N], ProgramError> {
    let accounts: &mut [AccountView; N] = accounts
        .get_mut(..N)
        .and_then(|a| a.try_into().ok())
        .ok_or(PsycheError::AccountNotEnoughKeys)?;
    let pairs = || accounts.iter().zip(specs.iter());
    if pairs().any(|(a, s)| s.signer && !a.is_signer()) {
        return Err(PsycheError::AccountNotSigner.into());
    }
    if pairs().any(|(a, s)| s.writable && !a.is_writable()) {
        return Err(PsycheError::ConstraintMut.into());
    }
    if pairs().any(|(a, s)| s.owned && !a.owned_by(&ID)) {
        return Err(PsycheError::AccountOwnedByWrongProgram.into());
    }
    if pairs().any(|(a, s)| s.size.is_some_and(|len| a.data_len() != len)) {
        return Err(PsycheError::AccountSize.into());
    }
    for (a, s) in pairs() {
        if let Some((address, err)) = &s.address {
            if a.address() != address {
                return Err((*err).into());
            }
        }
    }
    Ok(accounts)
}

/// An account that must be at a PDA derived from the arguments (`ConstraintSeeds`).
pub fn require_address(account: &AccountView, expected: &Address) -> Result<(), ProgramError> {
    if account.address() == expected {
        Ok(())
    } else {
        Err(PsycheError::ConstraintSeeds.into())
    }
}
