//! ACPI tables for direct kernel boot, so that a Linux guest finds the
//! local APIC and IOAPIC (MADT), the PM timer, the reset register and a way
//! to power off (FADT, and `\_S5` in the DSDT): `poweroff` then writes
//! SLP_TYP|SLP_EN to PM1a_CNT, which ends the run with status 0.
//!
//! Written by hand rather than with the `acpi_tables` crate: its 0.2 MADT
//! cannot set the PCAT_COMPAT flag or express x86 interrupt source
//! overrides and local-APIC NMI entries, which a PC with an 8259 needs.
//! When firmware boots the guest (`--bios`), the firmware builds its own.

use devices::acpi_pm;
use emu_core::layout;
use emu_core::{GuestMemory, MemoryError};

/// Where the RSDP goes: the start of the BIOS area, where Linux also scans.
pub const RSDP_ADDR: u64 = layout::BIOS_AREA_START;
const XSDT_ADDR: u64 = RSDP_ADDR + 0x40;
const RSDT_ADDR: u64 = RSDP_ADDR + 0x80;
const FACS_ADDR: u64 = RSDP_ADDR + 0xc0; // 64-byte aligned, as the spec requires
const FADT_ADDR: u64 = RSDP_ADDR + 0x100;
const DSDT_ADDR: u64 = RSDP_ADDR + 0x200;
const MADT_ADDR: u64 = RSDP_ADDR + 0x300;

const OEM_ID: &[u8; 6] = b"POPEK ";
const OEM_TABLE_ID: &[u8; 8] = b"POPEKPC ";

/// The IRQ the FADT names as the SCI, level-triggered as on PIIX4.
pub const SCI_IRQ: u8 = acpi_pm::SCI_IRQ;
/// The PIIX3 reset control register, the FADT's RESET_REG.
pub const RESET_PORT: u16 = 0xcf9;

/// The 8-bit sum of `bytes`.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

/// A system description table: the standard 36-byte header, then the body.
struct Table(Vec<u8>);

impl Table {
    fn new(signature: &[u8; 4], revision: u8) -> Self {
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(signature);
        b.extend_from_slice(&[0; 4]); // length, set in `finish`
        b.push(revision);
        b.push(0); // checksum, set in `finish`
        b.extend_from_slice(OEM_ID);
        b.extend_from_slice(OEM_TABLE_ID);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(b"POPK");
        b.extend_from_slice(&1u32.to_le_bytes());
        Table(b)
    }

    fn bytes(mut self, data: &[u8]) -> Self {
        self.0.extend_from_slice(data);
        self
    }

    fn u8(self, v: u8) -> Self {
        self.bytes(&[v])
    }

    fn u16(self, v: u16) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    fn u32(self, v: u32) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    fn u64(self, v: u64) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    /// A Generic Address Structure for an I/O port.
    fn io_gas(self, port: u16, bits: u8) -> Self {
        let access = match bits {
            8 => 1,
            16 => 2,
            _ => 3,
        };
        self.bytes(&[1, bits, 0, access]).u64(u64::from(port))
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[4..8].copy_from_slice(&len.to_le_bytes());
        self.0[9] = 0u8.wrapping_sub(checksum(&self.0));
        self.0
    }
}

fn fadt() -> Vec<u8> {
    // FADT flags: WBINVD works, C1 supported, no fixed power or sleep
    // button, RESET_REG supported.
    let flags: u32 = 1 | 1 << 2 | 1 << 4 | 1 << 5 | 1 << 10;
    Table::new(b"FACP", 3)
        .u32(FACS_ADDR as u32)
        .u32(DSDT_ADDR as u32)
        .u8(0) // reserved (INT_MODEL)
        .u8(0) // preferred PM profile: unspecified
        .u16(u16::from(SCI_IRQ))
        .u32(0) // SMI_CMD: none, so the system is always in ACPI mode
        .bytes(&[0, 0, 0, 0]) // ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
        .u32(u32::from(acpi_pm::PM1A_EVT_BLK))
        .u32(0)
        .u32(u32::from(acpi_pm::PM1A_CNT_BLK))
        .u32(0)
        .u32(0) // PM2_CNT
        .u32(u32::from(acpi_pm::PM_TMR_BLK))
        .u32(0) // GPE0
        .u32(0) // GPE1
        .bytes(&[4, 2, 0, 4, 0, 0, 0, 0]) // block lengths, GPE1_BASE, CST_CNT
        .u16(0x0fff) // P_LVL2_LAT: C2 unsupported
        .u16(0x0fff) // P_LVL3_LAT: C3 unsupported
        .u16(0)
        .u16(0)
        .bytes(&[0, 0, 0, 0]) // duty cycle, RTC alarms
        .u8(0x32) // CMOS century register
        .u16(0x3) // IAPC_BOOT_ARCH: legacy devices, an 8042
        .u8(0)
        .u32(flags)
        .io_gas(RESET_PORT, 8)
        .u8(0x06) // RESET_VALUE: hard reset through 0xCF9
        .bytes(&[0, 0, 0]) // reserved
        .u64(0) // X_FIRMWARE_CTRL: use the 32-bit field
        .u64(0) // X_DSDT: likewise
        .io_gas(acpi_pm::PM1A_EVT_BLK, 32)
        .bytes(&[0; 12])
        .io_gas(acpi_pm::PM1A_CNT_BLK, 16)
        .bytes(&[0; 12])
        .bytes(&[0; 12])
        .io_gas(acpi_pm::PM_TMR_BLK, 32)
        .bytes(&[0; 12])
        .bytes(&[0; 12])
        .finish()
}

/// The DSDT: just `Name (_S5, Package () { S5, 0, 0, 0 })`, which tells
/// the OS which SLP_TYP value powers the machine off.
fn dsdt() -> Vec<u8> {
    let s5 = acpi_pm::SLP_TYP_S5 as u8;
    // NameOp "_S5_" PackageOp PkgLength(7) NumElements(4) BytePrefix s5 Zero Zero Zero
    let aml = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x07, 0x04, 0x0a, s5, 0x00, 0x00, 0x00];
    Table::new(b"DSDT", 2).bytes(&aml).finish()
}

fn madt() -> Vec<u8> {
    const PCAT_COMPAT: u32 = 1;
    Table::new(b"APIC", 3)
        .u32(layout::LAPIC_START as u32)
        .u32(PCAT_COMPAT)
        // Processor local APIC: UID 0, APIC ID 0, enabled.
        .bytes(&[0, 8, 0, 0])
        .u32(1)
        // IOAPIC: ID 0 at its usual address, GSIs from 0. ISA IRQs map to
        // the same-numbered pins, as KVM's default routing does.
        .bytes(&[1, 12, 0, 0])
        .u32(layout::IOAPIC_START as u32)
        .u32(0)
        // The SCI is active-high and level-triggered.
        .bytes(&[2, 10, 0, SCI_IRQ])
        .u32(u32::from(SCI_IRQ))
        .u16(0x000d)
        // LINT1 of every local APIC is the NMI input.
        .bytes(&[4, 6, 0xff])
        .u16(0)
        .u8(1)
        .finish()
}

fn facs() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..4].copy_from_slice(b"FACS");
    f[4..8].copy_from_slice(&64u32.to_le_bytes());
    f[32] = 2; // version
    f
}

fn rsdp() -> Vec<u8> {
    let mut r = Vec::with_capacity(36);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0); // checksum over the first 20 bytes
    r.extend_from_slice(OEM_ID);
    r.push(2); // ACPI 2.0+: the XSDT is valid
    r.extend_from_slice(&(RSDT_ADDR as u32).to_le_bytes());
    r.extend_from_slice(&36u32.to_le_bytes());
    r.extend_from_slice(&XSDT_ADDR.to_le_bytes());
    r.push(0); // extended checksum
    r.extend_from_slice(&[0; 3]);
    r[8] = 0u8.wrapping_sub(checksum(&r[..20]));
    r[32] = 0u8.wrapping_sub(checksum(&r));
    r
}

/// Writes RSDP, XSDT, RSDT, FADT, FACS, DSDT and MADT into the BIOS area.
pub fn write_tables(mem: &GuestMemory) -> Result<(), MemoryError> {
    let tables = [FADT_ADDR, MADT_ADDR];
    let mut xsdt = Table::new(b"XSDT", 1);
    let mut rsdt = Table::new(b"RSDT", 1);
    for t in tables {
        xsdt = xsdt.u64(t);
        rsdt = rsdt.u32(t as u32);
    }
    mem.write(RSDP_ADDR, &rsdp())?;
    mem.write(XSDT_ADDR, &xsdt.finish())?;
    mem.write(RSDT_ADDR, &rsdt.finish())?;
    mem.write(FACS_ADDR, &facs())?;
    mem.write(FADT_ADDR, &fadt())?;
    mem.write(DSDT_ADDR, &dsdt())?;
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

    #[test]
    fn tables_are_linked_and_checksummed() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        write_tables(&mem).unwrap();
        let mut rsdp = [0u8; 36];
        mem.read(RSDP_ADDR, &mut rsdp).unwrap();
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(checksum(&rsdp[..20]), 0);
        assert_eq!(checksum(&rsdp), 0);
        let xsdt_addr = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        let xsdt = table_at(&mem, xsdt_addr);
        let entries: Vec<u64> = xsdt[36..].chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        let sigs: Vec<Vec<u8>> = entries.iter().map(|&a| table_at(&mem, a)[..4].to_vec()).collect();
        assert_eq!(sigs, vec![b"FACP".to_vec(), b"APIC".to_vec()]);
        table_at(&mem, RSDT_ADDR);

        let fadt = table_at(&mem, FADT_ADDR);
        assert_eq!(fadt.len(), 244);
        let dsdt_addr = u32::from_le_bytes(fadt[40..44].try_into().unwrap());
        let dsdt = table_at(&mem, u64::from(dsdt_addr));
        assert!(dsdt.windows(4).any(|w| w == b"_S5_"));
        assert_eq!(u32::from_le_bytes(fadt[64..68].try_into().unwrap()), u32::from(acpi_pm::PM1A_CNT_BLK));
        assert_eq!(u32::from_le_bytes(fadt[76..80].try_into().unwrap()), u32::from(acpi_pm::PM_TMR_BLK));
        assert_eq!(&fadt[116..120], &[1, 8, 0, 1]);
        assert_eq!(fadt[128], 0x06);
        let facs_addr = u32::from_le_bytes(fadt[36..40].try_into().unwrap());
        assert_eq!(facs_addr % 64, 0);
    }

    #[test]
    fn madt_lists_one_cpu_and_the_ioapic() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        write_tables(&mem).unwrap();
        let madt = table_at(&mem, MADT_ADDR);
        let mut types = Vec::new();
        let mut off = 44;
        while off < madt.len() {
            types.push(madt[off]);
            off += madt[off + 1] as usize;
        }
        assert_eq!(off, madt.len());
        assert_eq!(types, vec![0, 1, 2, 4]);
    }
}
