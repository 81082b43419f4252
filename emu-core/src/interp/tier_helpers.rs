//! The helpers native code calls (by address, through [`HELPERS`]): each
//! runs the interpreter's own code path for what translated code leaves
//! to it, and records or returns an [`exit`] code (see the `tier` module's
//! documentation).

use super::decode::Block;
use super::fault::Fault;
use super::tier::{exit, JitFrame};

/// The helpers native code calls, by address.
#[derive(Clone, Copy, Debug)]
pub struct Helpers {
    /// `fallback(frame, index)`: runs instruction `index` of the block.
    pub fallback: unsafe extern "C" fn(*mut JitFrame, u32) -> u32,
    /// `read(frame, segment, offset, size)`: the value; the status goes to
    /// `JitFrame::status`.
    pub read: unsafe extern "C" fn(*mut JitFrame, u32, u64, u32) -> u64,
    /// `write(frame, segment, offset, size, value)`: the status.
    pub write: unsafe extern "C" fn(*mut JitFrame, u32, u64, u32, u64) -> u32,
    /// `flags(frame)`: materialises the arithmetic flags, returns RFLAGS.
    pub flags: unsafe extern "C" fn(*mut JitFrame) -> u64,
    /// `carry(frame)`: CF (0 or 1), without materialising.
    pub carry: unsafe extern "C" fn(*mut JitFrame) -> u64,
    /// `rdtsc(frame)`: the TSC as RDTSC reads it; the status goes to
    /// `JitFrame::status`.
    pub rdtsc: unsafe extern "C" fn(*mut JitFrame) -> u64,
    /// `div128(high, low, divisor)`: the quotient of the 128-bit
    /// `high:low` by `divisor`, for a DIV whose quotient fits (the caller
    /// checked `high < divisor`).
    pub div128: extern "C" fn(u64, u64, u64) -> u64,
}

/// The helpers of this interpreter.
pub const HELPERS: Helpers = Helpers { fallback: jit_fallback, read: jit_read, write: jit_write, flags: jit_flags, carry: jit_carry, rdtsc: jit_rdtsc, div128: jit_div128 };

/// Runs instruction `index` of the frame's block with its interpreter
/// handler. Native code has written back every register, the flags and RIP
/// before the call, and reloads them after.
///
/// # Safety
/// `frame` must be the live frame of a running native block, with
/// `index` within its block.
pub unsafe extern "C" fn jit_fallback(frame: *mut JitFrame, index: u32) -> u32 {
    // SAFETY: the caller passes its live frame; the interpreter and block
    // pointers in it are valid for the duration of the native call, and no
    // other reference to the interpreter is in use while native code runs.
    // Both are read before the interpreter (which holds the frame) is
    // borrowed.
    let (cpu, block) = unsafe {
        let (interp, block) = ((*frame).interp, (*frame).block.cast::<Block>());
        (&mut *interp, &*block)
    };
    let entries = block.region.get().map_or(&block.entries, |r| &r.entries);
    let Some((handler, ins)) = entries.get(index as usize) else {
        cpu.jit_fault = Some(Fault::stop(crate::control::StopReason::Error("jit: fallback out of its block".into())));
        return exit::FAULT;
    };
    if let Some(tier) = &mut cpu.tier {
        tier.fallbacks += 1;
        if let Some(n) = tier.fallback_by_mnemonic.get_mut(ins.mnemonic() as usize) {
            *n += 1;
        }
    }
    let generation = cpu.code.generation;
    let fallthrough = ins.next_ip();
    cpu.next_rip = fallthrough;
    match handler(cpu, ins) {
        Err(e) => {
            cpu.jit_fault = Some(e);
            exit::FAULT
        }
        Ok(()) => {
            cpu.s.rip = cpu.next_rip;
            if cpu.next_rip != fallthrough || cpu.code.generation != generation || cpu.s.halted {
                exit::END_BLOCK
            } else {
                exit::CONTINUE
            }
        }
    }
}

/// `read_mem(segment, offset, size)` for native code.
///
/// # Safety
/// `frame` must be the live frame of a running native block.
pub unsafe extern "C" fn jit_read(frame: *mut JitFrame, segment: u32, offset: u64, size: u32) -> u64 {
    // SAFETY: as in `jit_fallback`; the frame is the interpreter's own and
    // is reached through it from here on.
    let cpu = unsafe { &mut *(*frame).interp };
    match cpu.read_mem((segment as usize).min(5), offset, (size as usize).clamp(1, 8)) {
        Ok(v) => {
            cpu.frame.status = exit::CONTINUE;
            v
        }
        Err(e) => {
            cpu.jit_fault = Some(e);
            cpu.frame.status = exit::FAULT;
            0
        }
    }
}

/// `write_mem(segment, offset, size, value)` for native code: CONTINUE
/// once written; INTERPRET, without writing, when the write would drop
/// cached code (dropped now, as the write would have) or reach MMIO or ROM;
/// FAULT with the exception stashed.
///
/// # Safety
/// `frame` must be the live frame of a running native block.
pub unsafe extern "C" fn jit_write(frame: *mut JitFrame, segment: u32, offset: u64, size: u32, value: u64) -> u32 {
    // SAFETY: as in `jit_fallback`.
    let cpu = unsafe { &mut *(*frame).interp };
    let (segment, size) = ((segment as usize).min(5), (size as usize).clamp(1, 8));
    let generation = cpu.code.generation;
    let result = match cpu.prepare_write(segment, offset, size) {
        Ok(true) if cpu.code.generation == generation => cpu.write_mem(segment, offset, size, value).map(|()| exit::CONTINUE),
        Ok(_) => Ok(exit::INTERPRET),
        Err(e) => Err(e),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            cpu.jit_fault = Some(e);
            exit::FAULT
        }
    }
}

/// Materialises the arithmetic flags and returns RFLAGS.
///
/// # Safety
/// `frame` must be the live frame of a running native block.
pub unsafe extern "C" fn jit_flags(frame: *mut JitFrame) -> u64 {
    // SAFETY: the frame's state pointer is valid while native code runs.
    let s = unsafe { &mut *(*frame).state };
    s.materialize_flags();
    s.rflags
}

/// CF of the flags in the state (lazy or not), as 0 or 1.
///
/// # Safety
/// `frame` must be the live frame of a running native block.
pub unsafe extern "C" fn jit_carry(frame: *mut JitFrame) -> u64 {
    // SAFETY: the frame's state pointer is valid while native code runs.
    let s = unsafe { &*(*frame).state };
    let cf = if s.lazy.op == crate::cpu::FlagsOp::Materialized { s.rflags & 1 != 0 } else { s.lazy.cf() };
    u64::from(cf)
}

/// A 64-bit DIV's quotient for native code, whose dividend needs RDX
/// (Cranelift divides 64 bits by 64): `high:low / divisor`. Native code
/// calls it only when the quotient fits (`high < divisor`, so the divisor
/// is not zero); anything else answers all ones rather than panicking.
pub extern "C" fn jit_div128(high: u64, low: u64, divisor: u64) -> u64 {
    let dividend = u128::from(high) << 64 | u128::from(low);
    dividend.checked_div(u128::from(divisor)).and_then(|q| u64::try_from(q).ok()).unwrap_or(u64::MAX)
}

/// RDTSC for native code: the TSC, or #GP (stashed, status FAULT) where
/// CR4.TSD forbids it, as the interpreter's `rdtsc`.
///
/// # Safety
/// `frame` must be the live frame of a running native block.
pub unsafe extern "C" fn jit_rdtsc(frame: *mut JitFrame) -> u64 {
    // SAFETY: as in `jit_read`.
    let cpu = unsafe { &mut *(*frame).interp };
    if cpu.s.cr4 & 0x4 != 0 && cpu.s.cpl() != 0 && cpu.protected_mode() {
        cpu.jit_fault = Some(Fault::gp0());
        cpu.frame.status = exit::FAULT;
        return 0;
    }
    cpu.frame.status = exit::CONTINUE;
    cpu.tsc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn div128_divides_wide_dividends_and_never_panics() {
        assert_eq!(jit_div128(0, 100, 7), 14);
        assert_eq!(jit_div128(0x7f, 3, 0x80), ((0x7fu128 << 64 | 3) / 0x80) as u64);
        assert_eq!(jit_div128(u64::MAX - 1, u64::MAX, u64::MAX), u64::MAX);
        // Outside the contract (zero divisor, quotient too wide): all ones.
        assert_eq!(jit_div128(0, 1, 0), u64::MAX);
        assert_eq!(jit_div128(5, 0, 5), u64::MAX);
    }
}
