//! Port-I/O and MMIO buses that dispatch accesses by address range.
//!
//! As in Cloud Hypervisor and crosvm, a [`Bus`] maps non-overlapping ranges to
//! devices implementing [`BusDevice`]; each device sits behind its own lock so
//! that a vCPU thread and a device's own worker (a serial input thread, say)
//! can reach it without a machine-wide lock.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A device reachable through a [`Bus`].
///
/// `base` is the start of the range the device was inserted at and `offset`
/// the distance of the access from it, so one device type can be mapped at
/// several addresses (COM1..COM4, say). `data.len()` is the access width.
pub trait BusDevice: Send {
    /// Reads `data.len()` bytes at `offset`. Unimplemented registers read as
    /// all ones, as an undriven ISA bus does.
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        let _ = (base, offset);
        data.fill(0xff);
    }

    /// Writes `data` at `offset`. Writes to unimplemented registers are dropped.
    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let _ = (base, offset, data);
    }
}

/// A device shared between a bus and whoever else drives it.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors from building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps one already on the bus.
    #[error("Range {base:#x}+{len:#x} overlaps a device already on the bus")]
    Overlap { base: u64, len: u64 },
    /// A zero-length range or one that wraps around the address space.
    #[error("Invalid bus range {base:#x}+{len:#x}")]
    InvalidRange { base: u64, len: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Range {
    base: u64,
    len: u64,
}

/// What happened to an access, so the caller can log or count misses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A device handled the access.
    Handled,
    /// No device covers the address: reads returned all ones.
    Unclaimed,
}

/// A set of devices keyed by address range.
#[derive(Default, Clone)]
pub struct Bus {
    devices: BTreeMap<Range, SharedDevice>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges: Vec<String> = self
            .devices
            .keys()
            .map(|r| format!("{:#x}+{:#x}", r.base, r.len))
            .collect();
        f.debug_struct("Bus").field("ranges", &ranges).finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `device` at `[base, base + len)`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 || base.checked_add(len - 1).is_none() {
            return Err(BusError::InvalidRange { base, len });
        }
        let end = base + (len - 1);
        let overlaps = self
            .devices
            .keys()
            .any(|r| base <= r.base + (r.len - 1) && r.base <= end);
        if overlaps {
            return Err(BusError::Overlap { base, len });
        }
        self.devices.insert(Range { base, len }, device);
        Ok(())
    }

    /// The device covering `addr`, with its range base.
    fn resolve(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let (range, dev) = self
            .devices
            .range(..=Range { base: addr, len: u64::MAX })
            .next_back()?;
        (addr - range.base < range.len).then_some((range.base, dev))
    }

    /// Whether some device covers `addr`.
    pub fn contains(&self, addr: u64) -> bool {
        self.resolve(addr).is_some()
    }

    /// Reads from the device at `addr`; all ones where none is mapped.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Access {
        match self.resolve(addr) {
            Some((base, dev)) => {
                lock(dev).read(base, addr - base, data);
                Access::Handled
            }
            None => {
                data.fill(0xff);
                Access::Unclaimed
            }
        }
    }

    /// Writes to the device at `addr`; dropped where none is mapped.
    pub fn write(&self, addr: u64, data: &[u8]) -> Access {
        match self.resolve(addr) {
            Some((base, dev)) => {
                lock(dev).write(base, addr - base, data);
                Access::Handled
            }
            None => Access::Unclaimed,
        }
    }
}

/// Locks a device, recovering it if a previous holder panicked: device state
/// is plain data and a poisoned lock must not take the whole machine down.
pub fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Scratch {
        last: Option<(u64, u64, Vec<u8>)>,
    }

    impl BusDevice for Scratch {
        fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
            self.last = Some((base, offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_range_with_offset() {
        let mut bus = Bus::new();
        let dev = Arc::new(Mutex::new(Scratch::default()));
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(bus.read(0x3fd, &mut b), Access::Handled);
        assert_eq!(b, [5]);
        bus.write(0x3ff, &[0xaa]);
        assert_eq!(dev.lock().unwrap().last, Some((0x3f8, 7, vec![0xaa])));
    }

    #[test]
    fn unclaimed_reads_all_ones() {
        let bus = Bus::new();
        let mut b = [0u8; 4];
        assert_eq!(bus.read(0x1234, &mut b), Access::Unclaimed);
        assert_eq!(b, [0xff; 4]);
        assert_eq!(bus.write(0x1234, &[1]), Access::Unclaimed);
    }

    #[test]
    fn rejects_overlap_and_bad_ranges() {
        let mut bus = Bus::new();
        let a = Arc::new(Mutex::new(Scratch::default()));
        bus.insert(a.clone(), 0x10, 0x10).unwrap();
        assert_eq!(bus.insert(a.clone(), 0x1f, 1), Err(BusError::Overlap { base: 0x1f, len: 1 }));
        assert_eq!(bus.insert(a.clone(), 0x08, 0x09), Err(BusError::Overlap { base: 0x08, len: 0x09 }));
        bus.insert(a.clone(), 0x20, 1).unwrap();
        bus.insert(a.clone(), 0x08, 0x08).unwrap();
        assert!(bus.insert(a.clone(), 0x100, 0).is_err());
        assert!(bus.insert(a.clone(), u64::MAX, 2).is_err());
        assert!(!bus.contains(0x21));
        assert!(bus.contains(0x1f));
    }
}
