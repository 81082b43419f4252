//! popek's machine model, shared by every CPU backend: guest RAM and the PC
//! physical address map, the port-I/O and MMIO buses, interrupt lines,
//! architectural CPU state, and the [`vcpu::Vcpu`] trait that the `kvm`,
//! `interp` and `jit` backends implement.

pub mod bus;
pub mod clock;
pub mod control;
pub mod cpu;
pub mod irq;
pub mod layout;
pub mod memory;
pub mod mmu;
pub mod interp;
pub mod vcpu;

pub use bus::{Bus, BusDevice, BusError, SharedDevice};
pub use clock::{Clock, HostClock, ManualClock, SharedClock};
pub use control::{MachineControl, StopReason};
pub use irq::{IrqLine, NullIrq, RecordingIrq, SharedIrqLine};
pub use memory::{GuestMemory, MemoryError};
pub use cpu::{CpuState, DescriptorTable, FlagsOp, FxState, LazyFlags, Msrs, Segment};
pub use vcpu::{MachineContext, Vcpu, VcpuError, VcpuStats, VmExit};
