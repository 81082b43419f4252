//! The user-visible register state that the oracle loads, runs and
//! captures, and the RFLAGS bits it exchanges.

pub use emu_core::cpu::flags;
pub use emu_core::cpu::reg;

/// RFLAGS bits a snippet may observe from its input and that the oracle
/// reports back: the six arithmetic flags and DF. Everything else (TF, IF,
/// AC, ...) stays as the host needs it.
pub const USER_FLAGS: u64 = flags::ARITH | flags::DF;

/// MXCSR bits the oracle lets a state carry (MXCSR_MASK of every x86-64 CPU
/// covers at least these); loading anything else would #GP.
pub const MXCSR_VALID: u32 = 0xFFFF;
/// The six SIMD exception mask bits; always forced on so that no SSE
/// instruction raises an unmasked #XM.
pub const MXCSR_EXCEPTION_MASKS: u32 = 0x1F80;
/// MXCSR after reset.
pub const MXCSR_DEFAULT: u32 = 0x1F80;

/// Names of the general-purpose registers in encoding order.
pub const GPR_NAMES: [&str; 16] =
    ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

/// Names of the arithmetic flags and DF, with their bits.
pub const USER_FLAG_NAMES: [(&str, u64); 7] = [
    ("CF", flags::CF),
    ("PF", flags::PF),
    ("AF", flags::AF),
    ("ZF", flags::ZF),
    ("SF", flags::SF),
    ("DF", flags::DF),
    ("OF", flags::OF),
];

/// The state a snippet starts from and ends in.
///
/// The layout is fixed (`repr(C)`) because the trampoline reads and writes
/// it at absolute addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserState {
    /// RAX..R15 in encoding order (see [`reg`]).
    pub gpr: [u64; 16],
    /// RFLAGS; only [`USER_FLAGS`] (and the fixed bit 1) are meaningful.
    pub rflags: u64,
    /// XMM0..XMM15.
    pub xmm: [u128; 16],
    /// MXCSR.
    pub mxcsr: u32,
}

impl UserState {
    /// The RFLAGS value actually loaded for this state: the user flags from
    /// `rflags`, bit 1, and IF (which user code cannot change anyway, and
    /// which PUSHF therefore stores as 1).
    pub fn loadable_rflags(&self) -> u64 {
        (self.rflags & USER_FLAGS) | flags::FIXED | flags::IF
    }

    /// The MXCSR value actually loaded for this state: valid bits only, all
    /// exceptions masked.
    pub fn loadable_mxcsr(&self) -> u32 {
        (self.mxcsr & MXCSR_VALID) | MXCSR_EXCEPTION_MASKS
    }

    /// This state as the oracle loads it (see [`Self::loadable_rflags`] and
    /// [`Self::loadable_mxcsr`]), which is also the form in which it
    /// reports final states.
    pub fn normalized(&self) -> Self {
        Self { rflags: (self.rflags & USER_FLAGS) | flags::FIXED, mxcsr: self.loadable_mxcsr(), ..*self }
    }
}
