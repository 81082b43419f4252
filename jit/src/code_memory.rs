//! Memory for translated code: one mapping per code generation, written
//! and run in place.
//!
//! cranelift-jit's own provider maps every finalised function anew and
//! makes it executable with `mprotect`: a Linux boot finalises about 2,600
//! regions, so that was 2,600 mappings of at least a page each (iTLB and
//! cache misses between chained regions), 2,600 `mprotect`s, and as many
//! TLB-shootdown interrupts of the vCPU thread, which runs the same
//! address space on the other core (13% of the compiler thread's time).
//! [`CodeArena`] reserves one readable, writable and executable mapping
//! for the whole generation and hands out its bytes in order, as QEMU's
//! TCG does with its code buffer (RWX unless `split-wx` is asked for).
//! x86 keeps instruction fetch coherent with stores, so finalising is a
//! no-op; a new block's address reaches the vCPU thread through a channel,
//! after its bytes are written.

use std::io;
use std::ptr::NonNull;

use cranelift_jit::{BranchProtection, JITMemoryKind, JITMemoryProvider};
use cranelift_module::ModuleResult;

/// A bump allocator over one anonymous RWX mapping of fixed size.
pub(crate) struct CodeArena {
    base: NonNull<u8>,
    len: usize,
    used: usize,
}

// SAFETY: the arena owns its mapping; the translator that holds it moves
// between threads but is used by one at a time.
unsafe impl Send for CodeArena {}

impl CodeArena {
    /// Reserves `len` bytes (pages are committed as code is written).
    pub(crate) fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping at an address of the kernel's
        // choosing; nothing else is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, len, used: 0 })
    }

    /// Bytes handed out so far.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used
    }
}

impl JITMemoryProvider for CodeArena {
    fn allocate(&mut self, size: usize, align: u64, _kind: JITMemoryKind) -> io::Result<*mut u8> {
        let align = usize::try_from(align).unwrap_or(usize::MAX).max(1);
        if !align.is_power_of_two() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "alignment is not a power of two"));
        }
        let start = self.used.checked_add(align - 1).map(|n| n & !(align - 1));
        let end = start.and_then(|s| s.checked_add(size));
        match (start, end) {
            (Some(start), Some(end)) if end <= self.len => {
                self.used = end;
                // SAFETY: `start < end <= len`: inside the mapping.
                Ok(unsafe { self.base.as_ptr().add(start) })
            }
            _ => Err(io::Error::new(io::ErrorKind::OutOfMemory, "the code arena is full")),
        }
    }

    unsafe fn free_memory(&mut self) {
        if self.len != 0 {
            // SAFETY: the caller guarantees no code of this arena runs
            // again (cranelift-jit's `free_memory` contract); the mapping is
            // ours and unmapped once.
            unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
            self.len = 0;
            self.used = 0;
        }
    }

    fn finalize(&mut self, _branch_protection: BranchProtection) -> ModuleResult<()> {
        // x86: instruction fetch snoops stores; nothing to flush or protect.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_packed_and_bounded() {
        let mut arena = CodeArena::new(1 << 16).expect("mmap");
        let a = arena.allocate(10, 16, JITMemoryKind::Executable).expect("first");
        let b = arena.allocate(100, 16, JITMemoryKind::Executable).expect("second");
        assert_eq!(a as usize % 16, 0);
        assert_eq!(b as usize - a as usize, 16, "packed, not a page apart");
        assert_eq!(arena.used(), 116);
        assert!(arena.allocate(1 << 16, 1, JITMemoryKind::Executable).is_err(), "past the end");
        assert!(arena.allocate(8, 3, JITMemoryKind::Executable).is_err(), "bad alignment");
        // SAFETY: nothing runs from this arena.
        unsafe { arena.free_memory() };
        assert!(arena.allocate(8, 8, JITMemoryKind::Executable).is_err(), "freed");
    }

    #[test]
    fn written_code_runs_in_place() {
        let mut arena = CodeArena::new(1 << 16).expect("mmap");
        let p = arena.allocate(6, 16, JITMemoryKind::Executable).expect("allocate");
        // mov eax, 42; ret
        let code = [0xb8, 42, 0, 0, 0, 0xc3];
        // SAFETY: `p` has room for six bytes.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), p, code.len()) };
        arena.finalize(BranchProtection::None).expect("finalize");
        // SAFETY: `p` holds a complete function of this type.
        let f = unsafe { std::mem::transmute::<*mut u8, extern "C" fn() -> u32>(p) };
        assert_eq!(f(), 42);
        // SAFETY: the function has returned.
        unsafe { arena.free_memory() };
    }
}
