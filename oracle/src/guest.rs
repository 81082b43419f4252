//! The interpreter side of the differential test (placeholder).
//!
//! The comparison test builds a 64-bit flat guest for
//! `emu_core::interp::Interpreter` in which the oracle's regions sit at the
//! same virtual addresses as on the host ([`crate::layout`]):
//!
//! * guest memory: identity-mapped 4-level page tables (user, writable)
//!   covering at least `CODE_BASE..CODE_BASE+CODE_SIZE` (snippet bytes at
//!   `SNIPPET_ADDR`) and `DATA_BASE..DATA_BASE+DATA_SIZE` (the case's data;
//!   the stack lives at its top, RSP = `STACK_TOP`). The control block is
//!   host-only and needs no guest mapping. Pages outside these regions
//!   should be absent so that a stray access faults as it does on the host.
//! * `CpuState`: long mode (CR0.PE|PG, CR4.PAE|OSFXSR|OSXMMEXCPT, EFER.LME|
//!   LMA), a 64-bit code segment, flat data segments, CPL 3 to match the
//!   host (CPL 0 works too for these instructions), RIP = `SNIPPET_ADDR`.
//! * registers, one to one: `UserState::gpr[i]` -> `CpuState::gpr[i]`
//!   (same encoding order), `UserState::xmm` -> `CpuState::fx.xmm`,
//!   [`crate::UserState::loadable_mxcsr`] -> `CpuState::fx.mxcsr`, and
//!   [`crate::UserState::loadable_rflags`] -> `CpuState::set_flags` (it
//!   includes IF=1 because the host's PUSHF stores IF=1; IOPL, TF, AC, NT
//!   stay 0).
//! * running: step until RIP = `SNIPPET_ADDR + snippet.bytes.len()` (the
//!   host's epilogue address) or an exception; before each step feed the
//!   instruction and the current RCX to a [`crate::FlagTracker`] for the
//!   tightest undefined-flags mask.
//! * back: `CpuState::flags()` masked with [`crate::state::USER_FLAGS`] |
//!   bit 1 -> `UserState::rflags`, `gpr`, `fx.xmm`, `fx.mxcsr` as above;
//!   then [`crate::compare`] and [`crate::compare_data`] against the
//!   host's [`crate::Outcome`]. A host [`crate::Fault`] must be matched by
//!   the same exception vector at the same RIP, with the state before the
//!   faulting instruction in `Fault::state`.
//!
//! This module stays free of any dependency on the interpreter until that
//! builds.
