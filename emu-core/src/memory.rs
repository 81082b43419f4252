//! Guest physical memory: RAM in one anonymous host mapping touched only on
//! demand, plus read-only firmware regions.
//!
//! RAM starts at a 2 MiB boundary of the host and is advised as
//! transparent-huge-page memory (`MADV_HUGEPAGE`, as QEMU and Cloud
//! Hypervisor advise theirs), so the host may back it with 2 MiB pages:
//! a guest that sweeps a large working set (a kernel decompressor's 64 MiB
//! dictionary) then walks one host page table entry per 2 MiB instead of
//! one per 4 KiB, and faults in memory 512 pages at a time.
//!
//! The mapping is reached through raw pointers only, never through Rust
//! references, because the guest (a KVM vCPU, JIT code) writes it
//! concurrently with the VMM: every access is a bounds-checked copy.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use memmap2::{Advice, MmapMut, MmapOptions};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::layout::{self, RamRegion};

/// Errors from guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The requested RAM size cannot be used.
    #[error("Invalid guest memory size {0:#x}: {1}")]
    InvalidSize(u64, &'static str),
    /// The host refused the mapping.
    #[error("Cannot map {size:#x} bytes of guest memory")]
    Mmap {
        size: u64,
        #[source]
        source: std::io::Error,
    },
    /// An access fell outside RAM and ROM.
    #[error("Guest physical range {addr:#x}+{len:#x} is not backed by memory")]
    OutOfRange { addr: u64, len: u64 },
    /// A ROM overlaps RAM or another ROM.
    #[error("ROM at {addr:#x}+{len:#x} overlaps other memory")]
    RomOverlap { addr: u64, len: u64 },
    /// vm-memory refused our regions.
    #[error("Cannot describe guest memory to vm-memory: {0}")]
    VmMemory(String),
}

/// A read-only region (firmware) with its own host mapping.
#[derive(Debug)]
pub struct RomRegion {
    /// Guest-physical start.
    pub guest_start: u64,
    /// Length in bytes (a multiple of the page size).
    pub len: u64,
    map: MmapMut,
}

impl RomRegion {
    /// Host address of the region's first byte.
    pub fn host_address(&self) -> *mut u8 {
        self.map.as_ptr().cast_mut()
    }
}

/// Guest-physical ranges the VMM wrote since the CPU last asked
/// ([`GuestMemory::take_device_writes`]): device DMA, where code the CPU
/// decoded or translated from may lie underneath.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeviceWrites {
    /// `(address, length)` of each write, in order.
    pub ranges: Vec<(u64, u64)>,
    /// More writes than [`DEVICE_WRITES_KEPT`] came: treat all of memory
    /// as written (`ranges` is then empty).
    pub all: bool,
}

/// How many ranges [`DeviceWrites`] keeps before it gives up on them: a
/// CPU backend that never asks (KVM, which needs no telling) costs this
/// much and no more.
pub const DEVICE_WRITES_KEPT: usize = 64;

/// All of a guest's memory.
#[derive(Debug)]
pub struct GuestMemory {
    /// The mapping RAM lies in (from `ram_base`), held to unmap it.
    _mapping: MmapMut,
    ram_base: NonNull<u8>,
    ram_size: u64,
    regions: Vec<RamRegion>,
    roms: Vec<RomRegion>,
    /// What [`GuestMemory::write`] wrote, for the interpreter's code cache;
    /// `device_writes_pending` says cheaply whether there is any.
    device_writes: Mutex<DeviceWrites>,
    device_writes_pending: AtomicBool,
}

// SAFETY: the mapping lives as long as `GuestMemory` and is only reached
// through bounds-checked raw-pointer copies, which are sound from any thread
// (concurrent guest writes make values unpredictable, never unsafe).
unsafe impl Send for GuestMemory {}
// SAFETY: as above; no method hands out references into the mapping.
unsafe impl Sync for GuestMemory {}

const PAGE_SIZE: u64 = 4096;
/// The host's transparent huge page (x86-64).
const HUGE_PAGE: usize = 2 << 20;

impl GuestMemory {
    /// Maps `ram_size` bytes of RAM, split around the PCI hole. Pages are
    /// reserved but not touched: a 4 GiB guest costs only what it uses.
    pub fn new(ram_size: u64) -> Result<Self, MemoryError> {
        if ram_size < layout::MIN_RAM_SIZE {
            return Err(MemoryError::InvalidSize(ram_size, "at least 2 MiB is needed"));
        }
        if ram_size % PAGE_SIZE != 0 {
            return Err(MemoryError::InvalidSize(ram_size, "not a multiple of 4 KiB"));
        }
        let len = usize::try_from(ram_size)
            .map_err(|_| MemoryError::InvalidSize(ram_size, "larger than the host address space"))?;
        // One huge page more than asked for, so that RAM can start at a
        // huge-page boundary inside it (the slack is never touched).
        let map_len = len
            .checked_add(HUGE_PAGE)
            .ok_or(MemoryError::InvalidSize(ram_size, "larger than the host address space"))?;
        let ram = MmapOptions::new()
            .len(map_len)
            .no_reserve_swap()
            .map_anon()
            .map_err(|source| MemoryError::Mmap { size: ram_size, source })?;
        let slack = ram.as_ptr().align_offset(HUGE_PAGE).min(HUGE_PAGE);
        // Advice only: a host without transparent huge pages (or with them
        // off) refuses it, and RAM works the same in 4 KiB pages.
        if let Err(e) = ram.advise_range(Advice::HugePage, slack, len) {
            tracing::debug!("guest RAM stays in small host pages: madvise(MADV_HUGEPAGE): {e}");
        }
        let ram_base = NonNull::new(ram.as_ptr().cast_mut().wrapping_add(slack))
            .ok_or(MemoryError::InvalidSize(ram_size, "the host returned a null mapping"))?;
        Ok(Self {
            _mapping: ram,
            ram_base,
            ram_size,
            regions: layout::ram_regions(ram_size),
            roms: Vec::new(),
            device_writes: Mutex::new(DeviceWrites::default()),
            device_writes_pending: AtomicBool::new(false),
        })
    }

    /// Total RAM in bytes.
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// The RAM regions in guest-physical order.
    pub fn ram_regions(&self) -> &[RamRegion] {
        &self.regions
    }

    /// The ROM regions.
    pub fn rom_regions(&self) -> &[RomRegion] {
        &self.roms
    }

    /// Host address of the start of RAM (guest-physical 0).
    pub fn ram_host_address(&self) -> *mut u8 {
        self.ram_base.as_ptr()
    }

    /// End of RAM below 4 GiB.
    pub fn low_ram_end(&self) -> u64 {
        self.regions[0].guest_end()
    }

    /// Adds a read-only region holding `data` at `guest_start`; its length
    /// is `data.len()` rounded up to a page.
    pub fn add_rom(&mut self, guest_start: u64, data: &[u8]) -> Result<(), MemoryError> {
        let len = (data.len() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let overlap_err = MemoryError::RomOverlap { addr: guest_start, len };
        let end = guest_start.checked_add(len).ok_or(MemoryError::OutOfRange { addr: guest_start, len })?;
        if len == 0 || end > 1 << 52 {
            return Err(MemoryError::OutOfRange { addr: guest_start, len });
        }
        let clashes = |s: u64, l: u64| guest_start < s + l && s < end;
        if self.regions.iter().any(|r| clashes(r.guest_start, r.len))
            || self.roms.iter().any(|r| clashes(r.guest_start, r.len))
        {
            return Err(overlap_err);
        }
        let mut map = MmapOptions::new()
            .len(len as usize)
            .map_anon()
            .map_err(|source| MemoryError::Mmap { size: len, source })?;
        map[..data.len()].copy_from_slice(data);
        self.roms.push(RomRegion { guest_start, len, map });
        Ok(())
    }

    /// Host pointer for `[addr, addr + len)` when it lies wholly in one RAM
    /// or ROM region.
    pub fn host_range(&self, addr: u64, len: u64) -> Option<*mut u8> {
        let end = addr.checked_add(len)?;
        for r in &self.regions {
            if addr >= r.guest_start && end <= r.guest_end() {
                let off = usize::try_from(r.host_offset + (addr - r.guest_start)).ok()?;
                // SAFETY: `off + len` is within the RAM mapping, checked above.
                return Some(unsafe { self.ram_base.as_ptr().add(off) });
            }
        }
        for r in &self.roms {
            if addr >= r.guest_start && end <= r.guest_start + r.len {
                let off = usize::try_from(addr - r.guest_start).ok()?;
                // SAFETY: `off + len` is within this ROM's mapping, checked above.
                return Some(unsafe { r.host_address().add(off) });
            }
        }
        None
    }

    /// Splits `[addr, addr + len)` into pieces that each lie in one region,
    /// calling `f(host_ptr, offset_in_buffer, piece_len)`.
    fn for_each_piece(
        &self,
        addr: u64,
        len: usize,
        mut f: impl FnMut(*mut u8, usize, usize),
    ) -> Result<(), MemoryError> {
        let oob = MemoryError::OutOfRange { addr, len: len as u64 };
        let mut done = 0usize;
        while done < len {
            let cur = addr.checked_add(done as u64).ok_or(MemoryError::OutOfRange { addr, len: len as u64 })?;
            let region_end = self
                .regions
                .iter()
                .map(|r| (r.guest_start, r.guest_end()))
                .chain(self.roms.iter().map(|r| (r.guest_start, r.guest_start + r.len)))
                .find(|&(s, e)| cur >= s && cur < e)
                .map(|(_, e)| e);
            let Some(region_end) = region_end else { return Err(oob) };
            let piece = ((region_end - cur) as usize).min(len - done);
            let Some(ptr) = self.host_range(cur, piece as u64) else { return Err(oob) };
            f(ptr, done, piece);
            done += piece;
        }
        Ok(())
    }

    /// Copies guest memory at `addr` into `buf`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let dst = buf.as_mut_ptr();
        self.for_each_piece(addr, buf.len(), |src, off, n| {
            // SAFETY: `src..src+n` is inside a live mapping (for_each_piece
            // checked it) and `dst+off..+n` inside `buf`; they cannot overlap
            // because `buf` is a Rust allocation, not guest memory.
            unsafe { std::ptr::copy_nonoverlapping(src, dst.add(off), n) }
        })
    }

    /// Copies `buf` into guest memory at `addr`. Writes reach ROM too: this
    /// is the loaders' and devices' path, not the guest CPU's; each write
    /// is noted for [`GuestMemory::take_device_writes`].
    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<(), MemoryError> {
        // Check the whole range first so a failing write changes nothing.
        self.for_each_piece(addr, buf.len(), |_, _, _| {})?;
        let src = buf.as_ptr();
        self.for_each_piece(addr, buf.len(), |dst, off, n| {
            // SAFETY: as in `read`, with source and destination swapped.
            unsafe { std::ptr::copy_nonoverlapping(src.add(off), dst, n) }
        })?;
        self.note_device_write(addr, buf.len() as u64);
        Ok(())
    }

    fn note_device_write(&self, addr: u64, len: u64) {
        if len == 0 {
            return;
        }
        // A poisoned lock only means a panicking writer; the list is
        // still a list.
        let mut writes = self.device_writes.lock().unwrap_or_else(|e| e.into_inner());
        if !writes.all {
            if writes.ranges.len() < DEVICE_WRITES_KEPT {
                writes.ranges.push((addr, len));
            } else {
                writes.ranges = Vec::new();
                writes.all = true;
            }
        }
        self.device_writes_pending.store(true, Ordering::Release);
    }

    /// The ranges [`GuestMemory::write`] wrote since the last call, if
    /// any: a software CPU drops the code it cached from them, as QEMU
    /// drops translations under a DMA write. One atomic load when there
    /// are none. There is one taker: the machine's one software CPU (with
    /// several, each would need its own cursor into the writes).
    pub fn take_device_writes(&self) -> Option<DeviceWrites> {
        if !self.device_writes_pending.swap(false, Ordering::Acquire) {
            return None;
        }
        let mut writes = self.device_writes.lock().unwrap_or_else(|e| e.into_inner());
        Some(std::mem::take(&mut *writes))
    }

    /// Reads a little-endian integer.
    pub fn read_u64(&self, addr: u64) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian integer.
    pub fn write_u64(&self, addr: u64, v: u64) -> Result<(), MemoryError> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Reads a little-endian integer.
    pub fn read_u32(&self, addr: u64) -> Result<u32, MemoryError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a little-endian integer.
    pub fn write_u32(&self, addr: u64, v: u32) -> Result<(), MemoryError> {
        self.write(addr, &v.to_le_bytes())
    }

    /// A vm-memory view of RAM over the same host mapping, for rust-vmm
    /// crates such as linux-loader.
    pub fn as_vm_memory(&self) -> Result<GuestMemoryMmap, MemoryError> {
        let mut regions = Vec::new();
        for r in &self.regions {
            let len = usize::try_from(r.len).map_err(|e| MemoryError::VmMemory(e.to_string()))?;
            let off = usize::try_from(r.host_offset).map_err(|e| MemoryError::VmMemory(e.to_string()))?;
            // SAFETY: the range lies inside our live anonymous mapping, whose
            // protection and flags are the ones given; vm-memory does not
            // unmap raw regions, and the view must not outlive `self` (the
            // caller uses it only while loading).
            let mapping = unsafe {
                MmapRegion::build_raw(
                    self.ram_base.as_ptr().add(off),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                )
            }
            .map_err(|e| MemoryError::VmMemory(e.to_string()))?;
            let region = GuestRegionMmap::new(mapping, GuestAddress(r.guest_start))
                .ok_or_else(|| MemoryError::VmMemory("region wraps".into()))?;
            regions.push(region);
        }
        GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::VmMemory(e.to_string()))
    }

    /// Bytes of RAM the host has actually populated so far (resident).
    pub fn resident_bytes(&self) -> u64 {
        let pages = self.ram_size.div_ceil(PAGE_SIZE) as usize;
        let mut vec = vec![0u8; pages];
        // SAFETY: RAM starts page-aligned and `ram_size` bytes of the
        // mapping follow it; `vec` has one byte per page as mincore
        // requires.
        let rc = unsafe { libc::mincore(self.ram_base.as_ptr().cast(), pages * PAGE_SIZE as usize, vec.as_mut_ptr()) };
        if rc != 0 {
            return 0;
        }
        vec.iter().filter(|b| **b & 1 != 0).count() as u64 * PAGE_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend as _};

    #[test]
    fn rejects_bad_sizes() {
        assert!(GuestMemory::new(0).is_err());
        assert!(GuestMemory::new(1 << 20).is_err());
        assert!(GuestMemory::new((16 << 20) + 1).is_err());
    }

    #[test]
    fn large_guest_is_not_populated_up_front() {
        let m = GuestMemory::new(4 << 30).expect("4 GiB mapping");
        assert_eq!(m.ram_regions().len(), 2);
        m.write_u64(0x1000, 42).unwrap();
        assert!(m.resident_bytes() < (64 << 20), "resident {}", m.resident_bytes());
    }

    #[test]
    fn ram_starts_at_a_huge_page_boundary() {
        let m = GuestMemory::new(16 << 20).unwrap();
        assert_eq!(m.ram_host_address() as usize % HUGE_PAGE, 0);
        // The last byte is inside the mapping.
        m.write_u64((16 << 20) - 8, 7).unwrap();
        assert_eq!(m.read_u64((16 << 20) - 8).unwrap(), 7);
    }

    #[test]
    fn device_writes_are_noted_until_taken() {
        let m = GuestMemory::new(2 << 20).unwrap();
        assert_eq!(m.take_device_writes(), None);
        m.write(0x1000, &[1, 2, 3]).unwrap();
        m.write_u64(0x2000, 5).unwrap();
        assert!(m.write(2 << 20, &[1]).is_err(), "out of range: no write, nothing noted");
        assert_eq!(m.take_device_writes(), Some(DeviceWrites { ranges: vec![(0x1000, 3), (0x2000, 8)], all: false }));
        assert_eq!(m.take_device_writes(), None);
        for i in 0..=DEVICE_WRITES_KEPT as u64 {
            m.write_u32(0x1000 + 4 * i, 0).unwrap();
        }
        assert_eq!(m.take_device_writes(), Some(DeviceWrites { ranges: Vec::new(), all: true }));
    }

    #[test]
    fn reads_back_across_the_hole() {
        let m = GuestMemory::new(4 << 30).unwrap();
        let hi = layout::HIGH_RAM_START + 0x10;
        m.write_u64(hi, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(m.read_u64(hi).unwrap(), 0x1122_3344_5566_7788);
        // The byte just below the hole and the first above it are adjacent
        // in the host mapping but not in the guest.
        assert!(m.write(layout::PCI_HOLE_START - 4, &[0; 8]).is_err());
        assert!(m.read_u32(layout::PCI_HOLE_START).is_err());
    }

    #[test]
    fn out_of_range_write_changes_nothing() {
        let m = GuestMemory::new(2 << 20).unwrap();
        assert!(m.write((2 << 20) - 2, &[1, 2, 3, 4]).is_err());
        assert_eq!(m.read_u32((2 << 20) - 4).unwrap(), 0);
        assert!(m.read_u64(u64::MAX - 2).is_err());
    }

    #[test]
    fn roms_are_readable_and_must_not_overlap() {
        let mut m = GuestMemory::new(16 << 20).unwrap();
        m.add_rom(0xffff_0000, &[0xea; 0x10000]).unwrap();
        assert_eq!(m.read_u32(0xffff_fff0).unwrap(), 0xeaea_eaea);
        assert!(m.add_rom(0x1000, &[0; 16]).is_err());
        assert!(m.add_rom(0xffff_8000, &[0; 16]).is_err());
        assert!(m.add_rom(0xffff_ffff_ffff_f000, &[0; 0x2000]).is_err());
    }

    #[test]
    fn vm_memory_view_shares_the_mapping() {
        let m = GuestMemory::new(8 << 20).unwrap();
        let vm = m.as_vm_memory().unwrap();
        vm.write_obj(0xdead_beefu32, GuestAddress(0x2000)).unwrap();
        assert_eq!(m.read_u32(0x2000).unwrap(), 0xdead_beef);
        assert_eq!(vm.num_regions(), 1);
    }
}
