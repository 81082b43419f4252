//! Catching faults raised by a snippet.
//!
//! Handlers for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGTRAP are installed
//! once per process (and stay installed). When a fault's RIP lies in the
//! code region while a snippet runs, the handler records the signal, the
//! kernel's exception vector and error code and the registers at the fault
//! in the control block, then edits the saved context so that `sigreturn`
//! resumes at the recovery stub with RSP = the host RSP that the entry
//! stub saved. The recovery stub pops the callee-saved registers and
//! returns to the host as if the snippet had finished, so no Rust frame is
//! ever skipped (no `longjmp`). Any other fault goes to the handler that
//! was installed before ours (for example Rust's stack-overflow guard), or
//! gets the default action.
//!
//! The handler runs on an alternate signal stack that the runner installs
//! for the calling thread around each snippet, because the snippet's RSP
//! points into the data region, which a signal frame must not overwrite.

use std::cell::UnsafeCell;
use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::layout::{in_code_region, RECOVERY_ADDR};
use crate::native::trampoline::CONTROL;
use crate::state::{flags, UserState};
use crate::OracleError;

/// The signals a snippet can raise.
const CAUGHT: [libc::c_int; 5] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL, libc::SIGTRAP];

/// Set while a snippet runs: the handler only intercepts faults then.
pub(crate) static SNIPPET_RUNNING: AtomicBool = AtomicBool::new(false);

/// The handlers ours replaced, indexed like [`CAUGHT`]; written before our
/// handler is installed and never again.
struct PreviousHandlers(UnsafeCell<[MaybeUninit<libc::sigaction>; CAUGHT.len()]>);

// SAFETY: each entry is written once, under INSTALL_LOCK, before the
// handler that reads it is installed; afterwards it is only read.
unsafe impl Sync for PreviousHandlers {}

static PREVIOUS: PreviousHandlers = PreviousHandlers(UnsafeCell::new([MaybeUninit::uninit(); CAUGHT.len()]));
static INSTALLED: AtomicBool = AtomicBool::new(false);
static INSTALL_LOCK: Mutex<()> = Mutex::new(());

/// Installs the fault handlers if that has not been done yet.
pub(crate) fn install_handlers() -> Result<(), OracleError> {
    let _guard = INSTALL_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if INSTALLED.load(Ordering::Acquire) {
        return Ok(());
    }
    for (index, &signal) in CAUGHT.iter().enumerate() {
        // SAFETY: a zeroed sigaction is a valid "no handler" value, and
        // sigemptyset/sigfillset/sigaction get valid pointers.
        unsafe {
            let previous = (*PREVIOUS.0.get())[index].as_mut_ptr();
            if libc::sigaction(signal, std::ptr::null(), previous) != 0 {
                return Err(OracleError::Signals(io::Error::last_os_error()));
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fault as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigfillset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(OracleError::Signals(io::Error::last_os_error()));
            }
        }
    }
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

extern "C" fn on_fault(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid ucontext_t.
    let context_ref = unsafe { &mut *context.cast::<libc::ucontext_t>() };
    let rip = context_ref.uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
    if !SNIPPET_RUNNING.load(Ordering::Relaxed) || !in_code_region(rip) {
        // SAFETY: we forward exactly what the kernel gave us.
        unsafe { chain(signal, info, context) };
        return;
    }
    // SAFETY: the control block is mapped while a snippet runs (the runner
    // owns it), and only this thread touches it now; `info` is valid.
    unsafe {
        let record = &mut (*CONTROL).fault;
        record.signal = signal;
        record.si_code = (*info).si_code;
        record.address = (*info).si_addr() as u64;
        record.trapno = context_ref.uc_mcontext.gregs[libc::REG_TRAPNO as usize] as u64;
        record.error_code = context_ref.uc_mcontext.gregs[libc::REG_ERR as usize] as u64;
        record.rip = rip;
        record.state = state_at_fault(context_ref);
    }
    let gregs = &mut context_ref.uc_mcontext.gregs;
    gregs[libc::REG_RIP as usize] = RECOVERY_ADDR as i64;
    // SAFETY: as above; the entry stub stored the host RSP before jumping.
    gregs[libc::REG_RSP as usize] = unsafe { (*CONTROL).host_rsp } as i64;
    // Hand the host back sane flags (TF or AC from a snippet would fire
    // again in host code).
    let efl = &mut gregs[libc::REG_EFL as usize];
    *efl &= !((flags::TF | flags::DF | flags::AC) as i64);
}

/// The registers of the interrupted snippet, in [`UserState`] form.
fn state_at_fault(context: &libc::ucontext_t) -> UserState {
    let gregs = &context.uc_mcontext.gregs;
    let from = |index: libc::c_int| gregs[index as usize] as u64;
    let mut state = UserState {
        gpr: [
            from(libc::REG_RAX),
            from(libc::REG_RCX),
            from(libc::REG_RDX),
            from(libc::REG_RBX),
            from(libc::REG_RSP),
            from(libc::REG_RBP),
            from(libc::REG_RSI),
            from(libc::REG_RDI),
            from(libc::REG_R8),
            from(libc::REG_R9),
            from(libc::REG_R10),
            from(libc::REG_R11),
            from(libc::REG_R12),
            from(libc::REG_R13),
            from(libc::REG_R14),
            from(libc::REG_R15),
        ],
        rflags: from(libc::REG_EFL),
        ..UserState::default()
    };
    let fpregs = context.uc_mcontext.fpregs;
    if !fpregs.is_null() {
        // SAFETY: a non-null fpregs points at the FXSAVE image the kernel
        // put in the signal frame.
        let fp = unsafe { &*fpregs };
        state.mxcsr = fp.mxcsr;
        for (slot, xmm) in state.xmm.iter_mut().zip(fp._xmm.iter()) {
            let [a, b, c, d] = xmm.element;
            *slot = u128::from(a) | u128::from(b) << 32 | u128::from(c) << 64 | u128::from(d) << 96;
        }
    }
    state
}

/// Passes a signal that is not ours to the handler installed before ours,
/// or applies the default action.
///
/// # Safety
///
/// Must be called from our signal handler with the arguments it received.
unsafe fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let Some(index) = CAUGHT.iter().position(|&caught| caught == signal) else { return };
    // SAFETY: written before our handler was installed (see PREVIOUS).
    let previous = unsafe { (*PREVIOUS.0.get())[index].assume_init_ref() };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Restore the default action and re-raise: the signal stays
        // pending while this handler runs and then terminates the process
        // the usual way (for a fault, the instruction would also fault
        // again on return).
        // SAFETY: resetting a disposition and raising are async-signal-safe.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous owner registered this as an SA_SIGINFO
        // handler, so it has this signature.
        let function: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        function(signal, info, context);
    } else {
        // SAFETY: a plain handler takes the signal number only.
        let function: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        function(signal);
    }
}

/// Installs an alternate signal stack for the current thread and restores
/// the previous one on drop.
pub(crate) struct AltStackGuard {
    previous: libc::stack_t,
}

impl AltStackGuard {
    /// Switches this thread's alternate signal stack to `stack`, which must
    /// outlive the guard.
    pub(crate) fn new(stack: &mut [u8]) -> Result<Self, OracleError> {
        let new = libc::stack_t { ss_sp: stack.as_mut_ptr().cast(), ss_flags: 0, ss_size: stack.len() };
        // SAFETY: zeroed stack_t is valid output storage.
        let mut previous: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are valid; `stack` outlives the guard, and
        // the guard puts the previous stack back before it ends.
        if unsafe { libc::sigaltstack(&new, &mut previous) } != 0 {
            return Err(OracleError::Signals(io::Error::last_os_error()));
        }
        // Restoring a stack reported as "in use" would fail; we are not on
        // it (we are not in a handler), so drop that bit.
        previous.ss_flags &= !libc::SS_ONSTACK;
        Ok(Self { previous })
    }
}

impl Drop for AltStackGuard {
    fn drop(&mut self) {
        // SAFETY: restores the stack this thread had before `new`.
        unsafe { libc::sigaltstack(&self.previous, std::ptr::null_mut()) };
    }
}

/// Blocks every asynchronous signal on this thread (whose handler would
/// otherwise push a frame onto the snippet's stack in the data region)
/// and restores the previous mask on drop.
pub(crate) struct SignalMaskGuard {
    previous: libc::sigset_t,
}

impl SignalMaskGuard {
    pub(crate) fn new() -> Result<Self, OracleError> {
        // SAFETY: the sets are plain storage initialized by sigfillset /
        // pthread_sigmask before use.
        unsafe {
            let mut blocked: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut blocked);
            for signal in CAUGHT {
                libc::sigdelset(&mut blocked, signal);
            }
            let mut previous: libc::sigset_t = std::mem::zeroed();
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &blocked, &mut previous);
            if rc != 0 {
                return Err(OracleError::Signals(io::Error::from_raw_os_error(rc)));
            }
            Ok(Self { previous })
        }
    }
}

impl Drop for SignalMaskGuard {
    fn drop(&mut self) {
        // SAFETY: restores this thread's previous mask.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut()) };
    }
}
