//! A type 0 PCI configuration space (PCI Local Bus Specification 3.0,
//! chapter 6): 256 bytes with a per-bit write mask, so read-only fields
//! (vendor, device, class, revision, header type) stay as the device set
//! them, status bits are write-one-to-clear, and base address registers
//! size themselves: writing all ones to a BAR reads back the size mask with
//! the type bits.

use crate::{Error, Result};

/// Bytes in a conventional PCI configuration space.
pub const CONFIG_SPACE_SIZE: usize = 256;

/// Register offsets of the type 0 header.
pub mod regs {
    pub const VENDOR_ID: usize = 0x00;
    pub const DEVICE_ID: usize = 0x02;
    pub const COMMAND: usize = 0x04;
    pub const STATUS: usize = 0x06;
    pub const REVISION_ID: usize = 0x08;
    pub const CLASS_CODE: usize = 0x09;
    pub const CACHE_LINE_SIZE: usize = 0x0c;
    pub const LATENCY_TIMER: usize = 0x0d;
    pub const HEADER_TYPE: usize = 0x0e;
    pub const BAR0: usize = 0x10;
    pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
    pub const SUBSYSTEM_ID: usize = 0x2e;
    pub const INTERRUPT_LINE: usize = 0x3c;
    pub const INTERRUPT_PIN: usize = 0x3d;
}

/// Header type bit 7: the device has more than one function.
pub const HEADER_TYPE_MULTIFUNCTION: u8 = 0x80;

/// Command register bits software may change: I/O, memory, bus master,
/// parity error response, SERR# enable, interrupt disable.
const COMMAND_WRITABLE: u16 = 0x0547;
/// Status bits that are write-one-to-clear: the error bits.
const STATUS_WRITE_ONE_TO_CLEAR: u16 = 0xf900;

/// What a base address register decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// I/O space.
    Io,
    /// 32-bit memory space.
    Memory32 { prefetchable: bool },
    /// 64-bit memory space, taking this BAR and the next.
    Memory64 { prefetchable: bool },
}

/// What occupies a BAR slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BarSlot {
    Bar(BarKind),
    /// The upper dword of the 64-bit BAR below.
    UpperHalf,
}

/// A device's configuration space.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SPACE_SIZE],
    writable: [u8; CONFIG_SPACE_SIZE],
    write_one_to_clear: [u8; CONFIG_SPACE_SIZE],
    bars: [Option<BarSlot>; 6],
}

impl std::fmt::Debug for ConfigSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSpace")
            .field("vendor_id", &self.read_u16(regs::VENDOR_ID))
            .field("device_id", &self.read_u16(regs::DEVICE_ID))
            .finish_non_exhaustive()
    }
}

impl ConfigSpace {
    /// A type 0 header with the given identity; `class_code` is the 24-bit
    /// class, subclass and programming interface (0x060000 for a host
    /// bridge). Only the command, status error bits, cache line size,
    /// latency timer and interrupt line are writable until the device adds
    /// BARs or marks more bytes writable.
    pub fn new(
        vendor_id: u16,
        device_id: u16,
        class_code: u32,
        revision: u8,
        header_type: u8,
    ) -> Self {
        let mut config = Self {
            bytes: [0; CONFIG_SPACE_SIZE],
            writable: [0; CONFIG_SPACE_SIZE],
            write_one_to_clear: [0; CONFIG_SPACE_SIZE],
            bars: [None; 6],
        };
        config.set_u16(regs::VENDOR_ID, vendor_id);
        config.set_u16(regs::DEVICE_ID, device_id);
        config.set_u8(regs::REVISION_ID, revision);
        let [prog_if, subclass, class, _] = class_code.to_le_bytes();
        config.set_u8(regs::CLASS_CODE, prog_if);
        config.set_u8(regs::CLASS_CODE + 1, subclass);
        config.set_u8(regs::CLASS_CODE + 2, class);
        config.set_u8(regs::HEADER_TYPE, header_type);
        config.set_writable(regs::COMMAND, &COMMAND_WRITABLE.to_le_bytes());
        config.set_write_one_to_clear(regs::STATUS, &STATUS_WRITE_ONE_TO_CLEAR.to_le_bytes());
        config.set_writable(regs::CACHE_LINE_SIZE, &[0xff, 0xff]);
        config.set_writable(regs::INTERRUPT_LINE, &[0xff]);
        config
    }

    /// A guest read of `data.len()` bytes at `reg`; bytes past the end of
    /// the space read as all ones.
    pub fn read(&self, reg: usize, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = reg
                .checked_add(i)
                .and_then(|r| self.bytes.get(r))
                .copied()
                .unwrap_or(0xff);
        }
    }

    /// A guest write, honouring the write masks.
    pub fn write(&mut self, reg: usize, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            let Some(r) = reg.checked_add(i).filter(|&r| r < CONFIG_SPACE_SIZE) else {
                return;
            };
            let writable = self.writable[r];
            let clear = self.write_one_to_clear[r] & value;
            self.bytes[r] = ((self.bytes[r] & !writable) | (value & writable)) & !clear;
        }
    }

    /// Device-side store, ignoring the write mask. Out-of-range parts are
    /// dropped.
    pub fn set_bytes(&mut self, reg: usize, value: &[u8]) {
        for (i, &b) in value.iter().enumerate() {
            if let Some(slot) = reg.checked_add(i).and_then(|r| self.bytes.get_mut(r)) {
                *slot = b;
            }
        }
    }

    /// Device-side store of a byte.
    pub fn set_u8(&mut self, reg: usize, value: u8) {
        self.set_bytes(reg, &[value]);
    }

    /// Device-side store of a little-endian word.
    pub fn set_u16(&mut self, reg: usize, value: u16) {
        self.set_bytes(reg, &value.to_le_bytes());
    }

    /// Device-side store of a little-endian dword.
    pub fn set_u32(&mut self, reg: usize, value: u32) {
        self.set_bytes(reg, &value.to_le_bytes());
    }

    /// The byte at `reg` (0xFF past the end).
    pub fn read_u8(&self, reg: usize) -> u8 {
        let mut b = [0u8; 1];
        self.read(reg, &mut b);
        b[0]
    }

    /// The word at `reg`.
    pub fn read_u16(&self, reg: usize) -> u16 {
        let mut b = [0u8; 2];
        self.read(reg, &mut b);
        u16::from_le_bytes(b)
    }

    /// The dword at `reg`.
    pub fn read_u32(&self, reg: usize) -> u32 {
        let mut b = [0u8; 4];
        self.read(reg, &mut b);
        u32::from_le_bytes(b)
    }

    /// Sets which bits of the bytes from `reg` on the guest may write.
    pub fn set_writable(&mut self, reg: usize, mask: &[u8]) {
        for (i, &m) in mask.iter().enumerate() {
            if let Some(slot) = reg.checked_add(i).and_then(|r| self.writable.get_mut(r)) {
                *slot = m;
            }
        }
    }

    /// Marks the bytes `range` fully writable (device-specific registers).
    pub fn set_writable_range(&mut self, range: std::ops::RangeInclusive<usize>) {
        for r in range {
            if let Some(slot) = self.writable.get_mut(r) {
                *slot = 0xff;
            }
        }
    }

    /// Sets which bits of the bytes from `reg` are write-one-to-clear.
    pub fn set_write_one_to_clear(&mut self, reg: usize, mask: &[u8]) {
        for (i, &m) in mask.iter().enumerate() {
            if let Some(slot) = reg
                .checked_add(i)
                .and_then(|r| self.write_one_to_clear.get_mut(r))
            {
                *slot = m;
            }
        }
    }

    /// Declares BAR `index` (0-5) decoding `size` bytes (a power of two; at
    /// least 4 for I/O and 16 for memory). A 64-bit BAR also takes `index +
    /// 1`.
    pub fn add_bar(&mut self, index: usize, size: u64, kind: BarKind) -> Result<()> {
        let invalid = Error::InvalidBar { index, size };
        let (min_size, max_size, slots) = match kind {
            BarKind::Io => (4, 1 << 16, 1),
            BarKind::Memory32 { .. } => (16, 1 << 31, 1),
            BarKind::Memory64 { .. } => (16, 1 << 63, 2),
        };
        if !size.is_power_of_two() || size < min_size || size > max_size {
            return Err(invalid);
        }
        let Some(end) = index
            .checked_add(slots)
            .filter(|&end| end <= self.bars.len())
        else {
            return Err(invalid);
        };
        if self
            .bars
            .get(index..end)
            .is_none_or(|s| s.iter().any(Option::is_some))
        {
            return Err(invalid);
        }
        let reg = regs::BAR0 + index * 4;
        let address_mask = !(size - 1);
        let (type_bits, low_mask): (u32, u32) = match kind {
            BarKind::Io => (0x1, address_mask as u32 & !0x3),
            BarKind::Memory32 { prefetchable } => {
                (u32::from(prefetchable) << 3, address_mask as u32 & !0xf)
            }
            BarKind::Memory64 { prefetchable } => (
                0x4 | u32::from(prefetchable) << 3,
                address_mask as u32 & !0xf,
            ),
        };
        self.set_u32(reg, type_bits);
        self.set_writable(reg, &low_mask.to_le_bytes());
        if let BarKind::Memory64 { .. } = kind {
            self.set_u32(reg + 4, 0);
            self.set_writable(reg + 4, &((address_mask >> 32) as u32).to_le_bytes());
        }
        for (i, slot) in (index..end).zip(self.bars.iter_mut().skip(index)) {
            *slot = Some(if i == index {
                BarSlot::Bar(kind)
            } else {
                BarSlot::UpperHalf
            });
        }
        Ok(())
    }

    /// The address BAR `index` is programmed with, if a BAR was added there
    /// (None for the upper half of a 64-bit BAR).
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let Some(BarSlot::Bar(kind)) = self.bars.get(index).copied().flatten() else {
            return None;
        };
        let reg = regs::BAR0 + index * 4;
        let low = self.read_u32(reg);
        Some(match kind {
            BarKind::Io => u64::from(low & !0x3),
            BarKind::Memory32 { .. } => u64::from(low & !0xf),
            BarKind::Memory64 { .. } => {
                u64::from(low & !0xf) | (u64::from(self.read_u32(reg + 4)) << 32)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_device() -> ConfigSpace {
        let mut c = ConfigSpace::new(0x1234, 0x5678, 0x020000, 0x01, 0);
        c.add_bar(
            0,
            0x1000,
            BarKind::Memory32 {
                prefetchable: false,
            },
        )
        .unwrap();
        c.add_bar(1, 0x20, BarKind::Io).unwrap();
        c.add_bar(2, 0x1_0000_0000, BarKind::Memory64 { prefetchable: true })
            .unwrap();
        c
    }

    #[test]
    fn identity_is_read_only() {
        let mut c = test_device();
        c.write(0, &[0xff; 4]);
        c.write(regs::REVISION_ID, &[0xff; 4]);
        c.write(regs::HEADER_TYPE, &[0xff]);
        assert_eq!(c.read_u32(0), 0x5678_1234);
        assert_eq!(c.read_u32(regs::REVISION_ID), 0x0200_0001);
        assert_eq!(c.read_u8(regs::HEADER_TYPE), 0);
    }

    #[test]
    fn command_and_status_masks() {
        let mut c = test_device();
        c.write(regs::COMMAND, &[0xff, 0xff]);
        assert_eq!(c.read_u16(regs::COMMAND), 0x0547);
        c.set_u16(regs::STATUS, 0x8010);
        c.write(regs::STATUS, &[0xff, 0x00]);
        assert_eq!(
            c.read_u16(regs::STATUS),
            0x8010,
            "capabilities bit is read-only"
        );
        c.write(regs::STATUS, &[0x00, 0x80]);
        assert_eq!(
            c.read_u16(regs::STATUS),
            0x0010,
            "error bit cleared by writing 1"
        );
        c.write(regs::INTERRUPT_LINE, &[11, 0xff]);
        assert_eq!(c.read_u16(regs::INTERRUPT_LINE), 11);
    }

    #[test]
    fn bar_sizing() {
        let mut c = test_device();
        c.write(regs::BAR0, &[0xff; 4]);
        assert_eq!(c.read_u32(regs::BAR0), 0xffff_f000);
        c.write(regs::BAR0 + 4, &[0xff; 4]);
        assert_eq!(c.read_u32(regs::BAR0 + 4), 0xffff_ffe1);
        c.write(regs::BAR0 + 8, &[0xff; 4]);
        c.write(regs::BAR0 + 12, &[0xff; 4]);
        assert_eq!(c.read_u32(regs::BAR0 + 8), 0x0000_000c);
        assert_eq!(c.read_u32(regs::BAR0 + 12), 0xffff_ffff);
        // Unused BARs read 0: not implemented.
        c.write(regs::BAR0 + 16, &[0xff; 4]);
        assert_eq!(c.read_u32(regs::BAR0 + 16), 0);
        // Program addresses.
        c.write(regs::BAR0, &0xfebf_0000u32.to_le_bytes());
        c.write(regs::BAR0 + 4, &0xc040u32.to_le_bytes());
        c.write(regs::BAR0 + 8, &0u32.to_le_bytes());
        c.write(regs::BAR0 + 12, &0x8u32.to_le_bytes());
        assert_eq!(c.bar_address(0), Some(0xfebf_0000));
        assert_eq!(c.bar_address(1), Some(0xc040));
        assert_eq!(c.bar_address(2), Some(0x8_0000_0000));
        assert_eq!(c.bar_address(3), None);
        assert_eq!(c.bar_address(4), None);
        assert_eq!(c.bar_address(9), None);
    }

    #[test]
    fn invalid_bars_are_rejected() {
        let mut c = test_device();
        assert!(c.add_bar(0, 0x1000, BarKind::Io).is_err(), "taken");
        assert!(
            c.add_bar(3, 0x1000, BarKind::Io).is_err(),
            "upper half of a 64-bit BAR"
        );
        assert!(c
            .add_bar(
                4,
                0x1001,
                BarKind::Memory32 {
                    prefetchable: false
                }
            )
            .is_err());
        assert!(c
            .add_bar(
                4,
                8,
                BarKind::Memory32 {
                    prefetchable: false
                }
            )
            .is_err());
        assert!(c
            .add_bar(
                5,
                0x1000,
                BarKind::Memory64 {
                    prefetchable: false
                }
            )
            .is_err());
        assert!(c.add_bar(6, 0x1000, BarKind::Io).is_err());
        assert!(c.add_bar(usize::MAX, 0x1000, BarKind::Io).is_err());
        assert!(c
            .add_bar(
                4,
                0x1_0000_0000,
                BarKind::Memory32 {
                    prefetchable: false
                }
            )
            .is_err());
        assert!(c.add_bar(4, 0x10, BarKind::Io).is_ok());
    }

    #[test]
    fn out_of_range_accesses() {
        let mut c = test_device();
        let mut d = [0u8; 4];
        c.read(254, &mut d);
        assert_eq!(&d[2..], &[0xff, 0xff]);
        c.read(usize::MAX, &mut d);
        assert_eq!(d, [0xff; 4]);
        c.write(usize::MAX - 1, &[1, 2, 3, 4]);
        c.set_bytes(usize::MAX, &[1, 2]);
        c.set_writable(usize::MAX, &[1, 2]);
        c.set_writable_range(250..=300);
        c.write(255, &[0x77, 0x88]);
        assert_eq!(c.read_u8(255), 0x77);
    }
}
