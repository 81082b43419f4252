//! popek: a full-system x86 PC emulator and virtual machine monitor.
//!
//! This crate assembles the PC machine from the workspace's parts: guest
//! memory and buses (`emu-core`), devices (`devices`), the CPU backends
//! (`accel-kvm`, and later `interp` and `jit`), and the firmware and kernel
//! [`loader`]s; `main.rs` is the command line.

pub mod acpi;
pub mod cli;
pub mod console;
pub mod error;
pub mod loader;
pub mod machine;

pub use error::{Error, Result};
