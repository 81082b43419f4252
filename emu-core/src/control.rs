//! Requests that end or restart the machine, raised by devices (debug-exit,
//! i8042 reset, ACPI power-off), the console (Ctrl-A x) or a watchdog, and
//! read by the vCPU run loop.

use std::fmt;
use std::sync::{Arc, Mutex};

/// Why the machine stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest asked for a reset (i8042 pulse, port 0x92, 0xCF9).
    Reset,
    /// The guest wrote `value` to the debug-exit port; the process exits
    /// with `(value << 1) | 1` as QEMU's isa-debug-exit does.
    DebugExit(u32),
    /// The CPU shut down after a fault while delivering a double fault.
    TripleFault,
    /// The user quit from the console.
    UserQuit,
    /// The `--timeout` ran out.
    Timeout,
    /// The backend failed in a way the guest did not cause, or could not
    /// go on (a KVM internal error, an unimplemented instruction).
    Error(String),
}

impl StopReason {
    /// The process exit status this stop maps to. Debug-exit statuses are
    /// always odd, so popek's own failures use even numbers: 4 for a triple
    /// fault, 6 for a backend error, 124 for a timeout (as timeout(1)).
    pub fn exit_status(&self) -> i32 {
        match self {
            StopReason::PowerOff | StopReason::Reset | StopReason::UserQuit => 0,
            // The shell sees only the low 8 bits, as with QEMU.
            StopReason::DebugExit(v) => (((v << 1) | 1) & 0xff) as i32,
            StopReason::TripleFault => 4,
            StopReason::Error(_) => 6,
            StopReason::Timeout => 124,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::PowerOff => write!(f, "guest powered off"),
            StopReason::Reset => write!(f, "guest requested a reset"),
            StopReason::DebugExit(v) => write!(f, "guest wrote {v:#x} to the debug-exit port"),
            StopReason::TripleFault => write!(f, "triple fault: the guest CPU shut down"),
            StopReason::UserQuit => write!(f, "quit from the console"),
            StopReason::Timeout => write!(f, "timed out"),
            StopReason::Error(e) => write!(f, "{e}"),
        }
    }
}

type Kick = Box<dyn Fn() + Send + Sync>;

/// Shared between every device and thread of one machine.
///
/// The first request wins: a guest that powers off and then hits the
/// timeout before the vCPU noticed still reports a power-off.
#[derive(Default)]
pub struct MachineControl {
    stop: Mutex<Option<StopReason>>,
    /// Set with `stop`: a lock-free check for hot loops (the JIT's chain).
    stopping: std::sync::atomic::AtomicBool,
    kicks: Mutex<Vec<Kick>>,
}

impl fmt::Debug for MachineControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MachineControl").field("stop", &self.stop_reason()).finish()
    }
}

impl MachineControl {
    /// A control with no stop requested.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Asks the machine to stop, and kicks every vCPU out of guest mode so
    /// that a request from another thread is seen promptly.
    pub fn request_stop(&self, reason: StopReason) {
        {
            let mut stop = self.stop.lock().unwrap_or_else(|e| e.into_inner());
            if stop.is_none() {
                *stop = Some(reason);
            }
            self.stopping.store(true, std::sync::atomic::Ordering::Release);
        }
        for kick in self.kicks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            kick();
        }
    }

    /// The flag behind [`MachineControl::stop_requested`], for native code
    /// that polls it (valid as long as the control).
    pub fn stop_flag(&self) -> &std::sync::atomic::AtomicBool {
        &self.stopping
    }

    /// Whether a stop was requested, without taking the lock.
    pub fn stop_requested(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The pending stop, if any.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Registers a function that forces a running vCPU back to its run loop
    /// (for KVM, a signal that interrupts `KVM_RUN`).
    pub fn add_kick(&self, kick: impl Fn() + Send + Sync + 'static) {
        self.kicks.lock().unwrap_or_else(|e| e.into_inner()).push(Box::new(kick));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn first_request_wins_and_kicks() {
        let c = MachineControl::new();
        let kicked = Arc::new(AtomicU32::new(0));
        let k = kicked.clone();
        c.add_kick(move || {
            k.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(c.stop_reason(), None);
        c.request_stop(StopReason::DebugExit(0x10));
        c.request_stop(StopReason::Timeout);
        assert_eq!(c.stop_reason(), Some(StopReason::DebugExit(0x10)));
        assert_eq!(kicked.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn exit_status_matches_isa_debug_exit() {
        assert_eq!(StopReason::DebugExit(0).exit_status(), 1);
        assert_eq!(StopReason::DebugExit(0x10).exit_status(), 0x21);
        assert_eq!(StopReason::PowerOff.exit_status(), 0);
        assert_eq!(StopReason::Reset.exit_status(), 0);
        assert_eq!(StopReason::TripleFault.exit_status() % 2, 0);
        assert_eq!(StopReason::Timeout.exit_status(), 124);
        assert_eq!(StopReason::DebugExit(0x80).exit_status(), 1);
    }
}
