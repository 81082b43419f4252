//! popek's host-CPU oracle for differential testing of the software CPU.
//!
//! The oracle runs the same user-level x86-64 instruction snippet natively
//! on the host CPU, in-process, that the interpreter runs in its guest, so
//! that the two final states can be compared:
//!
//! * [`gen::Generator`] produces random snippets (from a whitelist of
//!   deterministic user-level instructions), initial states and data;
//! * [`NativeRunner`] runs a snippet on the host at fixed addresses
//!   ([`layout`]) and returns an [`Outcome`]: the final [`UserState`] and
//!   data region, or the fault it raised;
//! * [`flags`] says which RFLAGS bits a snippet leaves undefined;
//! * [`compare`] diffs two final states, ignoring undefined flags;
//! * [`guest`] runs a case in `emu_core::interp::Interpreter` (a 64-bit
//!   guest with the same addresses) and [`guest::differential`] checks it
//!   against the host; `tests/interp_vs_host.rs` drives it.
//!
//! The crate only builds for x86-64 Linux.

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!("the oracle runs snippets natively and needs x86-64 Linux");

pub mod compare;
pub mod flags;
pub mod gen;
pub mod guest;
pub mod layout;
pub mod native;
mod rng;
pub mod state;

pub use compare::{compare, compare_data, Difference, Mismatch};
pub use flags::{undefined_flags, FlagTracker};
pub use gen::{GenConfig, Generator, Snippet, TestCase};
pub use native::{Exception, Fault, NativeRunner, Outcome};
pub use rng::Rng;
pub use state::UserState;

/// Errors of the oracle itself (a snippet's fault is not one: it is an
/// [`Outcome::Fault`]).
#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    /// A fixed region could not be mapped.
    #[error("cannot map the oracle region at {address:#x}")]
    Map {
        address: u64,
        #[source]
        source: std::io::Error,
    },
    /// A fixed region's address is taken (the kernel ignored
    /// MAP_FIXED_NOREPLACE and mapped elsewhere).
    #[error("the oracle region at {address:#x} is already in use")]
    AddressInUse { address: u64 },
    /// mprotect failed.
    #[error("cannot change the code region's protection")]
    Protect(#[source] std::io::Error),
    /// Installing signal handlers, the signal mask or the alternate signal
    /// stack failed.
    #[error("cannot set up signal handling")]
    Signals(#[source] std::io::Error),
    /// The snippet does not fit in the code region.
    #[error("snippet of {len} bytes exceeds the {max}-byte limit")]
    SnippetTooLarge { len: usize, max: usize },
    /// The data does not fit in the data region.
    #[error("{len} bytes of data exceed the {max}-byte data region")]
    DataTooLarge { len: usize, max: usize },
    /// Assembling, encoding or decoding failed.
    #[error("x86 encoding error: {0}")]
    Encoding(#[from] iced_x86::IcedError),
    /// Bytes that are not a valid 64-bit instruction sequence.
    #[error("invalid instruction at snippet offset {offset:#x}")]
    InvalidInstruction { offset: u64 },
    /// [`NativeRunner::run_completed`] saw a fault.
    #[error("the snippet faulted: {0}")]
    Faulted(Box<Fault>),
    /// A bug in the oracle.
    #[error("oracle bug: {0}")]
    Internal(&'static str),
}
