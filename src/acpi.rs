//! ACPI tables for direct kernel boot, built with rust-vmm's `acpi_tables`,
//! so that a Linux guest finds the machine without a firmware:
//!
//! * RSDP and XSDT (ACPI 2.0+: the kernel takes the XSDT).
//! * FADT: the PIIX4-style PM block at [`acpi_pm::ACPI_PM_BASE`] (PM1a
//!   event/control, the 3.58 MHz PM timer), the SCI, the 0xCF9 reset
//!   register and the CMOS century byte; FACS beside it.
//! * MADT: one local APIC, the IOAPIC with ISA IRQs on the same-numbered
//!   pins (as KVM's default routing has them), the SCI's level-triggered
//!   override and LINT1 as NMI.
//! * HPET: the event timer block at [`HPET_BASE`], where the machine has
//!   one (the software CPU's; under KVM the in-kernel PIT could not be
//!   gated by it).
//! * DSDT: `\_S5` (so `poweroff` writes SLP_TYP|SLP_EN to PM1a_CNT, which
//!   ends the run with status 0) and the devices a PC has that the OS
//!   cannot probe: the PCI root bridge with its windows, and under it the
//!   ISA bridge with the keyboard controller, COM1, the RTC and the HPET.
//!
//! The crate's MADT builder cannot set the PCAT_COMPAT flag or express x86
//! interrupt source overrides and local-APIC NMI entries, so the MADT and
//! the HPET table are laid out here over its generic [`Sdt`]. When
//! firmware boots the guest (`--bios`), the firmware builds its own tables.

use acpi_tables::aml;
use acpi_tables::{Aml, AmlSink};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::sdt::Sdt;
use acpi_tables::{facs::FACS, rsdp::Rsdp, xsdt::XSDT};
use devices::acpi_pm;
use emu_core::layout;
use emu_core::{GuestMemory, MemoryError};

/// Where the RSDP goes: the start of the BIOS area, where Linux also scans.
pub const RSDP_ADDR: u64 = layout::BIOS_AREA_START;
const XSDT_ADDR: u64 = RSDP_ADDR + 0x40;
const FACS_ADDR: u64 = RSDP_ADDR + 0xc0; // 64-byte aligned, as the spec requires
const FADT_ADDR: u64 = RSDP_ADDR + 0x100;
const MADT_ADDR: u64 = RSDP_ADDR + 0x300;
const HPET_TABLE_ADDR: u64 = RSDP_ADDR + 0x400;
const DSDT_ADDR: u64 = RSDP_ADDR + 0x1000;
/// Room for the DSDT before whatever follows the tables.
const DSDT_MAX_LEN: usize = 0x2000;

const OEM_ID: [u8; 6] = *b"POPEK ";
const OEM_TABLE_ID: [u8; 8] = *b"POPEKPC ";
const OEM_REVISION: u32 = 1;

/// The IRQ the FADT names as the SCI, level-triggered as on PIIX4.
pub const SCI_IRQ: u8 = acpi_pm::SCI_IRQ;
/// The PIIX3 reset control register, the FADT's RESET_REG.
pub const RESET_PORT: u16 = 0xcf9;
/// The HPET's register block.
pub const HPET_BASE: u32 = devices::hpet::HPET_BASE as u32;
/// The HPET's General Capabilities ID low half as the HPET table repeats
/// it: vendor 0x8086, legacy replacement capable, 64-bit counter, three
/// comparators, revision 1 (QEMU's value).
pub const HPET_BLOCK_ID: u32 = devices::hpet::HPET_CAPABILITIES as u32;

/// The 8-bit sum of `bytes`.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

fn aml_bytes(a: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    a.to_aml_bytes(&mut v);
    v
}

fn io_gas(port: u16, bits: u8) -> GAS {
    let size = match bits {
        8 => AccessSize::ByteAccess,
        16 => AccessSize::WordAccess,
        _ => AccessSize::DwordAccess,
    };
    GAS::new(AddressSpace::SystemIo, bits, 0, size, u64::from(port))
}

fn fadt() -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .firmware_ctrl_32(FACS_ADDR as u32)
        // The 32- and 64-bit fields are exclusive: the builder keeps one.
        .dsdt_64(DSDT_ADDR)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        // No fixed power or sleep button: the DSDT has none either.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup);
    f.sci_int = u16::from(SCI_IRQ).into();
    // No SMI_CMD: the system is always in ACPI mode.
    f.pm1a_evt_blk = u32::from(acpi_pm::PM1A_EVT_BLK).into();
    f.pm1a_cnt_blk = u32::from(acpi_pm::PM1A_CNT_BLK).into();
    f.pm_tmr_blk = u32::from(acpi_pm::PM_TMR_BLK).into();
    f.pm1_evt_len = 4;
    f.pm1_cnt_len = 2;
    f.pm_tmr_len = acpi_pm::PM_TMR_LEN;
    // C2 and C3 unsupported.
    f.p_lvl2_lat = 0x0fff.into();
    f.p_lvl3_lat = 0x0fff.into();
    f.century = 0x32;
    // IAPC_BOOT_ARCH: legacy devices, an 8042.
    f.iapc_boot_arch = 0x3.into();
    f.reset_reg = io_gas(RESET_PORT, 8);
    f.reset_value = 0x06; // hard reset through 0xCF9
    f.x_pm1a_evt_blk = io_gas(acpi_pm::PM1A_EVT_BLK, 32);
    f.x_pm1a_cnt_blk = io_gas(acpi_pm::PM1A_CNT_BLK, 16);
    f.x_pm_tmr_blk = io_gas(acpi_pm::PM_TMR_BLK, 32);
    aml_bytes(&f.finalize())
}

/// An ISA `IRQNoFlags` resource descriptor (edge, active high), as QEMU's
/// DSDT gives legacy devices; the crate only has the extended form.
struct IrqNoFlags(u8);

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let mask = 1u16 << (self.0 & 15);
        sink.byte(0x22);
        sink.word(mask);
    }
}

/// An ISA device with a fixed `_HID`, `_UID` and resources.
fn isa_device(name: &str, hid: &str, uid: u8, resources: Vec<&dyn Aml>) -> Vec<u8> {
    let hid = aml::EISAName::new(hid);
    let crs = aml::ResourceTemplate::new(resources);
    aml_bytes(&aml::Device::new(
        name.into(),
        vec![
            &aml::Name::new("_HID".into(), &hid),
            &aml::Name::new("_UID".into(), &uid),
            &aml::Name::new("_CRS".into(), &crs),
        ],
    ))
}

/// The DSDT's AML body.
fn dsdt_body(platform: Platform) -> Vec<u8> {
    let io = |base: u16, len: u8| aml::IO::new(base, base, 1, len);
    let kbd = isa_device("KBD_", "PNP0303", 0, vec![&io(0x60, 1), &io(0x64, 1), &IrqNoFlags(1)]);
    let mou = isa_device("MOU_", "PNP0F13", 0, vec![&IrqNoFlags(12)]);
    let com1 = isa_device("COM1", "PNP0501", 1, vec![&io(0x3f8, 8), &IrqNoFlags(4)]);
    let rtc = isa_device("RTC_", "PNP0B00", 0, vec![&io(0x70, 8), &IrqNoFlags(8)]);
    let mut isa_children: Vec<u8> = [kbd, mou, com1, rtc].concat();
    if platform.hpet {
        let resources = aml::Memory32Fixed::new(false, HPET_BASE, devices::hpet::HPET_LEN as u32);
        isa_children.extend(isa_device("HPET", "PNP0103", 0, vec![&resources]));
    }
    let isa_children = RawAml(&isa_children);
    // The PIIX3's ISA bridge is PCI function 01.0.
    let isa_adr = aml::Name::new("_ADR".into(), &0x0001_0000u32);
    let isa = aml::Device::new("ISA_".into(), vec![&isa_adr, &isa_children]);

    let bus = aml::AddressSpace::new_bus_number(0u16, 0xffu16);
    let cfg_ports = aml::IO::new(0xcf8, 0xcf8, 1, 8);
    let io_low = aml::AddressSpace::new_io(0u16, 0x0cf7u16, None);
    let io_high = aml::AddressSpace::new_io(0x0d00u16, 0xffffu16, None);
    let vga = aml::AddressSpace::new_memory(aml::AddressSpaceCacheable::Cacheable, true, 0x000a_0000u32, 0x000b_ffffu32, None);
    let hole = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::NotCacheable,
        true,
        layout::PCI_HOLE_START as u32,
        0xfebf_ffffu32,
        None,
    );
    let crs = aml::ResourceTemplate::new(vec![&bus, &cfg_ports, &io_low, &io_high, &vga, &hole]);
    let pci_hid = aml::EISAName::new("PNP0A03");
    let hid = aml::Name::new("_HID".into(), &pci_hid);
    let adr = aml::Name::new("_ADR".into(), &aml::ZERO);
    let uid = aml::Name::new("_UID".into(), &aml::ZERO);
    let crs = aml::Name::new("_CRS".into(), &crs);
    let pci0 = aml::Device::new("PCI0".into(), vec![&hid, &adr, &uid, &crs, &isa]);
    let sb = aml::Scope::new("\\_SB_".into(), vec![&pci0]);

    let s5_typ = acpi_pm::SLP_TYP_S5 as u8;
    let s5_package = aml::Package::new(vec![&s5_typ, &aml::ZERO, &aml::ZERO, &aml::ZERO]);
    let s5 = aml::Name::new("_S5_".into(), &s5_package);
    let mut body = aml_bytes(&sb);
    s5.to_aml_bytes(&mut body);
    body
}

/// Bytes that are already AML.
struct RawAml<'a>(&'a [u8]);

impl Aml for RawAml<'_> {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(self.0);
    }
}

fn dsdt(platform: Platform) -> Vec<u8> {
    let mut t = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    t.append_slice(&dsdt_body(platform));
    t.as_slice().to_vec()
}

fn madt() -> Vec<u8> {
    const PCAT_COMPAT: u32 = 1;
    let mut t = Sdt::new(*b"APIC", 44, 3, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    t.write_u32(36, layout::LAPIC_START as u32);
    t.write_u32(40, PCAT_COMPAT);
    // Processor local APIC: UID 0, APIC ID 0, enabled.
    t.append_slice(&[0, 8, 0, 0, 1, 0, 0, 0]);
    // IOAPIC: ID 0 at its usual address, GSIs from 0.
    let mut ioapic = vec![1, 12, 0, 0];
    ioapic.extend_from_slice(&(layout::IOAPIC_START as u32).to_le_bytes());
    ioapic.extend_from_slice(&0u32.to_le_bytes());
    t.append_slice(&ioapic);
    // The SCI is active-high and level-triggered (flags 0x000d).
    let mut sci = vec![2, 10, 0, SCI_IRQ];
    sci.extend_from_slice(&u32::from(SCI_IRQ).to_le_bytes());
    sci.extend_from_slice(&0x000du16.to_le_bytes());
    t.append_slice(&sci);
    // LINT1 of every local APIC is the NMI input.
    t.append_slice(&[4, 6, 0xff, 0, 0, 1]);
    t.as_slice().to_vec()
}

fn hpet_table() -> Vec<u8> {
    let mut t = Sdt::new(*b"HPET", 36, 1, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let mut body = HPET_BLOCK_ID.to_le_bytes().to_vec();
    // Base address: system memory, 64-bit register width.
    body.extend_from_slice(&[0, 64, 0, 0]);
    body.extend_from_slice(&u64::from(HPET_BASE).to_le_bytes());
    body.push(0); // HPET number
    body.extend_from_slice(&0u16.to_le_bytes()); // minimum periodic tick
    body.push(0); // no page protection
    t.append_slice(&body);
    t.as_slice().to_vec()
}

/// What the tables describe beyond the fixed PC devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Platform {
    /// The machine has an HPET at [`HPET_BASE`].
    pub hpet: bool,
}

/// Writes RSDP, XSDT, FADT, FACS, DSDT, MADT and (with an HPET) the HPET
/// table into the BIOS area.
pub fn write_tables(mem: &GuestMemory, platform: Platform) -> Result<(), MemoryError> {
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(FADT_ADDR);
    xsdt.add_entry(MADT_ADDR);
    if platform.hpet {
        xsdt.add_entry(HPET_TABLE_ADDR);
        mem.write(HPET_TABLE_ADDR, &hpet_table())?;
    }
    let dsdt = dsdt(platform);
    debug_assert!(dsdt.len() <= DSDT_MAX_LEN);
    mem.write(RSDP_ADDR, &aml_bytes(&Rsdp::new(OEM_ID, XSDT_ADDR)))?;
    mem.write(XSDT_ADDR, &aml_bytes(&xsdt))?;
    mem.write(FACS_ADDR, &aml_bytes(&FACS::new()))?;
    mem.write(FADT_ADDR, &fadt())?;
    mem.write(DSDT_ADDR, &dsdt)?;
    mem.write(MADT_ADDR, &madt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_at(mem: &GuestMemory, addr: u64) -> Vec<u8> {
        let len = mem.read_u32(addr + 4).unwrap() as usize;
        let mut t = vec![0u8; len];
        mem.read(addr, &mut t).unwrap();
        assert_eq!(checksum(&t), 0, "checksum of {:?}", String::from_utf8_lossy(&t[..4]));
        t
    }

    fn u32_at(t: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(t[off..off + 4].try_into().unwrap())
    }

    fn written() -> GuestMemory {
        let mem = GuestMemory::new(16 << 20).unwrap();
        write_tables(&mem, Platform { hpet: true }).unwrap();
        mem
    }

    #[test]
    fn tables_are_linked_and_checksummed() {
        let mem = written();
        let mut rsdp = [0u8; 36];
        mem.read(RSDP_ADDR, &mut rsdp).unwrap();
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(rsdp[15], 2, "ACPI 2.0+ RSDP");
        assert_eq!(checksum(&rsdp[..20]), 0);
        assert_eq!(checksum(&rsdp), 0);
        let xsdt_addr = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        let xsdt = table_at(&mem, xsdt_addr);
        let entries: Vec<u64> = xsdt[36..].chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        let sigs: Vec<Vec<u8>> = entries.iter().map(|&a| table_at(&mem, a)[..4].to_vec()).collect();
        assert_eq!(sigs, vec![b"FACP".to_vec(), b"APIC".to_vec(), b"HPET".to_vec()]);
    }

    #[test]
    fn fadt_names_the_pm_block_reset_register_and_dsdt() {
        let mem = written();
        let fadt = table_at(&mem, FADT_ADDR);
        assert_eq!(u32_at(&fadt, 36) as u64, FACS_ADDR);
        assert_eq!(FACS_ADDR % 64, 0);
        assert_eq!(u32_at(&fadt, 40), 0, "DSDT is given as X_DSDT only");
        assert_eq!(u16::from_le_bytes([fadt[46], fadt[47]]), u16::from(SCI_IRQ));
        assert_eq!(u32_at(&fadt, 56), u32::from(acpi_pm::PM1A_EVT_BLK));
        assert_eq!(u32_at(&fadt, 64), u32::from(acpi_pm::PM1A_CNT_BLK));
        assert_eq!(u32_at(&fadt, 76), u32::from(acpi_pm::PM_TMR_BLK));
        assert_eq!(fadt[91], acpi_pm::PM_TMR_LEN);
        assert_eq!(fadt[108], 0x32, "century");
        // RESET_REG: system I/O, 8 bits, byte access, at 0xCF9.
        assert_eq!(&fadt[116..120], &[1, 8, 0, 1]);
        assert_eq!(u64::from_le_bytes(fadt[120..128].try_into().unwrap()), u64::from(RESET_PORT));
        assert_eq!(fadt[128], 0x06);
        assert_eq!(u64::from_le_bytes(fadt[140..148].try_into().unwrap()), DSDT_ADDR);
        let facs = table_at_unchecked(&mem, FACS_ADDR, 64);
        assert_eq!(&facs[..4], b"FACS");
    }

    fn table_at_unchecked(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
        let mut t = vec![0u8; len];
        mem.read(addr, &mut t).unwrap();
        t
    }

    #[test]
    fn madt_lists_one_cpu_the_ioapic_the_sci_override_and_nmi() {
        let mem = written();
        let madt = table_at(&mem, MADT_ADDR);
        assert_eq!(u32_at(&madt, 36) as u64, layout::LAPIC_START);
        assert_eq!(u32_at(&madt, 40), 1, "PCAT_COMPAT");
        let mut types = Vec::new();
        let mut off = 44;
        while off < madt.len() {
            types.push(madt[off]);
            off += madt[off + 1] as usize;
        }
        assert_eq!(off, madt.len());
        assert_eq!(types, vec![0, 1, 2, 4]);
    }

    #[test]
    fn hpet_table_describes_the_block() {
        let mem = written();
        let hpet = table_at(&mem, HPET_TABLE_ADDR);
        assert_eq!(hpet.len(), 56);
        assert_eq!(u32_at(&hpet, 36), HPET_BLOCK_ID);
        assert_eq!(u64::from_le_bytes(hpet[44..52].try_into().unwrap()), u64::from(HPET_BASE));
    }

    #[test]
    fn dsdt_declares_power_off_and_the_pc_devices() {
        let mem = written();
        let dsdt = table_at(&mem, DSDT_ADDR);
        assert!(dsdt.len() <= DSDT_MAX_LEN);
        assert!(DSDT_ADDR + DSDT_MAX_LEN as u64 <= layout::BIOS_AREA_START + layout::BIOS_AREA_SIZE);
        for name in [b"_S5_", b"PCI0", b"ISA_", b"KBD_", b"MOU_", b"COM1", b"RTC_", b"HPET"] {
            assert!(dsdt.windows(4).any(|w| w == name), "{}", String::from_utf8_lossy(name));
        }
        // The \_S5 package: NameOp "_S5_" PackageOp, 4 elements, BytePrefix SLP_TYP.
        let at = dsdt.windows(4).position(|w| w == b"_S5_").unwrap();
        assert_eq!(dsdt[at + 4], 0x12);
        assert_eq!(&dsdt[at + 6..at + 9], &[4, 0x0a, acpi_pm::SLP_TYP_S5 as u8]);
    }

    #[test]
    fn without_an_hpet_neither_table_nor_device_names_one() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        write_tables(&mem, Platform { hpet: false }).unwrap();
        let xsdt = table_at(&mem, XSDT_ADDR);
        assert_eq!(xsdt.len(), 36 + 2 * 8);
        let dsdt = table_at(&mem, DSDT_ADDR);
        assert!(!dsdt.windows(4).any(|w| w == b"HPET"));
        assert!(dsdt.windows(4).any(|w| w == b"KBD_"));
    }

    #[test]
    fn irq_descriptor_sets_one_mask_bit() {
        assert_eq!(aml_bytes(&IrqNoFlags(12)), vec![0x22, 0x00, 0x10]);
        assert_eq!(aml_bytes(&IrqNoFlags(1)), vec![0x22, 0x02, 0x00]);
    }
}
