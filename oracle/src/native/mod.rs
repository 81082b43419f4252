//! Running a snippet natively on the host CPU, in-process.
//!
//! [`NativeRunner`] maps three regions at fixed addresses (see
//! [`crate::layout`]): code (trampoline stubs, then the snippet), data (the
//! snippet's memory and stack) and a host-only control block. [`NativeRunner::run`]
//! loads a [`UserState`] into the real registers, runs the snippet, and
//! captures the final registers and data region (see [`trampoline`] for
//! the stubs and [`signals`] for how faults are turned into
//! [`Outcome::Fault`] instead of killing the process).
//!
//! The addresses are fixed, so only one runner can exist per process:
//! [`NativeRunner::new`] takes a process-wide lock and blocks until any
//! other runner is dropped. Tests that use a runner therefore serialize on
//! it automatically; keep each runner's lifetime short.

mod mapping;
pub(crate) mod signals;
pub(crate) mod trampoline;

use std::fmt;
use std::sync::atomic::{compiler_fence, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::layout::{
    CODE_BASE, CODE_SIZE, CONTROL_BASE, CONTROL_SIZE, DATA_BASE, DATA_SIZE, ENTRY_ADDR, EXIT_ADDR, MAX_SNIPPET_LEN,
    RECOVERY_ADDR, SNIPPET_ADDR,
};
use crate::state::{flags, UserState, USER_FLAGS};
use crate::OracleError;
use mapping::FixedMapping;
use signals::{AltStackGuard, SignalMaskGuard, SNIPPET_RUNNING};
use trampoline::{ControlBlock, CONTROL};

/// Serializes runners: they all use the same fixed addresses.
static RUNNER_LOCK: Mutex<()> = Mutex::new(());

/// Size of the alternate signal stack used while a snippet runs; generous
/// because the signal frame holds the full XSAVE area (AVX-512: ~3 KiB).
const ALT_STACK_SIZE: usize = 64 * 1024;

/// The x86 exception behind a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// #DE, vector 0 (DIV/IDIV by zero or quotient overflow).
    DivideError,
    /// #DB, vector 1.
    Debug,
    /// #BP, vector 3.
    Breakpoint,
    /// #OF, vector 4.
    Overflow,
    /// #BR, vector 5.
    BoundRange,
    /// #UD, vector 6.
    InvalidOpcode,
    /// #NM, vector 7.
    DeviceNotAvailable,
    /// #SS, vector 12.
    StackSegment,
    /// #GP, vector 13.
    GeneralProtection,
    /// #PF, vector 14.
    PageFault,
    /// #MF, vector 16.
    X87FloatingPoint,
    /// #AC, vector 17.
    AlignmentCheck,
    /// #XM, vector 19.
    SimdFloatingPoint,
    /// Any other vector.
    Other(u8),
}

impl Exception {
    /// The exception from the kernel's trap number, falling back to what
    /// the signal usually means when the trap number is not one the kernel
    /// delivers as that signal.
    fn from_fault(signal: i32, trapno: u64) -> Self {
        match (trapno, signal) {
            (0, libc::SIGFPE) => Self::DivideError,
            (1, libc::SIGTRAP) => Self::Debug,
            (3, libc::SIGTRAP) => Self::Breakpoint,
            (4, libc::SIGSEGV) => Self::Overflow,
            (5, libc::SIGSEGV) => Self::BoundRange,
            (6, libc::SIGILL) => Self::InvalidOpcode,
            (7, _) => Self::DeviceNotAvailable,
            (12, libc::SIGBUS) => Self::StackSegment,
            (13, libc::SIGSEGV) => Self::GeneralProtection,
            (14, libc::SIGSEGV | libc::SIGBUS) => Self::PageFault,
            (16, libc::SIGFPE) => Self::X87FloatingPoint,
            (17, libc::SIGBUS) => Self::AlignmentCheck,
            (19, libc::SIGFPE) => Self::SimdFloatingPoint,
            (_, libc::SIGFPE) => Self::DivideError,
            (_, libc::SIGILL) => Self::InvalidOpcode,
            (_, libc::SIGBUS) => Self::AlignmentCheck,
            (_, libc::SIGTRAP) => Self::Debug,
            (_, libc::SIGSEGV) => Self::GeneralProtection,
            (vector, _) => Self::Other(vector as u8),
        }
    }

    /// The interrupt vector.
    pub fn vector(self) -> u8 {
        match self {
            Self::DivideError => 0,
            Self::Debug => 1,
            Self::Breakpoint => 3,
            Self::Overflow => 4,
            Self::BoundRange => 5,
            Self::InvalidOpcode => 6,
            Self::DeviceNotAvailable => 7,
            Self::StackSegment => 12,
            Self::GeneralProtection => 13,
            Self::PageFault => 14,
            Self::X87FloatingPoint => 16,
            Self::AlignmentCheck => 17,
            Self::SimdFloatingPoint => 19,
            Self::Other(vector) => vector,
        }
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::DivideError => "#DE",
            Self::Debug => "#DB",
            Self::Breakpoint => "#BP",
            Self::Overflow => "#OF",
            Self::BoundRange => "#BR",
            Self::InvalidOpcode => "#UD",
            Self::DeviceNotAvailable => "#NM",
            Self::StackSegment => "#SS",
            Self::GeneralProtection => "#GP",
            Self::PageFault => "#PF",
            Self::X87FloatingPoint => "#MF",
            Self::AlignmentCheck => "#AC",
            Self::SimdFloatingPoint => "#XM",
            Self::Other(vector) => return write!(f, "vector {vector}"),
        };
        f.write_str(name)
    }
}

/// A snippet that faulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The host signal (`libc::SIGFPE`, ...).
    pub signal: i32,
    /// The x86 exception.
    pub exception: Exception,
    /// The exception's error code as the kernel reported it (0 for
    /// exceptions without one).
    pub error_code: u64,
    /// For #PF the faulting linear address; otherwise what the kernel put
    /// in `si_addr` (often the RIP, or 0 for #GP).
    pub address: u64,
    /// RIP of the faulting instruction (x86 faults are precise: the
    /// registers in `state` are those before it, except for the iterations
    /// a REP string instruction completed).
    pub rip: u64,
    /// The registers at the fault, normalized like a final state.
    pub state: UserState,
    /// The data region at the fault.
    pub data: Vec<u8>,
}

impl Fault {
    /// The faulting instruction's byte offset within the snippet, if the
    /// fault was in the snippet (rather than in a stub).
    pub fn snippet_offset(&self) -> Option<u64> {
        let offset = self.rip.checked_sub(SNIPPET_ADDR)?;
        (offset < (CODE_BASE + CODE_SIZE as u64 - SNIPPET_ADDR)).then_some(offset)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (signal {}, error code {:#x}, address {:#x}) at {:#x}", self.exception, self.signal, self.error_code, self.address, self.rip)
    }
}

/// How a snippet ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ran to its end: the final registers and the data region.
    Completed(UserState, Vec<u8>),
    /// It faulted.
    Fault(Fault),
}

/// Runs snippets on the host CPU at fixed addresses; see the module docs.
pub struct NativeRunner {
    // Fields drop in order: the mappings go before the lock is released.
    code: FixedMapping,
    data: FixedMapping,
    // Never read: it keeps the control block mapped.
    _control: FixedMapping,
    alt_stack: Vec<u8>,
    _exclusive: MutexGuard<'static, ()>,
}

impl fmt::Debug for NativeRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeRunner").field("code", &self.code).field("data", &self.data).finish_non_exhaustive()
    }
}

impl NativeRunner {
    /// Maps the regions and installs the fault handlers, waiting until no
    /// other runner exists in this process.
    pub fn new() -> Result<Self, OracleError> {
        // A panic while another runner was alive poisons the lock, but the
        // runner's drop already released its mappings: ignore the poison.
        let exclusive = RUNNER_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        signals::install_handlers()?;
        let control = FixedMapping::new(CONTROL_BASE, CONTROL_SIZE)?;
        let data = FixedMapping::new(DATA_BASE, DATA_SIZE)?;
        let code = FixedMapping::new(CODE_BASE, CODE_SIZE)?;
        let stubs = trampoline::build_stubs()?;
        let places = [(ENTRY_ADDR, EXIT_ADDR, &stubs.entry), (EXIT_ADDR, RECOVERY_ADDR, &stubs.exit), (RECOVERY_ADDR, SNIPPET_ADDR, &stubs.recovery)];
        for (start, next, bytes) in places {
            if bytes.len() as u64 > next - start {
                return Err(OracleError::Internal("a trampoline stub outgrew its slot"));
            }
            code.write((start - CODE_BASE) as usize, bytes);
        }
        code.protect(libc::PROT_READ | libc::PROT_EXEC)?;
        Ok(Self { code, data, _control: control, alt_stack: vec![0; ALT_STACK_SIZE], _exclusive: exclusive })
    }

    /// Runs `code` (placed at [`SNIPPET_ADDR`]) from `input`, with the data
    /// region holding `data` followed by zeroes.
    ///
    /// Only the [`USER_FLAGS`] of `input.rflags` and the valid bits of
    /// `input.mxcsr` (with all exceptions masked) are loaded; see
    /// [`UserState::normalized`]. The snippet must not branch out of
    /// itself, loop forever, or write outside the data region.
    pub fn run(&mut self, code: &[u8], input: &UserState, data: &[u8]) -> Result<Outcome, OracleError> {
        if code.len() > MAX_SNIPPET_LEN {
            return Err(OracleError::SnippetTooLarge { len: code.len(), max: MAX_SNIPPET_LEN });
        }
        if data.len() > DATA_SIZE {
            return Err(OracleError::DataTooLarge { len: data.len(), max: DATA_SIZE });
        }
        let epilogue = trampoline::epilogue(code.len())?;
        let snippet_offset = (SNIPPET_ADDR - CODE_BASE) as usize;
        self.code.protect(libc::PROT_READ | libc::PROT_WRITE)?;
        self.code.write(snippet_offset, code);
        self.code.write(snippet_offset + code.len(), &epilogue);
        self.code.protect(libc::PROT_READ | libc::PROT_EXEC)?;
        self.data.write(0, data);
        self.data.zero(data.len(), DATA_SIZE - data.len());

        let loaded = UserState { rflags: input.loadable_rflags(), mxcsr: input.loadable_mxcsr(), ..*input };
        // SAFETY: the control block is mapped (we own `_control`) and
        // nothing else uses it while we hold the runner lock.
        unsafe { std::ptr::write_volatile(CONTROL, ControlBlock { input: loaded, ..ControlBlock::default() }) };

        let status = {
            let _mask = SignalMaskGuard::new()?;
            let _alt_stack = AltStackGuard::new(&mut self.alt_stack)?;
            SNIPPET_RUNNING.store(true, Ordering::SeqCst);
            compiler_fence(Ordering::SeqCst);
            // SAFETY: ENTRY_ADDR holds the entry stub, which follows the C
            // ABI: it preserves the callee-saved registers, RSP, MXCSR and
            // DF=0 on both of its ways back (exit and recovery stubs), and
            // returns its status in RAX. Faults inside the snippet are
            // caught by our handler and routed to the recovery stub.
            let status = unsafe {
                let entry: unsafe extern "C" fn() -> u64 = std::mem::transmute(ENTRY_ADDR as usize);
                entry()
            };
            compiler_fence(Ordering::SeqCst);
            SNIPPET_RUNNING.store(false, Ordering::SeqCst);
            status
        };

        // SAFETY: as above; the stubs and the handler have finished with it.
        let block = unsafe { std::ptr::read_volatile(CONTROL) };
        match status {
            0 => Ok(Outcome::Completed(normalize_final(&block.output), self.data.read_all())),
            1 => {
                let record = block.fault;
                Ok(Outcome::Fault(Fault {
                    signal: record.signal,
                    exception: Exception::from_fault(record.signal, record.trapno),
                    error_code: record.error_code,
                    address: record.address,
                    rip: record.rip,
                    state: normalize_final(&record.state),
                    data: self.data.read_all(),
                }))
            }
            _ => Err(OracleError::Internal("the trampoline returned an unknown status")),
        }
    }

    /// Like [`Self::run`], but a fault is an error.
    pub fn run_completed(&mut self, code: &[u8], input: &UserState, data: &[u8]) -> Result<(UserState, Vec<u8>), OracleError> {
        match self.run(code, input, data)? {
            Outcome::Completed(state, data) => Ok((state, data)),
            Outcome::Fault(fault) => Err(OracleError::Faulted(Box::new(fault))),
        }
    }
}

/// A captured state in reporting form: user flags plus bit 1.
fn normalize_final(state: &UserState) -> UserState {
    UserState { rflags: (state.rflags & USER_FLAGS) | flags::FIXED, ..*state }
}

#[cfg(test)]
mod tests;
