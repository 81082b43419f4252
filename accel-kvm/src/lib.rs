//! popek's KVM backend: a VM over the machine's guest memory, KVM's
//! in-kernel PIC, IOAPIC, LAPIC and PIT, and vCPUs whose run loop sends
//! port-I/O and MMIO exits to the machine's buses.
//!
//! Written against the standard KVM API as it behaves on VT-x/AMD-V. The
//! hosts this project is developed on run `kvm_pvm`, a paravirtual KVM
//! without hardware virtualization: [`probe`] tells the two apart so tests
//! that need the real thing can skip.

mod regs;
mod vcpu;

use std::sync::Arc;

use emu_core::{GuestMemory, IrqLine, SharedIrqLine};
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_MEM_READONLY, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};

pub use regs::{from_kvm, from_kvm_fpu, to_kvm_fpu, to_kvm_regs, to_kvm_sregs};
pub use vcpu::KvmVcpu;

/// Errors from the KVM backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// /dev/kvm cannot be opened.
    #[error("Cannot open /dev/kvm")]
    Open(#[source] kvm_ioctls::Error),
    /// The kernel's KVM API is not the one this backend speaks.
    #[error("KVM API version {0} is not supported (need 12)")]
    ApiVersion(i32),
    /// A KVM call failed.
    #[error("{what} failed")]
    Ioctl {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A capability the backend needs is missing.
    #[error("KVM lacks {0}")]
    MissingCapability(&'static str),
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |source| Error::Ioctl { what, source }
}

/// What kind of KVM this host offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvmHost {
    /// KVM over VT-x or AMD-V.
    Hardware,
    /// `kvm_pvm`: KVM's API over shadow paging with no hardware
    /// virtualization underneath. Runs simple code; cannot boot Linux.
    Paravirtual,
    /// No usable /dev/kvm; the string says why.
    Unavailable(String),
}

impl KvmHost {
    /// Why a test that needs hardware virtualization cannot run here, if
    /// it cannot.
    pub fn skip_reason(&self) -> Option<String> {
        match self {
            KvmHost::Hardware => None,
            KvmHost::Paravirtual => Some(
                "KVM here is kvm_pvm (no VT-x/AMD-V), which cannot run this guest".to_string(),
            ),
            KvmHost::Unavailable(why) => Some(format!("KVM is unavailable: {why}")),
        }
    }
}

/// Finds out what KVM this host has.
pub fn probe() -> KvmHost {
    if let Err(e) = Kvm::new() {
        return KvmHost::Unavailable(format!("/dev/kvm: {e}"));
    }
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        return KvmHost::Paravirtual;
    }
    match std::fs::read_to_string("/proc/cpuinfo") {
        Ok(info) if info.lines().any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm"))) => {
            KvmHost::Hardware
        }
        // Nested or unusual hosts may hide the flags; KVM opened, so trust it.
        _ => KvmHost::Hardware,
    }
}

/// Where KVM's VMX real-mode helpers live: QEMU's addresses, in the hole
/// below the firmware and reserved in the E820 map.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfeff_c000;
/// KVM's real-mode TSS, three pages right after the identity map page.
pub const KVM_TSS_ADDR: u64 = 0xfeff_d000;

/// A KVM virtual machine over popek's guest memory.
#[derive(Debug)]
pub struct KvmVm {
    kvm: Kvm,
    vm: Arc<VmFd>,
    memory: Arc<GuestMemory>,
}

impl KvmVm {
    /// Creates the VM, maps RAM and ROM into it, and creates the in-kernel
    /// irqchip and PIT.
    pub fn new(memory: Arc<GuestMemory>) -> Result<Self, Error> {
        let kvm = Kvm::new().map_err(Error::Open)?;
        let api = kvm.get_api_version();
        if api != 12 {
            return Err(Error::ApiVersion(api));
        }
        for (cap, name) in [(Cap::Irqchip, "an in-kernel irqchip"), (Cap::UserMemory, "user memory slots")] {
            if !kvm.check_extension(cap) {
                return Err(Error::MissingCapability(name));
            }
        }
        let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        // VMX needs these for real mode; AMD and kvm_pvm ignore or refuse
        // them harmlessly.
        let _ = vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDR);
        let _ = vm.set_tss_address(KVM_TSS_ADDR as usize);

        let this = Self { kvm, vm: Arc::new(vm), memory };
        this.map_memory()?;
        this.vm.create_irq_chip().map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
        // SPEAKER_DUMMY puts port 0x61 (PIT channel 2's gate and output,
        // which Linux polls to calibrate the TSC) in the kernel too.
        let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
        this.vm.create_pit2(pit).map_err(ioctl("KVM_CREATE_PIT2"))?;
        Ok(this)
    }

    fn map_memory(&self) -> Result<(), Error> {
        let readonly = self.kvm.check_extension(Cap::ReadonlyMem);
        let ram = self.memory.ram_regions().iter().map(|r| {
            (r.guest_start, r.len, self.memory.ram_host_address() as u64 + r.host_offset, 0)
        });
        let roms = self.memory.rom_regions().iter().map(|r| {
            (r.guest_start, r.len, r.host_address() as u64, if readonly { KVM_MEM_READONLY } else { 0 })
        });
        for (slot, (guest_phys_addr, memory_size, userspace_addr, flags)) in (0u32..).zip(ram.chain(roms).collect::<Vec<_>>()) {
            let region = kvm_userspace_memory_region { slot, flags, guest_phys_addr, memory_size, userspace_addr };
            // SAFETY: the host range is a live mapping owned by
            // `self.memory`, which this VM holds an Arc to, so it outlives
            // the slot.
            unsafe { self.vm.set_user_memory_region(region) }.map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
        }
        Ok(())
    }

    /// An interrupt line into the in-kernel irqchip: ISA IRQ `gsi` on the
    /// PIC and the same-numbered IOAPIC pin.
    pub fn irq_line(&self, gsi: u32) -> SharedIrqLine {
        Arc::new(KvmIrqLine { vm: self.vm.clone(), gsi })
    }

    /// Creates vCPU `id` over the machine.
    pub fn create_vcpu(&self, id: u64, ctx: emu_core::MachineContext) -> Result<KvmVcpu, Error> {
        KvmVcpu::new(&self.kvm, &self.vm, id, ctx)
    }
}

/// `KVM_IRQ_LINE` on one GSI.
struct KvmIrqLine {
    vm: Arc<VmFd>,
    gsi: u32,
}

impl IrqLine for KvmIrqLine {
    fn set_level(&self, high: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, high) {
            tracing::warn!(gsi = self.gsi, "KVM_IRQ_LINE failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_gives_a_reason_when_not_hardware() {
        let host = probe();
        match &host {
            KvmHost::Hardware => assert!(host.skip_reason().is_none()),
            _ => assert!(host.skip_reason().is_some()),
        }
    }

    #[test]
    fn creates_a_vm_where_kvm_exists() {
        if let KvmHost::Unavailable(why) = probe() {
            eprintln!("skipped: {why}");
            return;
        }
        let memory = Arc::new(GuestMemory::new(16 << 20).unwrap());
        let vm = KvmVm::new(memory).expect("VM");
        vm.irq_line(4).pulse();
    }
}
