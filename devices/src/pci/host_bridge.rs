//! The two PCI functions of QEMU's `pc` chipset that firmware and Linux
//! identify it by:
//!
//! * 00:00.0, the Intel 82441FX (i440FX) PCI and memory controller: host
//!   bridge 8086:1237, revision 02, class 06/00/00. Its PAM registers
//!   (0x59-0x5F, BIOS shadowing), SMRAM control (0x72) and the other chipset
//!   registers at 0x50-0x7F and 0x90-0x93 are stored for firmware to program;
//!   they have no effect on the memory map here.
//! * 00:01.0, the Intel 82371SB (PIIX3) PCI-to-ISA bridge: 8086:7000,
//!   class 06/01/00, header type 0x80 (multifunction: IDE and USB would be
//!   further functions). Its PIRQ route control registers (0x60-0x63, 0x80 =
//!   disabled at reset) and the other function registers 0x40-0xFF are
//!   stored for firmware to program; routing is read back with
//!   [`Piix3IsaBridge::pirq_route`].

use super::{regs, ConfigSpace, PciDevice, HEADER_TYPE_MULTIFUNCTION};

const INTEL_VENDOR_ID: u16 = 0x8086;

/// The i440FX host bridge.
#[derive(Debug)]
pub struct I440fxHostBridge {
    config: ConfigSpace,
}

impl Default for I440fxHostBridge {
    fn default() -> Self {
        Self::new()
    }
}

/// Offset of the subsystem vendor ID in a type-0 header.
const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
/// Offset of the subsystem ID.
const SUBSYSTEM_ID: usize = 0x2e;
/// Red Hat / Qumranet, which QEMU uses as every device's subsystem vendor.
pub const QEMU_SUBSYSTEM_VENDOR: u16 = 0x1af4;
/// QEMU's subsystem device ID.
pub const QEMU_SUBSYSTEM_DEVICE: u16 = 0x1100;

impl I440fxHostBridge {
    /// Device ID of the 82441FX.
    pub const DEVICE_ID: u16 = 0x1237;
    /// First PAM register.
    pub const PAM0: usize = 0x59;

    /// The host bridge as after reset.
    pub fn new() -> Self {
        let mut config = ConfigSpace::new(INTEL_VENDOR_ID, Self::DEVICE_ID, 0x06_0000, 0x02, 0);
        // Memory and bus master always enabled; medium DEVSEL timing.
        config.set_u16(regs::COMMAND, 0x0006);
        config.set_u16(regs::STATUS, 0x0280);
        config.set_writable_range(0x50..=0x7f);
        config.set_writable_range(0x90..=0x93);
        // QEMU's subsystem IDs: SeaBIOS recognises the machine by them
        // ("Running on QEMU") and then trusts fw_cfg.
        config.set_u16(SUBSYSTEM_VENDOR_ID, QEMU_SUBSYSTEM_VENDOR);
        config.set_u16(SUBSYSTEM_ID, QEMU_SUBSYSTEM_DEVICE);
        Self { config }
    }

    /// The seven PAM registers as firmware programmed them.
    pub fn pam(&self) -> [u8; 7] {
        let mut pam = [0u8; 7];
        self.config.read(Self::PAM0, &mut pam);
        pam
    }
}

impl PciDevice for I440fxHostBridge {
    fn read_config(&mut self, reg: usize, data: &mut [u8]) {
        self.config.read(reg, data);
    }

    fn write_config(&mut self, reg: usize, data: &[u8]) {
        self.config.write(reg, data);
    }
}

/// The PIIX3 PCI-to-ISA bridge.
#[derive(Debug)]
pub struct Piix3IsaBridge {
    config: ConfigSpace,
}

impl Default for Piix3IsaBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl Piix3IsaBridge {
    /// Device ID of the 82371SB function 0.
    pub const DEVICE_ID: u16 = 0x7000;
    /// PIRQA route control; PIRQB-D follow.
    pub const PIRQ_ROUTE: usize = 0x60;
    const PIRQ_ROUTE_DISABLE: u8 = 0x80;

    /// The bridge as after reset.
    pub fn new() -> Self {
        let mut config = ConfigSpace::new(
            INTEL_VENDOR_ID,
            Self::DEVICE_ID,
            0x06_0100,
            0x00,
            HEADER_TYPE_MULTIFUNCTION,
        );
        config.set_u16(regs::COMMAND, 0x0007);
        config.set_u16(regs::STATUS, 0x0200);
        config.set_writable_range(0x40..=0xff);
        config.set_bytes(Self::PIRQ_ROUTE, &[Self::PIRQ_ROUTE_DISABLE; 4]);
        Self { config }
    }

    /// The ISA IRQ PIRQ `pirq` (0 = PIRQA .. 3 = PIRQD) is routed to, if
    /// routing is enabled for it.
    pub fn pirq_route(&self, pirq: usize) -> Option<u8> {
        if pirq > 3 {
            return None;
        }
        let route = self.config.read_u8(Self::PIRQ_ROUTE + pirq);
        (route & Self::PIRQ_ROUTE_DISABLE == 0).then_some(route & 0x0f)
    }
}

impl PciDevice for Piix3IsaBridge {
    fn read_config(&mut self, reg: usize, data: &mut [u8]) {
        self.config.read(reg, data);
    }

    fn write_config(&mut self, reg: usize, data: &[u8]) {
        self.config.write(reg, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i440fx_identity_and_pam() {
        let mut host = I440fxHostBridge::new();
        let mut d = [0u8; 4];
        host.read_config(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1237_8086);
        host.read_config(regs::REVISION_ID, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x0600_0002);
        host.read_config(SUBSYSTEM_VENDOR_ID, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1100_1af4);
        // SeaBIOS makes the BIOS area writable through the PAM registers.
        host.write_config(0x58, &[0x00, 0x30, 0x33, 0x33]);
        host.write_config(0x5c, &[0x33, 0x33, 0x33, 0x33]);
        assert_eq!(host.pam(), [0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33]);
        // Registers outside the chipset ranges stay read-only.
        host.write_config(0x40, &[0xff]);
        host.read_config(0x40, &mut d[..1]);
        assert_eq!(d[0], 0);
    }

    #[test]
    fn piix3_identity_and_pirq_routing() {
        let mut isa = Piix3IsaBridge::new();
        let mut d = [0u8; 4];
        isa.read_config(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x7000_8086);
        isa.read_config(regs::HEADER_TYPE, &mut d[..1]);
        assert_eq!(d[0], 0x80);
        assert_eq!(isa.pirq_route(0), None);
        isa.write_config(Piix3IsaBridge::PIRQ_ROUTE, &[10, 10, 11, 0x80]);
        assert_eq!(isa.pirq_route(0), Some(10));
        assert_eq!(isa.pirq_route(2), Some(11));
        assert_eq!(isa.pirq_route(3), None);
        assert_eq!(isa.pirq_route(9), None);
    }
}
