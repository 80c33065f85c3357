//! The SBF entrypoint, allocator and panic handler.
//!
//! The crate and all its dependencies are `no_std`, so this uses pinocchio's
//! `program_entrypoint!` + `nostd_panic_handler!` (not `entrypoint!`, which expects std's panic
//! handler). The account array holds at most 16 entries: no instruction takes more, and a small
//! array keeps the entrypoint's frame well inside the 4 KiB SBF stack frame.

pinocchio::program_entrypoint!(crate::process_instruction, 16);
pinocchio::default_allocator!();
pinocchio::nostd_panic_handler!();
