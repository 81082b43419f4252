//! The fixed virtual addresses the oracle maps, shared by the host runner
//! and the interpreter's guest so that both see the very same addresses.
//!
//! All regions sit below 2 GiB so that the trampoline can address them with
//! absolute 32-bit displacements, and above Linux's default
//! `vm.mmap_min_addr` (64 KiB).

/// Start of the code region: the trampoline stubs, then the snippet.
pub const CODE_BASE: u64 = 0x0010_0000;
/// Size of the code region.
pub const CODE_SIZE: usize = 0x1_0000;
/// Where the entry stub lives (the host calls this address).
pub const ENTRY_ADDR: u64 = CODE_BASE;
/// Where the exit stub lives (the snippet's epilogue jumps here).
pub const EXIT_ADDR: u64 = CODE_BASE + 0x400;
/// Where the signal handler resumes a faulted snippet.
pub const RECOVERY_ADDR: u64 = CODE_BASE + 0x800;
/// Where the snippet's first instruction is placed.
pub const SNIPPET_ADDR: u64 = CODE_BASE + 0x1000;
/// Bytes reserved after the snippet for its epilogue (`jmp EXIT_ADDR`).
pub const EPILOGUE_SIZE: usize = 16;
/// The longest snippet the code region holds.
pub const MAX_SNIPPET_LEN: usize = CODE_SIZE - (SNIPPET_ADDR - CODE_BASE) as usize - EPILOGUE_SIZE;

/// Start of the data region: everything a snippet may read or write,
/// including its stack.
pub const DATA_BASE: u64 = 0x0020_0000;
/// Size of the data region.
pub const DATA_SIZE: usize = 0x1_0000;
/// Initial RSP of generated states: 4 KiB below the end of the data
/// region, so a snippet may pop a little more than it pushed.
pub const STACK_TOP: u64 = DATA_BASE + 0xF000;

/// Generated memory operands stay within `[DATA_BASE, DATA_BASE + 0x1800)`.
pub const OPERAND_AREA: (u64, u64) = (DATA_BASE, DATA_BASE + 0x1800);
/// Generated string instructions start with RSI/RDI inside this window and
/// move at most 128 bytes either way.
pub const STRING_AREA: (u64, u64) = (DATA_BASE + 0x2000, DATA_BASE + 0x3000);

/// Start of the control block (host-only: saved host RSP/MXCSR, input and
/// output states, the fault record). The interpreter's guest needs no
/// mapping here.
pub const CONTROL_BASE: u64 = 0x0030_0000;
/// Size of the control region.
pub const CONTROL_SIZE: usize = 0x1000;

/// Whether `address` lies in the code region.
pub fn in_code_region(address: u64) -> bool {
    (CODE_BASE..CODE_BASE + CODE_SIZE as u64).contains(&address)
}

/// Whether `address` lies in the data region.
pub fn in_data_region(address: u64) -> bool {
    (DATA_BASE..DATA_BASE + DATA_SIZE as u64).contains(&address)
}
