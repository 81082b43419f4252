//! The GDT and page tables a loader writes so the CPU can start directly in
//! protected or long mode, as Firecracker and QEMU's direct kernel boot do.

use emu_core::cpu::{cr0, efer};
use emu_core::{CpuState, DescriptorTable, GuestMemory, MemoryError, Segment};

/// The boot GDT (null, code, data, TSS), below the BIOS data area's users.
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// An empty IDT: the kernel installs its own before enabling interrupts.
pub const BOOT_IDT_ADDR: u64 = 0x520;
/// Selector of the boot code segment.
pub const BOOT_CS: u16 = 0x08;
/// Selector of the boot data segment.
pub const BOOT_DS: u16 = 0x10;
/// Selector of the boot TSS.
pub const BOOT_TSS: u16 = 0x18;
/// Identity-mapping page tables for long-mode entry.
pub const PML4_ADDR: u64 = 0x9000;
const PDPT_ADDR: u64 = 0xa000;
const PD_ADDR: u64 = 0xb000;

fn write_gdt(mem: &GuestMemory, code: &Segment, data: &Segment, tss: &Segment) -> Result<(), MemoryError> {
    let entries = [0, code.to_descriptor(), data.to_descriptor(), tss.to_descriptor()];
    for (i, e) in entries.iter().enumerate() {
        mem.write_u64(BOOT_GDT_ADDR + 8 * i as u64, *e)?;
    }
    mem.write_u64(BOOT_IDT_ADDR, 0)
}

fn boot_tss() -> Segment {
    Segment { base: 0, limit: 0xfffff, selector: BOOT_TSS, type_: 0xb, present: 1, ..Segment::default() }
}

fn flat_state(code: Segment, data: Segment) -> CpuState {
    let mut s = CpuState::reset();
    s.gpr = [0; 16];
    s.segs = [data, code, data, data, data, data];
    s.tr = boot_tss();
    s.gdtr = DescriptorTable { base: BOOT_GDT_ADDR, limit: 4 * 8 - 1 };
    s.idtr = DescriptorTable { base: BOOT_IDT_ADDR, limit: 7 };
    s.rflags = 0x2;
    // What firmware would have left: MTRRs on (Linux enables PAT only
    // then), the PCI hole uncached.
    s.msrs.set_firmware_mtrrs(emu_core::layout::PCI_HOLE_START);
    s
}

/// 32-bit protected mode, flat segments, paging off: the multiboot entry
/// state (and the Linux 32-bit protocol's).
pub fn protected_mode(mem: &GuestMemory) -> Result<CpuState, MemoryError> {
    let code = Segment::flat(BOOT_CS, true, false);
    let data = Segment::flat(BOOT_DS, false, false);
    write_gdt(mem, &code, &data, &boot_tss())?;
    let mut s = flat_state(code, data);
    s.cr0 = cr0::PE | cr0::ET;
    Ok(s)
}

/// 64-bit long mode with the first 1 GiB identity-mapped by 2 MiB pages:
/// the Linux 64-bit boot protocol's entry state.
pub fn long_mode(mem: &GuestMemory) -> Result<CpuState, MemoryError> {
    let code = Segment::flat(BOOT_CS, true, true);
    let data = Segment::flat(BOOT_DS, false, false);
    write_gdt(mem, &code, &data, &boot_tss())?;
    mem.write_u64(PML4_ADDR, PDPT_ADDR | 0x3)?;
    mem.write_u64(PDPT_ADDR, PD_ADDR | 0x3)?;
    for i in 0..512u64 {
        // Present, writable, 2 MiB page.
        mem.write_u64(PD_ADDR + i * 8, (i << 21) | 0x83)?;
    }
    let mut s = flat_state(code, data);
    s.cr0 = cr0::PE | cr0::ET | cr0::NE | cr0::PG;
    s.cr3 = PML4_ADDR;
    s.cr4 = 1 << 5; // PAE
    s.efer = efer::LME | efer::LMA;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_identity_maps_the_first_gigabyte() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        let s = long_mode(&mem).unwrap();
        assert_eq!(s.cr3, PML4_ADDR);
        assert_eq!(mem.read_u64(PML4_ADDR).unwrap() & !0xfff, PDPT_ADDR);
        assert_eq!(mem.read_u64(PD_ADDR + 8 * 511).unwrap(), (511 << 21) | 0x83);
        assert_eq!(mem.read_u64(BOOT_GDT_ADDR + 8).unwrap(), 0x00af_9b00_0000_ffff);
        assert!(s.long_mode());
    }

    #[test]
    fn protected_mode_is_flat_without_paging() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        let s = protected_mode(&mem).unwrap();
        assert_eq!(s.cr0 & cr0::PG, 0);
        assert_eq!(s.segs[emu_core::cpu::seg::CS].db, 1);
        assert_eq!(mem.read_u64(BOOT_GDT_ADDR + 16).unwrap(), 0x00cf_9300_0000_ffff);
    }
}
