//! A KVM vCPU and its run loop.
//!
//! Kicks: another thread stops a vCPU that is inside `KVM_RUN` by sending
//! it [`kick_signal`]. The handler sets `immediate_exit` in the vCPU's
//! `kvm_run` page through a thread-local pointer, which closes the race
//! where the signal lands just before the vCPU enters the guest: KVM then
//! returns `EINTR` at once instead of running on.

use std::cell::Cell;
use std::sync::{Arc, Mutex, Once};

use emu_core::{CpuState, MachineContext, StopReason, Vcpu, VcpuError, VcpuStats, VmExit};
use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_sregs, Msrs, KVM_INTERNAL_ERROR_EMULATION, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::{ioctl, regs, Error};

thread_local! {
    /// The `immediate_exit` byte of the vCPU running on this thread.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The real-time signal used to kick vCPU threads out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Async-signal-safe: a const-initialised thread-local read and one store.
    let p = IMMEDIATE_EXIT.with(|p| p.get());
    if !p.is_null() {
        // SAFETY: the pointer is set by the vCPU owning this thread and
        // cleared before its kvm_run mapping goes away.
        unsafe { std::ptr::write_volatile(p, 1) };
    }
}

fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = register_signal_handler(kick_signal(), handle_kick) {
            tracing::warn!("cannot install the vCPU kick handler: {e}");
        }
    });
}

/// MSRs written at creation, as Firecracker does for a freshly booted CPU.
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// One KVM vCPU wired to the machine's buses.
pub struct KvmVcpu {
    fd: VcpuFd,
    ctx: MachineContext,
    /// The thread currently running this vCPU, for kicks; `None` outside `run`.
    thread: Arc<Mutex<Option<libc::pthread_t>>>,
    /// When the guest first left guest mode, for boot-time measurements.
    first_exit: Option<std::time::SystemTime>,
    /// Exits to userspace by kind, for `--stats`.
    exits: ExitCounts,
}

/// Exits to userspace by kind.
#[derive(Clone, Copy, Debug, Default)]
struct ExitCounts {
    io: u64,
    mmio: u64,
    /// Signal kicks and `immediate_exit` returns.
    interrupted: u64,
    other: u64,
}

impl std::fmt::Debug for KvmVcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmVcpu").finish_non_exhaustive()
    }
}

impl KvmVcpu {
    pub(crate) fn new(kvm: &Kvm, vm: &VmFd, id: u64, ctx: MachineContext) -> Result<Self, Error> {
        install_kick_handler();
        let fd = vm.create_vcpu(id).map_err(ioctl("KVM_CREATE_VCPU"))?;
        let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
        for e in cpuid.as_mut_slice() {
            match e.function {
                // Initial APIC ID in EBX[31:24]; one logical processor.
                1 => {
                    e.ebx = (e.ebx & 0x0000_ffff) | ((id as u32) << 24) | (1 << 16);
                    e.ecx |= 1 << 31; // running under a hypervisor
                }
                0xb | 0x1f => e.edx = id as u32,
                _ => {}
            }
        }
        fd.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;

        let entries: Vec<kvm_msr_entry> = [
            (MSR_IA32_MISC_ENABLE, 1), // fast strings
            (MSR_IA32_TSC, 0),
            (MSR_IA32_SYSENTER_CS, 0),
            (MSR_IA32_SYSENTER_ESP, 0),
            (MSR_IA32_SYSENTER_EIP, 0),
            (MSR_STAR, 0),
            (MSR_LSTAR, 0),
            (MSR_CSTAR, 0),
            (MSR_SYSCALL_MASK, 0),
            (MSR_KERNEL_GS_BASE, 0),
        ]
        .into_iter()
        .map(|(index, data)| kvm_msr_entry { index, data, ..Default::default() })
        .collect();
        if let Ok(msrs) = Msrs::from_entries(&entries) {
            // Some MSRs may be refused on some hosts; that only loses a default.
            let _ = fd.set_msrs(&msrs);
        }
        // x87 and SSE defaults after FNINIT and reset.
        let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
        fd.set_fpu(&fpu).map_err(ioctl("KVM_SET_FPU"))?;
        set_lint(&fd)?;

        Ok(Self { fd, ctx, thread: Arc::new(Mutex::new(None)), first_exit: None, exits: ExitCounts::default() })
    }

    /// Registers this vCPU's kick with the machine control, so stop
    /// requests from other threads interrupt `KVM_RUN`.
    pub fn register_kick(&self) {
        let thread = self.thread.clone();
        self.ctx.control.add_kick(move || {
            let t = thread.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = *t {
                // SAFETY: `t` names a live thread: the vCPU clears it under
                // this lock before leaving `run`.
                unsafe { libc::pthread_kill(t, kick_signal()) };
            }
        });
    }

    fn set_running_thread(&mut self, running: bool) {
        let ptr = if running {
            std::ptr::addr_of_mut!(self.fd.get_kvm_run().immediate_exit)
        } else {
            std::ptr::null_mut()
        };
        IMMEDIATE_EXIT.with(|p| p.set(ptr));
        // SAFETY: pthread_self has no preconditions.
        let me = running.then(|| unsafe { libc::pthread_self() });
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = me;
    }

    fn internal_error(&mut self) -> StopReason {
        let regs = self.fd.get_regs().ok();
        let sregs = self.fd.get_sregs().ok();
        let run = self.fd.get_kvm_run();
        // SAFETY: KVM filled the `internal` member for this exit reason.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let mut msg = format!("KVM internal error: suberror {}", internal.suberror);
        if internal.suberror == KVM_INTERNAL_ERROR_EMULATION {
            msg.push_str(" (KVM could not emulate an instruction)");
            // SAFETY: for emulation failures KVM uses the
            // `emulation_failure` layout of the same union.
            let ef = unsafe { run.__bindgen_anon_1.emulation_failure };
            // KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
            if ef.flags & 1 != 0 {
                // SAFETY: flag bit 0 says the instruction bytes are valid.
                let insn = unsafe { ef.__bindgen_anon_1.__bindgen_anon_1 };
                let n = usize::from(insn.insn_size).min(insn.insn_bytes.len());
                let bytes: Vec<String> = insn.insn_bytes[..n].iter().map(|b| format!("{b:02x}")).collect();
                msg.push_str(&format!(", instruction bytes [{}]", bytes.join(" ")));
            }
        } else {
            let n = (internal.ndata as usize).min(internal.data.len());
            msg.push_str(&format!(", data {:x?}", &internal.data[..n]));
        }
        if let (Some(r), Some(s)) = (regs, sregs) {
            msg.push_str(&format!(" at {:04x}:{:x} (cs base {:#x}, cr0 {:#x})", s.cs.selector, r.rip, s.cs.base, s.cr0));
        }
        StopReason::Error(msg)
    }

    /// When the guest first exited to the VMM (its first port I/O, for a
    /// ROM), if it has.
    pub fn first_exit_time(&self) -> Option<std::time::SystemTime> {
        self.first_exit
    }

    fn run_once(&mut self) -> Result<Option<VmExit>, VcpuError> {
        let pio = &self.ctx.pio;
        let mmio = &self.ctx.mmio;
        let result = self.fd.run();
        if self.first_exit.is_none() && result.is_ok() {
            self.first_exit = Some(std::time::SystemTime::now());
        }
        match result {
            Ok(exit) => match exit {
                VcpuExit::IoIn(port, data) => {
                    self.exits.io += 1;
                    pio.read(u64::from(port), data);
                }
                VcpuExit::IoOut(port, data) => {
                    self.exits.io += 1;
                    pio.write(u64::from(port), data);
                }
                VcpuExit::MmioRead(addr, data) => {
                    self.exits.mmio += 1;
                    mmio.read(addr, data);
                }
                VcpuExit::MmioWrite(addr, data) => {
                    self.exits.mmio += 1;
                    // Writes to read-only slots (firmware) arrive here too.
                    mmio.write(addr, data);
                }
                VcpuExit::Hlt => {
                    // With the in-kernel irqchip KVM halts in the kernel; an
                    // exit here means nothing can wake the CPU.
                    return Ok(Some(VmExit::Stopped(StopReason::Error(
                        "the guest halted with no way to wake it".into(),
                    ))));
                }
                VcpuExit::Shutdown => return Ok(Some(VmExit::Stopped(StopReason::TripleFault))),
                VcpuExit::SystemEvent(kind, _) => {
                    let reason = match kind {
                        kvm_bindings::KVM_SYSTEM_EVENT_RESET => StopReason::Reset,
                        kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => StopReason::PowerOff,
                        other => StopReason::Error(format!("KVM system event {other}")),
                    };
                    return Ok(Some(VmExit::Stopped(reason)));
                }
                VcpuExit::InternalError => {
                    let reason = self.internal_error();
                    return Ok(Some(VmExit::Stopped(reason)));
                }
                VcpuExit::FailEntry(reason, cpu) => {
                    return Ok(Some(VmExit::Stopped(StopReason::Error(format!(
                        "KVM could not enter the guest on vCPU {cpu}: hardware reason {reason:#x}"
                    )))));
                }
                VcpuExit::Intr => {
                    self.exits.interrupted += 1;
                    return Ok(Some(VmExit::Interrupted));
                }
                other => {
                    self.exits.other += 1;
                    return Ok(Some(VmExit::Stopped(StopReason::Error(format!(
                        "unexpected KVM exit {other:?}"
                    )))));
                }
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.exits.interrupted += 1;
                self.fd.set_kvm_immediate_exit(0);
                return Ok(Some(VmExit::Interrupted));
            }
            Err(e) => {
                return Err(VcpuError::Hypervisor { what: "KVM_RUN", source: std::io::Error::from_raw_os_error(e.errno()) })
            }
        }
        Ok(None)
    }
}

/// Local APIC LINT0 as ExtINT (the PIC's output) and LINT1 as NMI: the
/// virtual-wire mode firmware and early kernels expect.
fn set_lint(fd: &VcpuFd) -> Result<(), Error> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const APIC_MODE_EXTINT: u32 = 0x7;
    const APIC_MODE_NMI: u32 = 0x4;
    let mut lapic = fd.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?;
    for (reg, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[reg + i] as u8);
        let v = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = *b as libc::c_char;
        }
    }
    fd.set_lapic(&lapic).map_err(ioctl("KVM_SET_LAPIC"))
}

fn hv(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
    move |e| VcpuError::Hypervisor { what, source: std::io::Error::from_raw_os_error(e.errno()) }
}

impl Vcpu for KvmVcpu {
    fn run(&mut self) -> Result<VmExit, VcpuError> {
        self.set_running_thread(true);
        let result = loop {
            if let Some(reason) = self.ctx.control.stop_reason() {
                break Ok(VmExit::Stopped(reason));
            }
            match self.run_once() {
                Ok(None) => {}
                Ok(Some(VmExit::Interrupted)) => {
                    // Kicked: report a pending stop, or go round again.
                    match self.ctx.control.stop_reason() {
                        Some(reason) => break Ok(VmExit::Stopped(reason)),
                        None => break Ok(VmExit::Interrupted),
                    }
                }
                Ok(Some(exit)) => break Ok(exit),
                Err(e) => break Err(e),
            }
        };
        self.set_running_thread(false);
        result
    }

    fn stats(&self) -> VcpuStats {
        let e = self.exits;
        VcpuStats {
            events: vec![("port I/O exits".into(), e.io), ("MMIO exits".into(), e.mmio), ("kicks".into(), e.interrupted), ("other exits".into(), e.other)],
            ..VcpuStats::default()
        }
    }

    fn state(&mut self) -> Result<CpuState, VcpuError> {
        let r = self.fd.get_regs().map_err(hv("KVM_GET_REGS"))?;
        let s = self.fd.get_sregs().map_err(hv("KVM_GET_SREGS"))?;
        let f = self.fd.get_fpu().map_err(hv("KVM_GET_FPU"))?;
        let mut state = regs::from_kvm(&r, &s);
        state.fx = regs::from_kvm_fpu(&f);
        Ok(state)
    }

    fn set_state(&mut self, state: &CpuState) -> Result<(), VcpuError> {
        let base: kvm_sregs = self.fd.get_sregs().map_err(hv("KVM_GET_SREGS"))?;
        self.fd.set_sregs(&regs::to_kvm_sregs(state, &base)).map_err(hv("KVM_SET_SREGS"))?;
        self.fd.set_fpu(&regs::to_kvm_fpu(&state.fx)).map_err(hv("KVM_SET_FPU"))?;
        self.fd.set_regs(&regs::to_kvm_regs(state)).map_err(hv("KVM_SET_REGS"))
    }
}
