//! The Psyche coordinator core. See docs/protocol.md.
#![no_std]

/// Layout version of the coordinator state.
pub const STATE_VERSION: u32 = 1;
