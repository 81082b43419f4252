//! popek's dynamic binary translator: guest basic blocks translated to host
//! code with Cranelift, over the same `emu_core::CpuState` and soft TLB as
//! the interpreter.
//!
//! Not implemented yet: `popek run --accel jit` answers so. The design it
//! will follow is in ARCHITECTURE.md.

/// Why the JIT cannot run a guest yet.
pub const NOT_IMPLEMENTED: &str = "the jit backend";
