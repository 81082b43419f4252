//! popek's PC devices: the legacy ISA and chipset hardware a PC guest (SeaBIOS,
//! Linux, test ROMs) expects, each modelled from its datasheet and reachable as
//! an [`emu_core::BusDevice`] on the port-I/O bus.
//!
//! | Device | Type | Ports (insert at) | IRQ |
//! |---|---|---|---|
//! | 16550A UART (COM1) | [`Serial`] | 0x3F8, len 8 | 4 |
//! | 8259A master/slave PIC + ELCR | [`DualPic`] | 0x20 len 2, 0xA0 len 2, 0x4D0 len 2 | (INTR) |
//! | 8254 PIT + system control port B | [`Pit`] | 0x40 len 4, 0x61 len 1 | 0 |
//! | MC146818 RTC + CMOS NVRAM | [`Cmos`] | 0x70, len 2 | 8 |
//! | i8042 PS/2 controller | [`I8042`] | 0x60 len 1, 0x64 len 1 | 1, 12 |
//! | System control port A (A20, fast reset) | [`Port92`] | 0x92, len 1 | |
//! | POST code port | [`PostCode`] | 0x80, len 1 | |
//! | QEMU isa-debug-exit | [`DebugExit`] | 0xF4, len 4 | |
//! | QEMU isa-debugcon | [`DebugCon`] | 0x402, len 1 | |
//! | PCI configuration mechanism #1 | [`PciConfigIo`] | 0xCF8 len 1, 0xCFA len 2, 0xCFC len 4 | |
//! | PIIX3 reset control register | [`ResetControl`] | 0xCF9, len 1 | |
//! | ACPI PM1a event/control + PM timer | [`AcpiPm`] | 0x600, len 12 | SCI |
//! | QEMU fw_cfg (selector + data, DMA) | [`FwCfg`] | 0x510 len 2, 0x514 len 8 | |
//!
//! On the MMIO bus, for the software CPU backends (KVM has its own irqchip):
//!
//! | Device | Type | Address (insert at) | Notes |
//! |---|---|---|---|
//! | 82093AA I/O APIC, 24 pins | [`IoApic`] | 0xFEC00000, len 0x1000 | GSIs via [`IoApicIrqLine`] |
//! | Local APIC (xAPIC) | [`LapicMmio`] over a [`SharedLapic`] | 0xFEE00000, len 0x1000 | see [`lapic`] for lock order |
//! | HPET, 3 comparators | [`Hpet`] | 0xFED00000, len 0x400 | legacy IRQ0/IRQ8 or GSIs 2, 20-23; see [`hpet`] |
//!
//! The PCI bus behind [`PciConfigIo`] holds the i440FX host bridge at
//! 00:00.0 and the PIIX3 PCI-to-ISA bridge at 00:01.0 ([`PciBus::pc`]).
//!
//! # Port layout around 0xCF8
//!
//! The reset control register 0xCF9 lies inside the dword CONFIG_ADDRESS
//! register 0xCF8-0xCFB. A [`emu_core::Bus`] dispatches an access by its
//! first port and rejects overlapping ranges, so [`PciConfigIo`] is inserted
//! three times ([`PCI_CONFIG_IO_RANGES`]): at 0xCF8 (len 1, which still
//! receives the dword CONFIG_ADDRESS accesses that start there), 0xCFA (len 2,
//! byte/word accesses that mechanism #1 ignores) and 0xCFC (len 4,
//! CONFIG_DATA), leaving 0xCF9 to [`ResetControl`]. This is the same split
//! QEMU makes with an overlapping, higher-priority region for 0xCF9.
//!
//! Devices that live at fixed ports decode `base + offset` rather than the
//! offset alone, so one object can be inserted at several ranges (the PIC,
//! PIT + port 0x61, i8042, PCI); such devices must be inserted at the ports
//! listed above. Multi-byte accesses to 8-bit register files are split into
//! byte accesses at consecutive ports, as the ISA bus does, unless a device's
//! docs say otherwise; nothing a guest writes can make a device panic.

pub mod acpi_pm;
pub mod cmos;
pub mod debug_exit;
pub mod debugcon;
pub mod fw_cfg;
pub mod hpet;
pub mod i8042;
pub mod ioapic;
pub mod lapic;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod port92;
pub mod post;
pub mod reset;
pub mod serial;

pub use acpi_pm::AcpiPm;
pub use cmos::{Cmos, CmosMemoryLayout};
pub use debug_exit::DebugExit;
pub use debugcon::DebugCon;
pub use fw_cfg::{e820_file, AllocZone, FwCfg, TableLoader};
pub use hpet::{Hpet, HpetLegacyGate};
pub use i8042::I8042;
pub use ioapic::{IoApic, IoApicIrqLine};
pub use lapic::{Lapic, LapicMmio, PendingEois, SharedLapic};
pub use pci::{
    BarKind, ConfigSpace, I440fxHostBridge, PciAddress, PciBus, PciConfigIo, PciDevice,
    Piix3IsaBridge, SharedPciDevice, PCI_CONFIG_IO_RANGES,
};
pub use pic::{DualPic, PicIrqLine};
pub use pit::Pit;
pub use port92::Port92;
pub use post::PostCode;
pub use reset::ResetControl;
pub use serial::Serial;

/// Errors from building and wiring devices. Guest accesses never fail: a
/// device ignores what it does not understand.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A PCI device number above 31 or function number above 7.
    #[error("PCI address {bus:02x}:{device:02x}.{function} is out of range")]
    InvalidPciAddress { bus: u8, device: u8, function: u8 },
    /// Two devices at the same bus/device/function.
    #[error("PCI address {0} is already occupied")]
    PciSlotOccupied(PciAddress),
    /// A BAR index out of range, a size that is not a power of two, or one
    /// too small or too large for its kind.
    #[error("BAR {index} of size {size:#x} is invalid")]
    InvalidBar { index: usize, size: u64 },
    /// A fw_cfg file name that is empty, longer than 55 bytes or has a NUL.
    #[error("fw_cfg file name {0:?} is empty, longer than 55 bytes or contains NUL")]
    FwCfgFileName(String),
    /// A second fw_cfg file with the same name.
    #[error("fw_cfg file {0:?} already exists")]
    FwCfgDuplicateFile(String),
    /// Every fw_cfg file selector (0x20-0x3fff) is taken.
    #[error("No fw_cfg file selectors left")]
    FwCfgTooManyFiles,
    /// A fw_cfg selector that [`FwCfg::add_item`] may not set: the file
    /// directory, the file range, or one with the write-channel bit.
    #[error("fw_cfg selector {0:#06x} is reserved")]
    FwCfgReservedSelector(u16),
    /// A fw_cfg item of 4 GiB or more.
    #[error("fw_cfg item of {0} bytes is too large")]
    FwCfgItemTooLarge(usize),
    /// A table-loader ALLOCATE alignment that is not a power of two.
    #[error("table-loader alignment {0} is not a power of two")]
    TableLoaderAlignment(u32),
    /// A table-loader ADD_POINTER size other than 1, 2, 4 or 8.
    #[error("table-loader pointer size {0} is not 1, 2, 4 or 8")]
    TableLoaderPointerSize(u8),
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Locks a mutex, recovering the data if a previous holder panicked: device
/// state is plain data and a poisoned lock must not take the machine down.
pub(crate) fn lock<T: ?Sized>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Test helpers shared by the device tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A writer whose bytes the test can inspect after handing it away.
    #[derive(Clone, Default)]
    pub struct SharedBuffer(pub Arc<Mutex<Vec<u8>>>);

    impl SharedBuffer {
        pub fn contents(&self) -> Vec<u8> {
            super::lock(&self.0).clone()
        }
    }

    impl Write for SharedBuffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            super::lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
