//! RDMSR and WRMSR: the model-specific registers of the software CPU.
//!
//! Beyond the architectural ones a 64-bit kernel needs (EFER, STAR/LSTAR,
//! the segment bases, PAT, SYSENTER, TSC, TSC_AUX), the CPU carries what a
//! PC's firmware and kernel expect of a family-6 Intel part:
//!
//! * MTRRs (IA32_MTRRCAP, MTRRdefType, the eleven fixed-range registers
//!   and eight variable ranges): stored, not applied; every access is
//!   write-back to the interpreter anyway. Linux needs them enabled to
//!   turn PAT on.
//! * Machine-check architecture (IA32_MCG_CAP/STATUS/CTL and
//!   [`MCE_BANKS`] banks of CTL/STATUS/ADDR/MISC): nothing ever reports an
//!   error, so the banks stay clear; CTL registers take only all-zeros or
//!   all-ones, and STATUS only zero, as on hardware without software error
//!   recovery.
//! * IA32_ARCH_CAPABILITIES: an interpreter does not speculate, so it
//!   declares itself immune to the transient-execution attacks the kernel
//!   would otherwise mitigate (KPTI among them, which would flush the soft
//!   TLB on every system call).
//! * IA32_TSC_DEADLINE goes to the local APIC through
//!   [`LocalApicPort`](crate::interp::LocalApicPort).

use iced_x86::{Instruction, Register};

use super::super::fault::{Fault, R};
use super::super::Interpreter;
use crate::cpu::{cr0, efer, reg, seg};

/// Machine-check banks, as many as QEMU gives its CPUs.
pub const MCE_BANKS: usize = 10;
/// IA32_MCG_CAP: the bank count and MCG_CTL_P (IA32_MCG_CTL present).
const MCG_CAP: u64 = MCE_BANKS as u64 | 1 << 8;
/// IA32_MTRRCAP: eight variable ranges, fixed ranges, write-combining.
const MTRRCAP: u64 = 8 | 1 << 8 | 1 << 10;
/// IA32_ARCH_CAPABILITIES: RDCL_NO, SKIP_L1DFL_VMENTRY, SSB_NO, MDS_NO,
/// PSCHANGE_MC_NO, TAA_NO, SBDR_SSDP_NO, FBSDP_NO, PSDP_NO, BHI_NO,
/// PBRSB_NO, GDS_NO, RFDS_NO, ITS_NO.
pub const ARCH_CAPABILITIES: u64 = 1
    | 1 << 3
    | 1 << 4
    | 1 << 5
    | 1 << 6
    | 1 << 8
    | 1 << 13
    | 1 << 14
    | 1 << 15
    | 1 << 20
    | 1 << 24
    | 1 << 26
    | 1 << 27
    | 1 << 62;

/// MSR numbers.
pub mod index {
    pub const TSC: u32 = 0x10;
    pub const PLATFORM_ID: u32 = 0x17;
    pub const APIC_BASE: u32 = 0x1b;
    /// IA32_BIOS_SIGN_ID: the microcode revision (Linux writes 0, runs
    /// CPUID, then reads it back on Intel family 6).
    pub const BIOS_SIGN_ID: u32 = 0x8b;
    pub const MTRRCAP: u32 = 0xfe;
    pub const ARCH_CAPABILITIES: u32 = 0x10a;
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const MCG_CAP: u32 = 0x179;
    pub const MCG_STATUS: u32 = 0x17a;
    pub const MCG_CTL: u32 = 0x17b;
    pub const MISC_ENABLE: u32 = 0x1a0;
    /// IA32_MTRR_PHYSBASE0; PHYSMASK0 follows, then the other pairs.
    pub const MTRR_PHYS_BASE0: u32 = 0x200;
    pub const MTRR_FIX64K_00000: u32 = 0x250;
    pub const MTRR_FIX16K_80000: u32 = 0x258;
    pub const MTRR_FIX16K_A0000: u32 = 0x259;
    pub const MTRR_FIX4K_C0000: u32 = 0x268;
    pub const PAT: u32 = 0x277;
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    /// IA32_MC0_CTL; each bank has CTL, STATUS, ADDR, MISC.
    pub const MC0_CTL: u32 = 0x400;
    pub const TSC_DEADLINE: u32 = 0x6e0;
    pub const EFER: u32 = 0xc000_0080;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const CSTAR: u32 = 0xc000_0083;
    pub const SFMASK: u32 = 0xc000_0084;
    pub const FS_BASE: u32 = 0xc000_0100;
    pub const GS_BASE: u32 = 0xc000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    pub const TSC_AUX: u32 = 0xc000_0103;
}

/// Which fixed-range MTRR an index names (0-10).
fn fixed_mtrr(index: u32) -> Option<usize> {
    match index {
        index::MTRR_FIX64K_00000 => Some(0),
        index::MTRR_FIX16K_80000 => Some(1),
        index::MTRR_FIX16K_A0000 => Some(2),
        index::MTRR_FIX4K_C0000..=0x26f => Some(3 + (index - index::MTRR_FIX4K_C0000) as usize),
        _ => None,
    }
}

/// A valid memory type for an MTRR: UC, WC, WT, WP or WB.
fn valid_mtrr_type(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

/// The bits a variable-range base or mask may not set: above the
/// physical address width, and the reserved ones in the low 12.
fn variable_mtrr_reserved(is_mask: bool) -> u64 {
    let above = !((1u64 << crate::mmu::PHYS_ADDR_BITS) - 1);
    above | if is_mask { 0x7ff } else { 0xf00 }
}

pub(super) fn rdmsr(cpu: &mut Interpreter, _: &Instruction) -> R<()> {
    cpu.require_cpl0()?;
    let i = cpu.s.gpr[reg::RCX] as u32;
    let v = read(cpu, i).ok_or_else(Fault::gp0)?;
    cpu.set_reg(Register::EAX, v & 0xffff_ffff);
    cpu.set_reg(Register::EDX, v >> 32);
    Ok(())
}

/// The value of MSR `i`, or `None` (#GP) for one the CPU lacks.
fn read(cpu: &mut Interpreter, i: u32) -> Option<u64> {
    let m = &cpu.s.msrs;
    Some(match i {
        index::TSC => cpu.tsc(),
        index::PLATFORM_ID | index::BIOS_SIGN_ID => 0,
        index::APIC_BASE => cpu.s.apic_base,
        index::MTRRCAP => MTRRCAP,
        index::ARCH_CAPABILITIES => ARCH_CAPABILITIES,
        index::SYSENTER_CS => m.sysenter_cs,
        index::SYSENTER_ESP => m.sysenter_esp,
        index::SYSENTER_EIP => m.sysenter_eip,
        index::MCG_CAP => MCG_CAP,
        index::MCG_STATUS => m.mcg_status,
        index::MCG_CTL => m.mcg_ctl,
        index::MISC_ENABLE => m.misc_enable,
        index::MTRR_PHYS_BASE0..=0x20f => m.mtrr_var[(i - index::MTRR_PHYS_BASE0) as usize],
        index::PAT => m.pat,
        index::MTRR_DEF_TYPE => m.mtrr_def_type,
        index::MC0_CTL..=0x427 => {
            let (bank, reg) = (((i - index::MC0_CTL) / 4) as usize, (i - index::MC0_CTL) % 4);
            match reg {
                0 => m.mc_ctl[bank],
                1 => m.mc_status[bank],
                2 => m.mc_addr[bank],
                _ => m.mc_misc[bank],
            }
        }
        index::TSC_DEADLINE => cpu.tsc_deadline(),
        index::EFER => cpu.s.efer,
        index::STAR => m.star,
        index::LSTAR => m.lstar,
        index::CSTAR => m.cstar,
        index::SFMASK => m.sfmask,
        index::FS_BASE => cpu.s.segs[seg::FS].base,
        index::GS_BASE => cpu.s.segs[seg::GS].base,
        index::KERNEL_GS_BASE => m.kernel_gs_base,
        index::TSC_AUX => m.tsc_aux,
        _ => return fixed_mtrr(i).map(|f| m.mtrr_fixed[f]),
    })
}

pub(super) fn wrmsr(cpu: &mut Interpreter, _: &Instruction) -> R<()> {
    cpu.require_cpl0()?;
    let i = cpu.s.gpr[reg::RCX] as u32;
    let v = (cpu.s.gpr[reg::RDX] << 32) | (cpu.s.gpr[reg::RAX] & 0xffff_ffff);
    write(cpu, i, v).ok_or_else(Fault::gp0)
}

/// Writes MSR `i`; `None` is #GP (an unknown MSR, a read-only one, or a
/// value it refuses).
fn write(cpu: &mut Interpreter, i: u32, v: u64) -> Option<()> {
    let canonical = super::super::access::is_canonical(v);
    let all_or_nothing = v == 0 || v == u64::MAX;
    if i == index::TSC {
        crate::interp::bump(&cpu.counters.clock_reads);
        cpu.s.msrs.tsc_offset = v.wrapping_sub(cpu.clock.monotonic_ns());
        return Some(());
    }
    if i == index::TSC_DEADLINE {
        cpu.set_tsc_deadline(v);
        return Some(());
    }
    let m = &mut cpu.s.msrs;
    match i {
        // No microcode to load: the write only resets the revision field.
        index::BIOS_SIGN_ID => {}
        index::APIC_BASE => cpu.s.apic_base = v & !0x6ff,
        index::SYSENTER_CS => m.sysenter_cs = v & 0xffff,
        index::SYSENTER_ESP if canonical => m.sysenter_esp = v,
        index::SYSENTER_EIP if canonical => m.sysenter_eip = v,
        index::MCG_STATUS => m.mcg_status = v,
        index::MCG_CTL if all_or_nothing => m.mcg_ctl = v,
        index::MISC_ENABLE => m.misc_enable = v,
        index::MTRR_PHYS_BASE0..=0x20f => {
            let n = (i - index::MTRR_PHYS_BASE0) as usize;
            let is_mask = n % 2 == 1;
            if v & variable_mtrr_reserved(is_mask) != 0 || (!is_mask && !valid_mtrr_type(v & 0xff)) {
                return None;
            }
            m.mtrr_var[n] = v;
        }
        index::PAT => {
            // Each of the eight entries must name a memory type (2 and 3 are reserved).
            if (0..8).any(|e| matches!((v >> (8 * e)) & 0xff, 2 | 3 | 8..=0xff)) {
                return None;
            }
            m.pat = v;
        }
        index::MTRR_DEF_TYPE => {
            if v & !0xcff != 0 || !valid_mtrr_type(v & 0xff) {
                return None;
            }
            m.mtrr_def_type = v;
        }
        index::MC0_CTL..=0x427 => {
            let (bank, reg) = (((i - index::MC0_CTL) / 4) as usize, (i - index::MC0_CTL) % 4);
            match reg {
                0 if all_or_nothing => m.mc_ctl[bank] = v,
                1 if v == 0 => m.mc_status[bank] = 0,
                2 => m.mc_addr[bank] = v,
                3 => m.mc_misc[bank] = v,
                _ => return None,
            }
        }
        index::EFER => {
            let allowed = efer::SCE | efer::LME | efer::NXE;
            if v & !(allowed | efer::LMA) != 0 {
                return None;
            }
            if cpu.s.cr0 & cr0::PG != 0 && (v ^ cpu.s.efer) & efer::LME != 0 {
                return None;
            }
            let new = (v & allowed) | (cpu.s.efer & efer::LMA);
            if (new ^ cpu.s.efer) & efer::NXE != 0 {
                cpu.tlb.flush(false);
            }
            cpu.s.efer = new;
        }
        index::STAR => m.star = v,
        index::LSTAR if canonical => m.lstar = v,
        index::CSTAR if canonical => m.cstar = v,
        index::SFMASK => m.sfmask = v & 0xffff_ffff,
        index::FS_BASE if canonical => cpu.s.segs[seg::FS].base = v,
        index::GS_BASE if canonical => cpu.s.segs[seg::GS].base = v,
        index::KERNEL_GS_BASE if canonical => m.kernel_gs_base = v,
        index::TSC_AUX => m.tsc_aux = v & 0xffff_ffff,
        _ => {
            let f = fixed_mtrr(i)?;
            if (0..8).any(|e| !valid_mtrr_type((v >> (8 * e)) & 0xff)) {
                return None;
            }
            m.mtrr_fixed[f] = v;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::clock::ManualClock;
    use crate::interp::tests::long_mode_cpu;
    use crate::interp::LocalApicPort;

    fn cpu() -> Interpreter {
        long_mode_cpu(&[0x90])
    }

    #[test]
    fn mtrrs_read_back_and_refuse_reserved_types_and_bits() {
        let mut c = cpu();
        assert_eq!(read(&mut c, index::MTRRCAP), Some(MTRRCAP));
        assert_eq!(write(&mut c, index::MTRR_DEF_TYPE, 0xc06), Some(()));
        assert_eq!(read(&mut c, index::MTRR_DEF_TYPE), Some(0xc06));
        assert_eq!(write(&mut c, index::MTRR_DEF_TYPE, 0xc02), None, "type 2 is reserved");
        assert_eq!(write(&mut c, index::MTRR_DEF_TYPE, 0x1006), None, "reserved bit");
        assert_eq!(write(&mut c, 0x26f, 0x0505_0505_0505_0505), Some(()));
        assert_eq!(read(&mut c, 0x26f), Some(0x0505_0505_0505_0505));
        assert_eq!(write(&mut c, 0x26f, 0x0705_0505_0505_0505), None);
        assert_eq!(read(&mut c, 0x260), None, "not an MTRR");
        assert_eq!(write(&mut c, 0x201, 0xc000_0800), Some(()), "mask with the valid bit");
        assert_eq!(write(&mut c, 0x200, 1 << 45), None, "above the physical address width");
        assert_eq!(write(&mut c, index::PAT, 0x0007_0406_0007_0406), Some(()));
        assert_eq!(write(&mut c, index::PAT, 0x0007_0406_0007_0402), None, "PAT type 2");
    }

    #[test]
    fn firmware_mtrrs_uncache_the_pci_hole() {
        let mut m = crate::cpu::Msrs::default();
        m.set_firmware_mtrrs(0xc000_0000);
        assert_eq!(m.mtrr_def_type, 0xc06);
        assert_eq!(m.mtrr_var[0], 0xc000_0000);
        assert_eq!(m.mtrr_var[1], 0xff_c000_0800);
        assert_eq!(m.mtrr_fixed[2], 0, "the VGA window is uncached");
    }

    #[test]
    fn machine_check_banks_take_only_what_hardware_takes() {
        let mut c = cpu();
        assert_eq!(read(&mut c, index::MCG_CAP), Some(MCE_BANKS as u64 | 1 << 8));
        assert_eq!(write(&mut c, index::MCG_CTL, u64::MAX), Some(()));
        assert_eq!(write(&mut c, index::MCG_CTL, 5), None);
        let bank9 = index::MC0_CTL + 4 * 9;
        assert_eq!(write(&mut c, bank9, u64::MAX), Some(()));
        assert_eq!(read(&mut c, bank9), Some(u64::MAX));
        assert_eq!(write(&mut c, bank9 + 1, 0), Some(()));
        assert_eq!(write(&mut c, bank9 + 1, 1), None, "no software error injection");
        assert_eq!(read(&mut c, bank9 + 2), Some(0));
        assert_eq!(read(&mut c, bank9 + 4), None, "only ten banks");
    }

    #[test]
    fn arch_capabilities_declares_no_speculation_bugs() {
        let mut c = cpu();
        let caps = read(&mut c, index::ARCH_CAPABILITIES).unwrap();
        assert_ne!(caps & 1, 0, "RDCL_NO: no Meltdown, so no KPTI");
        assert_ne!(caps & 1 << 5, 0, "MDS_NO");
        assert_eq!(write(&mut c, index::ARCH_CAPABILITIES, 0), None, "read-only");
        let (_, _, _, edx) = crate::interp::cpuid::cpuid(7, 0, Default::default());
        assert_ne!(edx & 1 << 29, 0);
    }

    /// A local APIC that records what the CPU tells it.
    #[derive(Default)]
    struct FakeApic {
        deadline: Mutex<Option<u64>>,
        tpr: Mutex<u8>,
    }

    impl LocalApicPort for Arc<FakeApic> {
        fn tpr_cr8(&self) -> u8 {
            *self.tpr.lock().unwrap()
        }
        fn set_tpr_cr8(&self, value: u8) {
            *self.tpr.lock().unwrap() = value;
        }
        fn set_tsc_deadline_ns(&self, ns: Option<u64>) {
            *self.deadline.lock().unwrap() = ns;
        }
        fn tsc_deadline_ns(&self) -> Option<u64> {
            *self.deadline.lock().unwrap()
        }
    }

    #[test]
    fn tsc_counts_the_machine_clock_and_arms_the_apic_deadline() {
        let clock = ManualClock::new(0);
        clock.advance_ns(5_000);
        let apic = Arc::new(FakeApic::default());
        let mut c = cpu();
        c.set_clock(clock.clone());
        assert_eq!(write(&mut c, index::TSC, 1_000_000), Some(()));
        clock.advance_ns(250);
        assert_eq!(read(&mut c, index::TSC), Some(1_000_250));
        // Without an APIC the deadline MSR is inert.
        assert_eq!(write(&mut c, index::TSC_DEADLINE, 2_000_000), Some(()));
        assert_eq!(read(&mut c, index::TSC_DEADLINE), Some(0));
        c.set_local_apic(Box::new(apic.clone()));
        assert_eq!(write(&mut c, index::TSC_DEADLINE, 2_000_000), Some(()));
        // 999,750 TSC ticks ahead of now (clock 5,250 ns).
        assert_eq!(*apic.deadline.lock().unwrap(), Some(5_250 + 999_750));
        assert_eq!(read(&mut c, index::TSC_DEADLINE), Some(2_000_000));
        // A deadline in the past fires at once; zero disarms.
        assert_eq!(write(&mut c, index::TSC_DEADLINE, 10), Some(()));
        assert_eq!(*apic.deadline.lock().unwrap(), Some(5_250));
        assert_eq!(write(&mut c, index::TSC_DEADLINE, 0), Some(()));
        assert_eq!(*apic.deadline.lock().unwrap(), None);
        let platform_ecx = |c: &Interpreter| {
            let p = crate::interp::cpuid::Platform { apic: true, tsc_deadline: c.local_apic.is_some(), ..Default::default() };
            crate::interp::cpuid::cpuid(1, 0, p).2
        };
        assert_ne!(platform_ecx(&c) & 1 << 24, 0, "TSC-deadline advertised with an APIC port");
    }

    #[test]
    fn cr8_is_the_apic_tpr() {
        use iced_x86::code_asm::*;
        let mut a = CodeAssembler::new(64).unwrap();
        a.mov(rax, 9u64).unwrap();
        a.mov(cr8, rax).unwrap();
        a.mov(rbx, cr8).unwrap();
        let code = a.assemble(0x1_0000).unwrap();
        let apic = Arc::new(FakeApic::default());
        let mut c = long_mode_cpu(&code);
        c.set_local_apic(Box::new(apic.clone()));
        for _ in 0..3 {
            c.step();
        }
        assert_eq!(*apic.tpr.lock().unwrap(), 9);
        *apic.tpr.lock().unwrap() = 4; // the guest wrote the TPR through MMIO
        c.s.rip = 0x1_0000 + code.len() as u64 - 4; // mov rbx, cr8 again
        c.step();
        assert_eq!(c.s.gpr[reg::RBX], 4);
    }
}
