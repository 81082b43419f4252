//! A PCI bus reached through configuration mechanism #1 (PCI Local Bus
//! Specification 3.0, section 3.2.2.3.2), as on the i440FX/PIIX3 chipset
//! QEMU's `pc` machine models.
//!
//! * CONFIG_ADDRESS (0xCF8, dword accesses only): bit 31 enable, bits 23-16
//!   bus, 15-11 device, 10-8 function, 7-2 register. Bits 30-24 and 1-0 are
//!   reserved and read as 0. Byte and word accesses to 0xCF8-0xCFB are not
//!   CONFIG_ADDRESS accesses: they pass through to the ISA bus, where nothing
//!   answers (reads are all ones). Linux's `pci_check_type1` writes a byte
//!   to 0xCFB before probing with dwords.
//! * CONFIG_DATA (0xCFC-0xCFF): byte, word or dword accesses to the
//!   selected register, at the byte lanes within the dword they address.
//!   With the enable bit clear, or an access that would cross the dword,
//!   reads are all ones and writes are dropped.
//! * Absent devices read all ones, so their vendor ID reads 0xFFFF.
//!
//! [`PciConfigIo`] must be inserted at the three ranges in
//! [`PCI_CONFIG_IO_RANGES`], leaving 0xCF9 to [`crate::ResetControl`]; see
//! the crate docs.

mod config;
mod host_bridge;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

pub use config::{regs, BarKind, ConfigSpace, CONFIG_SPACE_SIZE, HEADER_TYPE_MULTIFUNCTION};
pub use host_bridge::{I440fxHostBridge, Piix3IsaBridge};

use emu_core::BusDevice;

use crate::{Error, Result};

/// CONFIG_ADDRESS.
pub const PCI_CONFIG_ADDRESS_PORT: u64 = 0xcf8;
/// CONFIG_DATA.
pub const PCI_CONFIG_DATA_PORT: u64 = 0xcfc;
/// (base, len) of each range [`PciConfigIo`] is inserted at: 0xCF8 (the
/// dword CONFIG_ADDRESS, whose accesses start there), 0xCFA-0xCFB, and
/// CONFIG_DATA. 0xCF9 is the reset control register.
pub const PCI_CONFIG_IO_RANGES: [(u64, u64); 3] = [(0xcf8, 1), (0xcfa, 2), (0xcfc, 4)];

const CONFIG_ADDRESS_ENABLE: u32 = 1 << 31;
/// Enable, bus, device, function and register bits.
const CONFIG_ADDRESS_WRITABLE: u32 = 0x80ff_fffc;

/// A PCI function's configuration space, as the bus reaches it.
pub trait PciDevice: Send {
    /// Reads `data.len()` (1, 2 or 4) bytes at byte offset `reg` of the
    /// configuration space; the access never crosses a dword boundary.
    fn read_config(&mut self, reg: usize, data: &mut [u8]);
    /// Writes `data` at byte offset `reg`.
    fn write_config(&mut self, reg: usize, data: &[u8]);
}

/// A function shared between the bus and whoever else drives it.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// A bus/device/function address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    bus: u8,
    device: u8,
    function: u8,
}

impl PciAddress {
    /// The address `bus:device.function`; device 0-31, function 0-7.
    pub fn new(bus: u8, device: u8, function: u8) -> Result<Self> {
        if device > 31 || function > 7 {
            return Err(Error::InvalidPciAddress {
                bus,
                device,
                function,
            });
        }
        Ok(Self {
            bus,
            device,
            function,
        })
    }

    /// The bus number.
    pub fn bus(&self) -> u8 {
        self.bus
    }

    /// The device number.
    pub fn device(&self) -> u8 {
        self.device
    }

    /// The function number.
    pub fn function(&self) -> u8 {
        self.function
    }

    /// The address a CONFIG_ADDRESS value selects, with its register.
    fn from_config_address(value: u32) -> (Self, usize) {
        let address = Self {
            bus: (value >> 16) as u8,
            device: ((value >> 11) & 0x1f) as u8,
            function: ((value >> 8) & 0x7) as u8,
        };
        (address, (value & 0xfc) as usize)
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// The functions on the PCI bus hierarchy, by address.
#[derive(Default)]
pub struct PciBus {
    devices: BTreeMap<PciAddress, SharedPciDevice>,
}

impl fmt::Debug for PciBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addresses: Vec<String> = self.devices.keys().map(ToString::to_string).collect();
        f.debug_struct("PciBus")
            .field("devices", &addresses)
            .finish()
    }
}

impl PciBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// The PC chipset: the i440FX host bridge at 00:00.0 and the PIIX3
    /// PCI-to-ISA bridge at 00:01.0, where SeaBIOS and Linux expect them.
    pub fn pc() -> Self {
        let mut bus = Self::new();
        let host: SharedPciDevice = Arc::new(Mutex::new(I440fxHostBridge::new()));
        let isa: SharedPciDevice = Arc::new(Mutex::new(Piix3IsaBridge::new()));
        bus.devices.insert(
            PciAddress {
                bus: 0,
                device: 0,
                function: 0,
            },
            host,
        );
        bus.devices.insert(
            PciAddress {
                bus: 0,
                device: 1,
                function: 0,
            },
            isa,
        );
        bus
    }

    /// Places `device` at `address`.
    pub fn add_device(&mut self, address: PciAddress, device: SharedPciDevice) -> Result<()> {
        if self.devices.contains_key(&address) {
            return Err(Error::PciSlotOccupied(address));
        }
        self.devices.insert(address, device);
        Ok(())
    }

    /// The function at `address`, if any.
    pub fn device(&self, address: PciAddress) -> Option<SharedPciDevice> {
        self.devices.get(&address).cloned()
    }

    /// A configuration read; all ones where no function answers.
    pub fn read_config(&self, address: PciAddress, reg: usize, data: &mut [u8]) {
        match self.devices.get(&address) {
            Some(device) => crate::lock(device).read_config(reg, data),
            None => data.fill(0xff),
        }
    }

    /// A configuration write; dropped where no function answers.
    pub fn write_config(&self, address: PciAddress, reg: usize, data: &[u8]) {
        if let Some(device) = self.devices.get(&address) {
            crate::lock(device).write_config(reg, data);
        }
    }
}

/// Configuration mechanism #1 on the I/O bus.
pub struct PciConfigIo {
    bus: Arc<Mutex<PciBus>>,
    config_address: u32,
}

impl fmt::Debug for PciConfigIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PciConfigIo")
            .field("config_address", &self.config_address)
            .finish()
    }
}

impl PciConfigIo {
    /// Mechanism #1 reaching `bus`.
    pub fn new(bus: Arc<Mutex<PciBus>>) -> Self {
        Self {
            bus,
            config_address: 0,
        }
    }

    /// The bus behind this mechanism.
    pub fn bus(&self) -> &Arc<Mutex<PciBus>> {
        &self.bus
    }

    /// The address and register CONFIG_DATA's byte `lane` reaches for an
    /// access of `len` bytes, if enabled and within the dword.
    fn data_target(&self, lane: u64, len: usize) -> Option<(PciAddress, usize)> {
        if self.config_address & CONFIG_ADDRESS_ENABLE == 0 || lane + len as u64 > 4 {
            return None;
        }
        let (address, reg) = PciAddress::from_config_address(self.config_address);
        Some((address, reg + lane as usize))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let port = base.wrapping_add(offset);
        if port == PCI_CONFIG_ADDRESS_PORT && data.len() == 4 {
            data.copy_from_slice(&self.config_address.to_le_bytes());
        } else if (PCI_CONFIG_DATA_PORT..PCI_CONFIG_DATA_PORT + 4).contains(&port) {
            if let Some((address, reg)) = self.data_target(port - PCI_CONFIG_DATA_PORT, data.len())
            {
                crate::lock(&self.bus).read_config(address, reg, data);
            }
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let port = base.wrapping_add(offset);
        if port == PCI_CONFIG_ADDRESS_PORT {
            if let Ok(bytes) = <[u8; 4]>::try_from(data) {
                self.config_address = u32::from_le_bytes(bytes) & CONFIG_ADDRESS_WRITABLE;
            }
        } else if (PCI_CONFIG_DATA_PORT..PCI_CONFIG_DATA_PORT + 4).contains(&port) {
            if let Some((address, reg)) = self.data_target(port - PCI_CONFIG_DATA_PORT, data.len())
            {
                crate::lock(&self.bus).write_config(address, reg, data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device with a 4 KiB memory BAR and an I/O BAR, for sizing tests.
    struct TestDevice(ConfigSpace);

    impl PciDevice for TestDevice {
        fn read_config(&mut self, reg: usize, data: &mut [u8]) {
            self.0.read(reg, data);
        }
        fn write_config(&mut self, reg: usize, data: &[u8]) {
            self.0.write(reg, data);
        }
    }

    fn config_io() -> PciConfigIo {
        let mut bus = PciBus::pc();
        let mut config = ConfigSpace::new(0x1af4, 0x1000, 0x020000, 0, 0);
        config.add_bar(0, 0x20, BarKind::Io).unwrap();
        config
            .add_bar(
                1,
                0x1000,
                BarKind::Memory32 {
                    prefetchable: false,
                },
            )
            .unwrap();
        bus.add_device(
            PciAddress::new(0, 3, 0).unwrap(),
            Arc::new(Mutex::new(TestDevice(config))),
        )
        .unwrap();
        PciConfigIo::new(Arc::new(Mutex::new(bus)))
    }

    /// Dispatches like the I/O bus with the documented insertion ranges.
    fn io_read(io: &mut PciConfigIo, port: u64, data: &mut [u8]) {
        let (base, _) = PCI_CONFIG_IO_RANGES
            .iter()
            .copied()
            .rev()
            .find(|&(base, _)| base <= port)
            .unwrap();
        io.read(base, port - base, data);
    }

    fn io_write(io: &mut PciConfigIo, port: u64, data: &[u8]) {
        let (base, _) = PCI_CONFIG_IO_RANGES
            .iter()
            .copied()
            .rev()
            .find(|&(base, _)| base <= port)
            .unwrap();
        io.write(base, port - base, data);
    }

    fn select(io: &mut PciConfigIo, device: u32, function: u32, reg: u32) {
        let address = 0x8000_0000 | device << 11 | function << 8 | reg;
        io_write(io, 0xcf8, &address.to_le_bytes());
    }

    fn read32(io: &mut PciConfigIo, device: u32, function: u32, reg: u32) -> u32 {
        select(io, device, function, reg);
        let mut d = [0u8; 4];
        io_read(io, 0xcfc, &mut d);
        u32::from_le_bytes(d)
    }

    fn write32(io: &mut PciConfigIo, device: u32, function: u32, reg: u32, value: u32) {
        select(io, device, function, reg);
        io_write(io, 0xcfc, &value.to_le_bytes());
    }

    #[test]
    fn chipset_identity() {
        let mut io = config_io();
        assert_eq!(read32(&mut io, 0, 0, 0x00), 0x1237_8086);
        assert_eq!(read32(&mut io, 0, 0, 0x08), 0x0600_0002);
        assert_eq!(read32(&mut io, 0, 0, 0x0c) >> 16 & 0xff, 0x00);
        assert_eq!(read32(&mut io, 1, 0, 0x00), 0x7000_8086);
        assert_eq!(read32(&mut io, 1, 0, 0x08) >> 8, 0x06_0100);
        assert_eq!(read32(&mut io, 1, 0, 0x0c) >> 16 & 0xff, 0x80);
    }

    #[test]
    fn absent_devices_read_all_ones() {
        let mut io = config_io();
        assert_eq!(read32(&mut io, 2, 0, 0x00), 0xffff_ffff);
        assert_eq!(read32(&mut io, 0, 1, 0x00), 0xffff_ffff);
        assert_eq!(read32(&mut io, 31, 7, 0x00), 0xffff_ffff);
        select(&mut io, 0, 0, 0);
        io_write(&mut io, 0xcf8, &(0x8001_0000u32).to_le_bytes()); // bus 1
        let mut d = [0u8; 2];
        io_read(&mut io, 0xcfc, &mut d);
        assert_eq!(d, [0xff, 0xff]);
        write32(&mut io, 2, 0, 0x04, 0x7);
    }

    #[test]
    fn byte_and_word_accesses_at_offsets() {
        let mut io = config_io();
        select(&mut io, 0, 0, 0x00);
        let mut b = [0u8; 1];
        io_read(&mut io, 0xcfd, &mut b);
        assert_eq!(b, [0x80]);
        let mut w = [0u8; 2];
        io_read(&mut io, 0xcfe, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1237);
        io_read(&mut io, 0xcfd, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x3780);
        // A word at 0xCFF would cross the dword: all ones.
        io_read(&mut io, 0xcff, &mut w);
        assert_eq!(w, [0xff, 0xff]);
        // Byte write to the interrupt line (0x3C) through lane 0.
        select(&mut io, 3, 0, 0x3c);
        io_write(&mut io, 0xcfc, &[10]);
        assert_eq!(read32(&mut io, 3, 0, 0x3c) & 0xff, 10);
        select(&mut io, 3, 0, 0x04);
        io_write(&mut io, 0xcfc, &[0x07, 0x00]);
        io_read(&mut io, 0xcfc, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x0007);
    }

    #[test]
    fn read_only_fields_stay_fixed() {
        let mut io = config_io();
        write32(&mut io, 0, 0, 0x00, 0xdead_beef);
        write32(&mut io, 0, 0, 0x08, 0xffff_ffff);
        assert_eq!(read32(&mut io, 0, 0, 0x00), 0x1237_8086);
        assert_eq!(read32(&mut io, 0, 0, 0x08), 0x0600_0002);
        write32(&mut io, 1, 0, 0x0c, 0xffff_ffff);
        assert_eq!(read32(&mut io, 1, 0, 0x0c) >> 16 & 0xff, 0x80);
    }

    #[test]
    fn bar_sizing_through_config_io() {
        let mut io = config_io();
        write32(&mut io, 3, 0, 0x10, 0xffff_ffff);
        assert_eq!(read32(&mut io, 3, 0, 0x10), 0xffff_ffe1);
        write32(&mut io, 3, 0, 0x14, 0xffff_ffff);
        assert_eq!(read32(&mut io, 3, 0, 0x14), 0xffff_f000);
        write32(&mut io, 3, 0, 0x14, 0xfebf_1234);
        assert_eq!(read32(&mut io, 3, 0, 0x14), 0xfebf_1000);
        write32(&mut io, 3, 0, 0x18, 0xffff_ffff);
        assert_eq!(read32(&mut io, 3, 0, 0x18), 0);
    }

    #[test]
    fn enable_bit_gates_config_data() {
        let mut io = config_io();
        io_write(&mut io, 0xcf8, &0x0000_0000u32.to_le_bytes());
        let mut d = [0u8; 4];
        io_read(&mut io, 0xcfc, &mut d);
        assert_eq!(d, [0xff; 4]);
        io_write(&mut io, 0xcfc, &[0xff; 4]);
        assert_eq!(read32(&mut io, 0, 0, 0), 0x1237_8086);
    }

    #[test]
    fn config_address_reads_back_like_pci_check_type1() {
        let mut io = config_io();
        // outb(0x01, 0xCFB); tmp = inl(0xCF8); outl(0x80000000, 0xCF8)
        io_write(&mut io, 0xcfb, &[0x01]);
        let mut d = [0u8; 4];
        io_read(&mut io, 0xcf8, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0);
        io_write(&mut io, 0xcf8, &0x8000_0000u32.to_le_bytes());
        io_read(&mut io, 0xcf8, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x8000_0000);
        // Reserved bits read as zero.
        io_write(&mut io, 0xcf8, &0xffff_ffffu32.to_le_bytes());
        io_read(&mut io, 0xcf8, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x80ff_fffc);
        // Byte and word accesses to 0xCF8-0xCFB are not CONFIG_ADDRESS.
        io_write(&mut io, 0xcf8, &[0x00, 0x00]);
        io_write(&mut io, 0xcf8, &[0x00]);
        io_read(&mut io, 0xcf8, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x80ff_fffc);
        let mut b = [0u8; 1];
        io_read(&mut io, 0xcfa, &mut b);
        assert_eq!(b, [0xff]);
    }

    #[test]
    fn pci_addresses() {
        assert!(PciAddress::new(0, 32, 0).is_err());
        assert!(PciAddress::new(0, 0, 8).is_err());
        let a = PciAddress::new(1, 2, 3).unwrap();
        assert_eq!(a.to_string(), "01:02.3");
        let mut bus = PciBus::pc();
        let dev = bus.device(PciAddress::new(0, 0, 0).unwrap()).unwrap();
        assert_eq!(
            bus.add_device(PciAddress::new(0, 0, 0).unwrap(), dev),
            Err(Error::PciSlotOccupied(PciAddress::new(0, 0, 0).unwrap()))
        );
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let mut io = config_io();
        let mut d = [0u8; 8];
        io.read(u64::MAX, 3, &mut d);
        io.write(u64::MAX, 3, &d);
        io.read(0xcfc, 3, &mut d);
        io.write(0xcfc, 3, &d);
        io.read(0xcf8, 0, &mut d);
        io.write(0xcf8, 0, &d);
        io.read(0xcf8, 0, &mut []);
        io.write(0xcfc, 0, &[]);
    }
}
