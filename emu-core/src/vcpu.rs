//! The backend interface: what `kvm`, `interp` and `jit` implement.
//!
//! A backend is built over the machine's memory, buses and control; its
//! vCPU handles port I/O and MMIO itself by dispatching to the buses, and
//! returns from [`Vcpu::run`] only when the machine must act.

use std::sync::Arc;

use crate::bus::Bus;
use crate::control::{MachineControl, StopReason};
use crate::cpu::CpuState;
use crate::memory::GuestMemory;

/// Why [`Vcpu::run`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The machine must stop (see [`MachineControl`]).
    Stopped(StopReason),
    /// The vCPU was kicked out of guest mode with nothing to report; call
    /// `run` again after checking the control.
    Interrupted,
}

/// Errors a backend reports; these are failures of the VMM or the host,
/// never guest misbehaviour (which becomes a [`StopReason`]).
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// The backend does not exist yet or lacks something the guest needs.
    #[error("{0} is not implemented yet")]
    NotImplemented(&'static str),
    /// A hypervisor call failed.
    #[error("{what} failed")]
    Hypervisor {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The requested state cannot be represented by this backend.
    #[error("Invalid CPU state: {0}")]
    InvalidState(String),
}

/// Everything a backend is built over.
#[derive(Clone, Debug)]
pub struct MachineContext {
    /// Guest RAM and ROM.
    pub memory: Arc<GuestMemory>,
    /// Port-I/O devices.
    pub pio: Arc<Bus>,
    /// Memory-mapped devices.
    pub mmio: Arc<Bus>,
    /// Stop requests.
    pub control: Arc<MachineControl>,
}

/// One virtual CPU.
pub trait Vcpu: Send {
    /// Runs guest code until the machine must act.
    fn run(&mut self) -> Result<VmExit, VcpuError>;
    /// Reads the architectural state.
    fn state(&mut self) -> Result<CpuState, VcpuError>;
    /// Replaces the architectural state.
    fn set_state(&mut self, state: &CpuState) -> Result<(), VcpuError>;

    /// Guest instructions retired so far, where the backend counts them
    /// (the software CPU does; KVM does not).
    fn instructions_retired(&self) -> Option<u64> {
        None
    }

    /// What the backend counted so far, for `--stats`.
    fn stats(&self) -> VcpuStats {
        VcpuStats { instructions_retired: self.instructions_retired(), ..VcpuStats::default() }
    }
}

/// Counters a backend keeps while it runs, printed by `--stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VcpuStats {
    /// Guest instructions retired, where the backend counts them.
    pub instructions_retired: Option<u64>,
    /// Soft-TLB lookups that hit and missed (software backends).
    pub tlb: Option<(u64, u64)>,
    /// Events by kind: exits to the VMM under KVM; device accesses,
    /// interrupts, exceptions and halts under the software CPU.
    pub events: Vec<(std::borrow::Cow<'static, str>, u64)>,
}
