//! The PC physical address map, as QEMU's i440FX `pc` machine lays it out.
//!
//! ```text
//! 0x0000_0000 .. 0x0009_fc00   conventional RAM
//! 0x0009_fc00 .. 0x000a_0000   EBDA (reserved)
//! 0x000a_0000 .. 0x000c_0000   VGA window
//! 0x000c_0000 .. 0x000e_0000   option ROMs
//! 0x000e_0000 .. 0x0010_0000   BIOS area (last 128 KiB of the firmware)
//! 0x0010_0000 .. low_ram_end   extended RAM (low_ram_end <= 3 GiB)
//! 0xc000_0000 .. 0xfec0_0000   PCI hole (32-bit MMIO BARs)
//! 0xfec0_0000                  IOAPIC
//! 0xfee0_0000                  local APIC
//! 4 GiB - firmware size .. 4 GiB  firmware, where the reset vector lies
//! 0x1_0000_0000 ..             RAM above 4 GiB, when the guest has more than 3 GiB
//! ```

/// Where RAM stops below 4 GiB and the PCI hole begins (QEMU's i440FX with
/// gigabyte alignment).
pub const PCI_HOLE_START: u64 = 0xc000_0000;
/// Where RAM resumes above the hole.
pub const HIGH_RAM_START: u64 = 1 << 32;
/// Start of the extended BIOS data area.
pub const EBDA_START: u64 = 0x9_fc00;
/// The VGA window.
pub const VGA_START: u64 = 0xa_0000;
/// The legacy BIOS area, an alias of the firmware's last 128 KiB.
pub const BIOS_AREA_START: u64 = 0xe_0000;
/// Size of the legacy BIOS area.
pub const BIOS_AREA_SIZE: u64 = 0x2_0000;
/// First byte above the first MiB.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// The IOAPIC's MMIO page.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// The local APIC's MMIO page.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// Smallest guest accepted: firmware and the kernel need at least this.
pub const MIN_RAM_SIZE: u64 = 2 << 20;

/// One contiguous run of guest RAM and where it lies in the host mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRegion {
    /// Guest-physical start.
    pub guest_start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Offset of `guest_start` in the single host RAM mapping.
    pub host_offset: u64,
}

impl RamRegion {
    /// First guest-physical address past the region.
    pub fn guest_end(&self) -> u64 {
        self.guest_start + self.len
    }
}

/// Splits `ram_size` bytes of RAM around the PCI hole.
pub fn ram_regions(ram_size: u64) -> Vec<RamRegion> {
    let low = ram_size.min(PCI_HOLE_START);
    let mut regions = vec![RamRegion { guest_start: 0, len: low, host_offset: 0 }];
    if ram_size > low {
        regions.push(RamRegion { guest_start: HIGH_RAM_START, len: ram_size - low, host_offset: low });
    }
    regions
}

/// The kind of an E820 map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Kind {
    /// Usable RAM.
    Ram = 1,
    /// Reserved: firmware, EBDA, MMIO.
    Reserved = 2,
    /// ACPI tables, reclaimable after the OS has read them.
    Acpi = 3,
}

/// One entry of the BIOS E820 memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range holds.
    pub kind: E820Kind,
}

/// The E820 map a direct kernel boot reports, as QEMU's firmware would:
/// conventional memory up to the EBDA, the BIOS area reserved, extended
/// memory, and RAM above 4 GiB.
pub fn e820_map(ram_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry { addr: 0, size: EBDA_START, kind: E820Kind::Ram },
        E820Entry { addr: EBDA_START, size: VGA_START - EBDA_START, kind: E820Kind::Reserved },
        E820Entry { addr: BIOS_AREA_START, size: BIOS_AREA_SIZE, kind: E820Kind::Reserved },
    ];
    for r in ram_regions(ram_size) {
        let start = r.guest_start.max(HIGH_MEMORY_START);
        if r.guest_end() > start {
            map.push(E820Entry { addr: start, size: r.guest_end() - start, kind: E820Kind::Ram });
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_region() {
        assert_eq!(ram_regions(512 << 20), vec![RamRegion { guest_start: 0, len: 512 << 20, host_offset: 0 }]);
    }

    #[test]
    fn large_guest_splits_around_pci_hole() {
        let r = ram_regions(6 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].len, PCI_HOLE_START);
        assert_eq!(r[1].guest_start, HIGH_RAM_START);
        assert_eq!(r[1].len, (6 << 30) - PCI_HOLE_START);
        assert_eq!(r[1].host_offset, PCI_HOLE_START);
    }

    #[test]
    fn e820_reserves_ebda_and_bios_area() {
        let m = e820_map(128 << 20);
        assert_eq!(m[0], E820Entry { addr: 0, size: 0x9fc00, kind: E820Kind::Ram });
        assert_eq!(m[1].kind, E820Kind::Reserved);
        assert_eq!(m[2], E820Entry { addr: 0xe0000, size: 0x20000, kind: E820Kind::Reserved });
        assert_eq!(m[3], E820Entry { addr: 1 << 20, size: (127 << 20), kind: E820Kind::Ram });
        assert_eq!(m.len(), 4);
        let big = e820_map(5 << 30);
        assert_eq!(big.last().unwrap(), &E820Entry { addr: 1 << 32, size: 2 << 30, kind: E820Kind::Ram });
    }
}
