//! QEMU's firmware configuration device (fw_cfg) in its x86 I/O-port form,
//! as QEMU's `docs/specs/fw_cfg.rst` specifies it and SeaBIOS uses it.
//!
//! # Ports
//!
//! * 0x510, selector (16-bit write, little-endian): selects an item and
//!   resets the data offset to 0. Bit 14 (the old write channel) is ignored
//!   for lookups; bit 15 selects the architecture-specific items. Reads of
//!   the selector port return 0.
//! * 0x511, data (8-bit reads): the next byte of the selected item; a wider
//!   read returns that many consecutive bytes. Past the end, or for an item
//!   that does not exist, reads return 0 and the offset stops. Writes are
//!   ignored, as in QEMU since 2.4.
//! * 0x514, DMA address (64-bit big-endian, written as two 32-bit
//!   big-endian halves: 0x514 the high half, then 0x518 the low half, whose
//!   write starts the transfer; a 64-bit write at 0x514 starts it too). The
//!   register is 0 again after each transfer. Reads return the signature
//!   "QEMU CFG" (0x51454d5520434647 big-endian), byte by byte.
//!
//! Insert one [`FwCfg`] at [`FW_CFG_PORT_SEL`] (len [`FW_CFG_IO_LEN`]:
//! selector and data) and at [`FW_CFG_PORT_DMA`] (len [`FW_CFG_DMA_LEN`]);
//! it decodes the absolute port.
//!
//! # DMA
//!
//! The address points at a `FWCfgDmaAccess` in guest memory: control (BE32),
//! length (BE32), address (BE64). Control bit 3 selects the item in bits
//! 16-31 first; then bit 1 reads `length` bytes from the current offset into
//! guest memory (zeros past the end of the item), else bit 4 writes (every
//! item here is read-only, so a write of nonzero length fails), else bit 2
//! skips `length` bytes. The transfer completes before the port write
//! returns; control is then written back as 0, or with bit 0 (error) set
//! when guest memory was not backed or the write was refused. A descriptor
//! in unbacked memory is dropped.
//!
//! # Items
//!
//! [`FwCfg::new`] provides what QEMU's `pc` machine provides that SeaBIOS
//! looks at: [`FW_CFG_SIGNATURE`] ("QEMU"), [`FW_CFG_ID`] (3: traditional
//! and DMA interfaces), [`FW_CFG_UUID`] (zeros), [`FW_CFG_RAM_SIZE`]
//! (u64 LE), [`FW_CFG_NB_CPUS`] and [`FW_CFG_MAX_CPUS`] (u16 LE, 1),
//! [`FW_CFG_BOOT_MENU`] (u16 0: no boot menu), [`FW_CFG_IRQ0_OVERRIDE`]
//! (u32 1: the PIT is on I/O APIC pin 2, as QEMU's MADT says), and the file
//! directory [`FW_CFG_FILE_DIR`] (BE32 count, then 64-byte entries: BE32
//! size, BE16 selector, BE16 reserved, 56-byte NUL-padded name; sorted by
//! name as QEMU does). Files get selectors from [`FW_CFG_FILE_FIRST`]
//! upward in the order they are added ([`FwCfg::add_file`]); other items are
//! set with [`FwCfg::add_item`]. Items nobody added read as zeros, which
//! for the legacy count items (NUMA, ACPI tables, SMBIOS entries, E820
//! table) means "none".
//!
//! What SeaBIOS (src/fw/paravirt.c and its callers, on QEMU hardware) reads:
//!
//! * Legacy selectors: 0x0000 signature, 0x0001 ID (DMA), 0x0004 NOGRAPHIC
//!   (u16; nonzero makes SeaBIOS add "etc/sercon-port" = 0x3F8, a serial
//!   console for int 10h, unless such a file exists), 0x0005 NB_CPUS (u16,
//!   the larger of it and CMOS 0x5F + 1 is the CPU count), 0x000d NUMA
//!   (u64 node count, then per-CPU and per-node u64s), 0x000e BOOT_MENU
//!   (u16, as "etc/show-boot-menu"), 0x000f MAX_CPUS (u16, as
//!   "etc/max-cpus"), 0x0019 file directory, 0x8000 ACPI_TABLES and 0x8001
//!   SMBIOS_ENTRIES (legacy, u16 counts), 0x8002 IRQ0_OVERRIDE (as
//!   "etc/irq0-override", 1 byte), 0x8003 E820_TABLE (only when there is no
//!   "etc/e820").
//! * Files: "etc/e820" (read early, before CMOS: RAM entries set SeaBIOS's
//!   RamSize and RamSizeOver4G, reserved entries are added to its map; see
//!   [`e820_file`]); "etc/table-loader" with the files its commands name,
//!   usually "etc/acpi/tables" and "etc/acpi/rsdp" (see [`TableLoader`];
//!   its mere presence also moves SeaBIOS's ACPI PM base to 0x600, where
//!   [`crate::AcpiPm`] is); "etc/smbios/smbios-tables" and
//!   "etc/smbios/smbios-anchor"; "bootorder" (newline-separated device
//!   paths); "etc/boot-fail-wait", "etc/boot-menu-wait", "etc/boot-menu-key",
//!   "etc/boot-menu-message", "etc/sercon-port", "etc/extra-pci-roots",
//!   "etc/reserved-memory-end", "etc/msr_feature_control", "etc/threads",
//!   "etc/floppy0", "etc/floppy1" (integers, little-endian, sized by the
//!   file); "genroms/*" option ROMs (QEMU's linuxboot_dma.bin for -kernel)
//!   and "vgaroms/*".
//!
//! The direct-kernel-boot items (0x0007-0x0018, read by QEMU's linuxboot
//! option ROM rather than SeaBIOS) have selectors here but are left to the
//! machine to add.

use std::collections::BTreeMap;
use std::sync::Arc;

use emu_core::layout::E820Entry;
use emu_core::{BusDevice, GuestMemory};

use crate::{Error, Result};

mod table_loader;

pub use table_loader::{AllocZone, TableLoader};

/// Selector register port.
pub const FW_CFG_PORT_SEL: u64 = 0x510;
/// Data register port.
pub const FW_CFG_PORT_DATA: u64 = 0x511;
/// Ports at [`FW_CFG_PORT_SEL`].
pub const FW_CFG_IO_LEN: u64 = 2;
/// DMA address register port.
pub const FW_CFG_PORT_DMA: u64 = 0x514;
/// Ports at [`FW_CFG_PORT_DMA`].
pub const FW_CFG_DMA_LEN: u64 = 8;
/// What a read of the DMA address register returns ("QEMU CFG").
pub const FW_CFG_DMA_SIGNATURE: u64 = 0x5145_4d55_2043_4647;

/// "QEMU".
pub const FW_CFG_SIGNATURE: u16 = 0x0000;
/// Feature bitmap: bit 0 traditional interface, bit 1 DMA.
pub const FW_CFG_ID: u16 = 0x0001;
/// The VM's UUID, 16 bytes.
pub const FW_CFG_UUID: u16 = 0x0002;
/// RAM size in bytes, u64 LE.
pub const FW_CFG_RAM_SIZE: u16 = 0x0003;
/// Nonzero when there is no display, u16 LE.
pub const FW_CFG_NOGRAPHIC: u16 = 0x0004;
/// CPUs present at boot, u16 LE.
pub const FW_CFG_NB_CPUS: u16 = 0x0005;
/// Machine ID, u32 LE.
pub const FW_CFG_MACHINE_ID: u16 = 0x0006;
/// Direct kernel boot: load address of the kernel, u32 LE.
pub const FW_CFG_KERNEL_ADDR: u16 = 0x0007;
/// Direct kernel boot: kernel size, u32 LE.
pub const FW_CFG_KERNEL_SIZE: u16 = 0x0008;
/// Direct kernel boot: command line address, u32 LE.
pub const FW_CFG_KERNEL_CMDLINE: u16 = 0x0009;
/// Direct kernel boot: initrd load address, u32 LE.
pub const FW_CFG_INITRD_ADDR: u16 = 0x000a;
/// Direct kernel boot: initrd size, u32 LE.
pub const FW_CFG_INITRD_SIZE: u16 = 0x000b;
/// Legacy boot device, u16 LE.
pub const FW_CFG_BOOT_DEVICE: u16 = 0x000c;
/// NUMA: u64 node count, then per-CPU node u64s, then per-node sizes.
pub const FW_CFG_NUMA: u16 = 0x000d;
/// Whether to show the boot menu, u16 LE.
pub const FW_CFG_BOOT_MENU: u16 = 0x000e;
/// Maximum number of CPUs, u16 LE.
pub const FW_CFG_MAX_CPUS: u16 = 0x000f;
/// Direct kernel boot: kernel entry point, u32 LE.
pub const FW_CFG_KERNEL_ENTRY: u16 = 0x0010;
/// Direct kernel boot: the kernel's protected-mode part.
pub const FW_CFG_KERNEL_DATA: u16 = 0x0011;
/// Direct kernel boot: the initrd.
pub const FW_CFG_INITRD_DATA: u16 = 0x0012;
/// Direct kernel boot: command line address, u32 LE.
pub const FW_CFG_CMDLINE_ADDR: u16 = 0x0013;
/// Direct kernel boot: command line size, u32 LE.
pub const FW_CFG_CMDLINE_SIZE: u16 = 0x0014;
/// Direct kernel boot: the command line.
pub const FW_CFG_CMDLINE_DATA: u16 = 0x0015;
/// Direct kernel boot: setup (real-mode part) address, u32 LE.
pub const FW_CFG_SETUP_ADDR: u16 = 0x0016;
/// Direct kernel boot: setup size, u32 LE.
pub const FW_CFG_SETUP_SIZE: u16 = 0x0017;
/// Direct kernel boot: the setup code.
pub const FW_CFG_SETUP_DATA: u16 = 0x0018;
/// The file directory.
pub const FW_CFG_FILE_DIR: u16 = 0x0019;
/// The first selector given to files.
pub const FW_CFG_FILE_FIRST: u16 = 0x0020;
/// Architecture-specific items start here.
pub const FW_CFG_ARCH_LOCAL: u16 = 0x8000;
/// x86: legacy ACPI tables (u16 count, then length-prefixed tables).
pub const FW_CFG_ACPI_TABLES: u16 = FW_CFG_ARCH_LOCAL;
/// x86: legacy SMBIOS entries (u16 count, then entries).
pub const FW_CFG_SMBIOS_ENTRIES: u16 = FW_CFG_ARCH_LOCAL + 1;
/// x86: nonzero when ISA IRQ 0 is routed to I/O APIC pin 2.
pub const FW_CFG_IRQ0_OVERRIDE: u16 = FW_CFG_ARCH_LOCAL + 2;
/// x86: legacy E820 reservations (u32 count, then 20-byte entries).
pub const FW_CFG_E820_TABLE: u16 = FW_CFG_ARCH_LOCAL + 3;

/// The longest file name: the directory's name field is 56 bytes with a
/// terminating NUL.
pub const FW_CFG_FILE_NAME_MAX: usize = 55;
/// The file name SeaBIOS reads the memory map from.
pub const E820_FILE: &str = "etc/e820";

/// DMA control: error.
pub const FW_CFG_DMA_CTL_ERROR: u32 = 0x01;
/// DMA control: read.
pub const FW_CFG_DMA_CTL_READ: u32 = 0x02;
/// DMA control: skip.
pub const FW_CFG_DMA_CTL_SKIP: u32 = 0x04;
/// DMA control: select the item in bits 16-31.
pub const FW_CFG_DMA_CTL_SELECT: u32 = 0x08;
/// DMA control: write.
pub const FW_CFG_DMA_CTL_WRITE: u32 = 0x10;

/// The write-channel bit of the selector, ignored for lookups.
const SELECTOR_WRITE_CHANNEL: u16 = 0x4000;
/// File selectors stay below the write channel bit.
const FILE_SELECTOR_END: u16 = SELECTOR_WRITE_CHANNEL;
const FILE_DIR_ENTRY_LEN: usize = 64;
/// Zeros written per step when a DMA read runs past the end of an item.
const ZERO_CHUNK: usize = 64 * 1024;

/// Checks a file name for the directory and the table loader.
fn check_file_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > FW_CFG_FILE_NAME_MAX || name.contains('\0') {
        return Err(Error::FwCfgFileName(name.to_string()));
    }
    Ok(())
}

/// `name` NUL-padded to the 56-byte field of the directory and the table
/// loader (the name was checked to fit).
fn name_field(name: &str) -> [u8; FW_CFG_FILE_NAME_MAX + 1] {
    let mut field = [0u8; FW_CFG_FILE_NAME_MAX + 1];
    let len = name.len().min(FW_CFG_FILE_NAME_MAX);
    field[..len].copy_from_slice(&name.as_bytes()[..len]);
    field
}

/// The contents of "etc/e820": each entry as u64 LE address, u64 LE length,
/// u32 LE type (20 bytes, packed). QEMU lists the RAM runs (from 0 and
/// from 4 GiB) and reserved ranges; SeaBIOS reserves its own EBDA and BIOS
/// area on top.
pub fn e820_file(entries: &[E820Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 20);
    for entry in entries {
        out.extend_from_slice(&entry.addr.to_le_bytes());
        out.extend_from_slice(&entry.size.to_le_bytes());
        out.extend_from_slice(&(entry.kind as u32).to_le_bytes());
    }
    out
}

/// A file in the directory.
#[derive(Debug)]
struct FileEntry {
    select: u16,
    size: u32,
}

/// The fw_cfg device.
pub struct FwCfg {
    memory: Arc<GuestMemory>,
    items: BTreeMap<u16, Vec<u8>>,
    files: BTreeMap<String, FileEntry>,
    next_file_selector: u16,
    /// The directory item is out of date.
    directory_stale: bool,
    selector: u16,
    offset: usize,
    dma_address_high: u32,
}

impl std::fmt::Debug for FwCfg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FwCfg")
            .field("items", &self.items.keys().collect::<Vec<_>>())
            .field("files", &self.files)
            .field("selector", &self.selector)
            .field("offset", &self.offset)
            .finish()
    }
}

impl FwCfg {
    /// The device with the default items (see the module docs), doing DMA
    /// to and from `memory`.
    pub fn new(memory: Arc<GuestMemory>) -> Self {
        let ram_size = memory.ram_size();
        let mut fw_cfg = Self {
            memory,
            items: BTreeMap::new(),
            files: BTreeMap::new(),
            next_file_selector: FW_CFG_FILE_FIRST,
            directory_stale: true,
            selector: 0,
            offset: 0,
            dma_address_high: 0,
        };
        let defaults: [(u16, Vec<u8>); 8] = [
            (FW_CFG_SIGNATURE, b"QEMU".to_vec()),
            (FW_CFG_ID, 3u32.to_le_bytes().to_vec()),
            (FW_CFG_UUID, vec![0; 16]),
            (FW_CFG_RAM_SIZE, ram_size.to_le_bytes().to_vec()),
            (FW_CFG_NB_CPUS, 1u16.to_le_bytes().to_vec()),
            (FW_CFG_MAX_CPUS, 1u16.to_le_bytes().to_vec()),
            (FW_CFG_BOOT_MENU, 0u16.to_le_bytes().to_vec()),
            (FW_CFG_IRQ0_OVERRIDE, 1u32.to_le_bytes().to_vec()),
        ];
        fw_cfg.items.extend(defaults);
        fw_cfg.refresh_directory();
        fw_cfg
    }

    /// Sets a non-file item, replacing what was there. The file directory
    /// and the file selectors are not available here, nor are selectors with
    /// the write-channel bit (0x4000).
    pub fn add_item(&mut self, selector: u16, data: Vec<u8>) -> Result<()> {
        let is_file_range = (FW_CFG_FILE_FIRST..FILE_SELECTOR_END).contains(&selector);
        if selector == FW_CFG_FILE_DIR || is_file_range || selector & SELECTOR_WRITE_CHANNEL != 0 {
            return Err(Error::FwCfgReservedSelector(selector));
        }
        if u32::try_from(data.len()).is_err() {
            return Err(Error::FwCfgItemTooLarge(data.len()));
        }
        self.items.insert(selector, data);
        Ok(())
    }

    /// Adds a file under `name` (1-55 bytes, no NUL, unique) and returns its
    /// selector.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16> {
        check_file_name(name)?;
        if self.files.contains_key(name) {
            return Err(Error::FwCfgDuplicateFile(name.to_string()));
        }
        let size = u32::try_from(data.len()).map_err(|_| Error::FwCfgItemTooLarge(data.len()))?;
        let select = self.next_file_selector;
        if select >= FILE_SELECTOR_END {
            return Err(Error::FwCfgTooManyFiles);
        }
        self.next_file_selector += 1;
        self.items.insert(select, data);
        self.files
            .insert(name.to_string(), FileEntry { select, size });
        self.directory_stale = true;
        if self.selector & !SELECTOR_WRITE_CHANNEL == FW_CFG_FILE_DIR {
            self.refresh_directory();
        }
        Ok(select)
    }

    /// Adds "etc/e820" built from `entries` ([`e820_file`]).
    pub fn add_e820(&mut self, entries: &[E820Entry]) -> Result<u16> {
        self.add_file(E820_FILE, e820_file(entries))
    }

    /// The selector of file `name`.
    pub fn file_selector(&self, name: &str) -> Option<u16> {
        self.files.get(name).map(|f| f.select)
    }

    /// The contents of item `selector` (the directory as of the last time
    /// it was selected).
    fn item(&self, selector: u16) -> Option<&[u8]> {
        self.items
            .get(&(selector & !SELECTOR_WRITE_CHANNEL))
            .map(Vec::as_slice)
    }

    /// Rebuilds the directory item if files were added since it was built
    /// (on selection, so that adding many files stays linear).
    fn refresh_directory(&mut self) {
        if !std::mem::take(&mut self.directory_stale) {
            return;
        }
        let count = u32::try_from(self.files.len()).unwrap_or(u32::MAX);
        let mut dir = Vec::with_capacity(4 + self.files.len() * FILE_DIR_ENTRY_LEN);
        dir.extend_from_slice(&count.to_be_bytes());
        for (name, file) in &self.files {
            dir.extend_from_slice(&file.size.to_be_bytes());
            dir.extend_from_slice(&file.select.to_be_bytes());
            dir.extend_from_slice(&0u16.to_be_bytes());
            dir.extend_from_slice(&name_field(name));
        }
        self.items.insert(FW_CFG_FILE_DIR, dir);
    }

    /// Selects an item and rewinds, as a selector write does.
    fn select(&mut self, selector: u16) {
        self.selector = selector;
        self.offset = 0;
        if selector & !SELECTOR_WRITE_CHANNEL == FW_CFG_FILE_DIR {
            self.refresh_directory();
        }
    }

    fn current(&self) -> &[u8] {
        self.item(self.selector).unwrap_or(&[])
    }

    fn read_data_byte(&mut self) -> u8 {
        match self.current().get(self.offset).copied() {
            Some(byte) => {
                self.offset += 1;
                byte
            }
            None => 0,
        }
    }

    /// Runs the transfer described at guest-physical `addr`.
    fn dma_transfer(&mut self, addr: u64) {
        let mut desc = [0u8; 16];
        if self.memory.read(addr, &mut desc).is_err() {
            tracing::debug!("fw_cfg: DMA descriptor at {addr:#x} is not in memory");
            return;
        }
        let [c0, c1, c2, c3, l0, l1, l2, l3, address @ ..] = desc;
        let control = u32::from_be_bytes([c0, c1, c2, c3]);
        let length = u32::from_be_bytes([l0, l1, l2, l3]);
        let address = u64::from_be_bytes(address);
        if control & FW_CFG_DMA_CTL_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let len = usize::try_from(length).unwrap_or(usize::MAX);
        let ok = if control & FW_CFG_DMA_CTL_READ != 0 {
            self.dma_read(address, len)
        } else if control & FW_CFG_DMA_CTL_WRITE != 0 {
            // Every item is read-only.
            len == 0
        } else {
            if control & FW_CFG_DMA_CTL_SKIP != 0 {
                self.offset = self.offset.saturating_add(len).min(self.current().len());
            }
            true
        };
        let status = if ok { 0 } else { FW_CFG_DMA_CTL_ERROR };
        if self.memory.write(addr, &status.to_be_bytes()).is_err() {
            tracing::debug!("fw_cfg: cannot complete the DMA descriptor at {addr:#x}");
        }
    }

    /// Copies `len` bytes from the current offset to guest `address`, zeros
    /// past the end of the item. Returns whether guest memory took it all.
    fn dma_read(&mut self, address: u64, len: usize) -> bool {
        let item = self.item(self.selector).unwrap_or(&[]);
        let start = self.offset.min(item.len());
        let n = (item.len() - start).min(len);
        if n > 0 {
            let Some(bytes) = item.get(start..start + n) else {
                return false;
            };
            if self.memory.write(address, bytes).is_err() {
                return false;
            }
            self.offset = start + n;
        }
        let zeros = [0u8; ZERO_CHUNK];
        let mut done = n;
        while done < len {
            let chunk = (len - done).min(ZERO_CHUNK);
            let Some(at) = address.checked_add(done as u64) else {
                return false;
            };
            if self.memory.write(at, &zeros[..chunk]).is_err() {
                return false;
            }
            done += chunk;
        }
        true
    }

    fn write_dma_register(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0, 8) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(data);
                self.dma_address_high = 0;
                self.dma_transfer(u64::from_be_bytes(b));
            }
            (0, 4) => {
                let mut b = [0u8; 4];
                b.copy_from_slice(data);
                self.dma_address_high = u32::from_be_bytes(b);
            }
            (4, 4) => {
                let mut b = [0u8; 4];
                b.copy_from_slice(data);
                let addr =
                    (u64::from(self.dma_address_high) << 32) | u64::from(u32::from_be_bytes(b));
                self.dma_address_high = 0;
                self.dma_transfer(addr);
            }
            _ => tracing::debug!(
                "fw_cfg: {}-byte DMA register write at +{offset} ignored",
                data.len()
            ),
        }
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        let port = base.wrapping_add(offset);
        if port == FW_CFG_PORT_DATA {
            for byte in data.iter_mut() {
                *byte = self.read_data_byte();
            }
        } else if (FW_CFG_PORT_DMA..FW_CFG_PORT_DMA + FW_CFG_DMA_LEN).contains(&port) {
            let signature = FW_CFG_DMA_SIGNATURE.to_be_bytes();
            let start = (port - FW_CFG_PORT_DMA) as usize;
            for (i, byte) in data.iter_mut().enumerate() {
                *byte = signature.get(start + i).copied().unwrap_or(0);
            }
        } else {
            data.fill(0);
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let port = base.wrapping_add(offset);
        if port == FW_CFG_PORT_SEL {
            if let [lo, hi] = *data {
                self.select(u16::from_le_bytes([lo, hi]));
            } else {
                tracing::debug!("fw_cfg: {}-byte selector write ignored", data.len());
            }
        } else if (FW_CFG_PORT_DMA..FW_CFG_PORT_DMA + FW_CFG_DMA_LEN).contains(&port) {
            self.write_dma_register(port - FW_CFG_PORT_DMA, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use emu_core::layout::{self, E820Kind};

    use super::*;

    const DESC: u64 = 0x1000;
    const BUF: u64 = 0x2000;

    fn rig() -> (FwCfg, Arc<GuestMemory>) {
        let memory = Arc::new(GuestMemory::new(2 << 20).unwrap());
        (FwCfg::new(memory.clone()), memory)
    }

    fn select(f: &mut FwCfg, selector: u16) {
        f.write(FW_CFG_PORT_SEL, 0, &selector.to_le_bytes());
    }

    fn read_data(f: &mut FwCfg, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let mut b = [0u8];
                f.read(FW_CFG_PORT_SEL, 1, &mut b);
                b[0]
            })
            .collect()
    }

    /// Writes a descriptor and starts it the way SeaBIOS does: one outl of
    /// the big-endian address to 0x518.
    fn dma(f: &mut FwCfg, m: &GuestMemory, control: u32, length: u32, address: u64) -> u32 {
        let mut desc = Vec::new();
        desc.extend_from_slice(&control.to_be_bytes());
        desc.extend_from_slice(&length.to_be_bytes());
        desc.extend_from_slice(&address.to_be_bytes());
        m.write(DESC, &desc).unwrap();
        f.write(FW_CFG_PORT_DMA, 4, &(DESC as u32).to_be_bytes());
        let mut c = [0u8; 4];
        m.read(DESC, &mut c).unwrap();
        u32::from_be_bytes(c)
    }

    #[test]
    fn signature_and_id_through_the_data_port() {
        let (mut f, _) = rig();
        select(&mut f, FW_CFG_SIGNATURE);
        assert_eq!(read_data(&mut f, 4), b"QEMU");
        assert_eq!(read_data(&mut f, 2), [0, 0], "past the end");
        select(&mut f, FW_CFG_ID);
        assert_eq!(read_data(&mut f, 4), [3, 0, 0, 0]);
        select(&mut f, FW_CFG_RAM_SIZE);
        assert_eq!(read_data(&mut f, 8), (2u64 << 20).to_le_bytes());
        select(&mut f, FW_CFG_NB_CPUS);
        assert_eq!(read_data(&mut f, 2), [1, 0]);
        select(&mut f, FW_CFG_IRQ0_OVERRIDE);
        assert_eq!(read_data(&mut f, 1), [1]);
        select(&mut f, 0x1234);
        assert_eq!(read_data(&mut f, 3), [0, 0, 0], "no such item");
    }

    #[test]
    fn selector_resets_the_offset() {
        let (mut f, _) = rig();
        select(&mut f, FW_CFG_SIGNATURE);
        assert_eq!(read_data(&mut f, 2), b"QE");
        select(&mut f, FW_CFG_SIGNATURE);
        assert_eq!(read_data(&mut f, 4), b"QEMU");
        // A wide read takes consecutive bytes; the write-channel bit is
        // ignored.
        select(&mut f, FW_CFG_SIGNATURE | 0x4000);
        let mut w = [0u8; 4];
        f.read(FW_CFG_PORT_SEL, 1, &mut w);
        assert_eq!(&w, b"QEMU");
        // Byte writes to the selector, and data writes, are ignored.
        f.write(FW_CFG_PORT_SEL, 0, &[1]);
        f.write(FW_CFG_PORT_SEL, 1, &[1]);
        assert_eq!(read_data(&mut f, 1), [0]);
        let mut r = [0xffu8; 2];
        f.read(FW_CFG_PORT_SEL, 0, &mut r);
        assert_eq!(r, [0, 0]);
    }

    #[test]
    fn file_directory_layout_and_lookup() {
        let (mut f, _) = rig();
        assert_eq!(f.add_file("etc/zzz", vec![1, 2, 3]), Ok(0x20));
        assert_eq!(
            f.add_file("bootorder", b"/pci@i0cf8/*@1\n".to_vec()),
            Ok(0x21)
        );
        select(&mut f, FW_CFG_FILE_DIR);
        assert_eq!(read_data(&mut f, 4), [0, 0, 0, 2]);
        // Sorted by name: "bootorder" first.
        let entry = read_data(&mut f, 64);
        assert_eq!(&entry[0..4], &15u32.to_be_bytes());
        assert_eq!(&entry[4..6], &0x21u16.to_be_bytes());
        assert_eq!(&entry[6..8], &[0, 0]);
        assert_eq!(&entry[8..17], b"bootorder");
        assert!(entry[17..].iter().all(|&b| b == 0));
        let entry = read_data(&mut f, 64);
        assert_eq!(&entry[0..8], &[0, 0, 0, 3, 0, 0x20, 0, 0]);
        assert_eq!(&entry[8..16], b"etc/zzz\0");
        assert_eq!(read_data(&mut f, 1), [0], "end of the directory");
        assert_eq!(f.file_selector("etc/zzz"), Some(0x20));
        assert_eq!(f.file_selector("etc/nope"), None);
        select(&mut f, 0x20);
        assert_eq!(read_data(&mut f, 4), [1, 2, 3, 0]);
    }

    #[test]
    fn file_name_rules() {
        let (mut f, _) = rig();
        let max = "x".repeat(55);
        assert!(f.add_file(&max, vec![]).is_ok());
        assert_eq!(
            f.add_file(&"x".repeat(56), vec![]),
            Err(Error::FwCfgFileName("x".repeat(56)))
        );
        assert!(matches!(
            f.add_file("", vec![]),
            Err(Error::FwCfgFileName(_))
        ));
        assert!(matches!(
            f.add_file("a\0b", vec![]),
            Err(Error::FwCfgFileName(_))
        ));
        assert_eq!(
            f.add_file(&max, vec![1]),
            Err(Error::FwCfgDuplicateFile(max.clone()))
        );
        select(&mut f, FW_CFG_FILE_DIR);
        let dir = read_data(&mut f, 4 + 64);
        assert_eq!(&dir[12..67], max.as_bytes());
        assert_eq!(dir[67], 0, "NUL-terminated");
        assert_eq!(
            f.add_item(FW_CFG_FILE_DIR, vec![]),
            Err(Error::FwCfgReservedSelector(0x19))
        );
        assert_eq!(
            f.add_item(0x20, vec![]),
            Err(Error::FwCfgReservedSelector(0x20))
        );
        assert_eq!(
            f.add_item(0x4001, vec![]),
            Err(Error::FwCfgReservedSelector(0x4001))
        );
        assert_eq!(f.add_item(FW_CFG_NOGRAPHIC, vec![1, 0]), Ok(()));
        assert_eq!(f.item(FW_CFG_NOGRAPHIC), Some(&[1u8, 0][..]));
    }

    #[test]
    fn runs_out_of_file_selectors() {
        let (mut f, _) = rig();
        let slots = usize::from(FILE_SELECTOR_END - FW_CFG_FILE_FIRST);
        for i in 0..slots {
            f.add_file(&format!("f{i}"), vec![]).unwrap();
        }
        assert_eq!(
            f.add_file("one-more", vec![]),
            Err(Error::FwCfgTooManyFiles)
        );
        select(&mut f, FW_CFG_FILE_DIR);
        assert_eq!(read_data(&mut f, 4), (slots as u32).to_be_bytes());
    }

    #[test]
    fn dma_reads_a_file_into_guest_memory() {
        let (mut f, m) = rig();
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let sel = f.add_file("etc/blob", data.clone()).unwrap();
        let control = (u32::from(sel) << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ;
        assert_eq!(
            dma(&mut f, &m, control, 5000, BUF),
            0,
            "control cleared: done"
        );
        let mut back = vec![0u8; 5000];
        m.read(BUF, &mut back).unwrap();
        assert_eq!(back, data);
        // Past the end: zeros.
        m.write(BUF, &[0xff; 8]).unwrap();
        assert_eq!(dma(&mut f, &m, FW_CFG_DMA_CTL_READ, 8, BUF), 0);
        assert_eq!(m.read_u64(BUF).unwrap(), 0);
    }

    #[test]
    fn dma_select_skip_read() {
        let (mut f, m) = rig();
        let sel = f.add_file("etc/text", b"0123456789".to_vec()).unwrap();
        let control = (u32::from(sel) << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_SKIP;
        assert_eq!(dma(&mut f, &m, control, 4, 0), 0);
        assert_eq!(dma(&mut f, &m, FW_CFG_DMA_CTL_READ, 3, BUF), 0);
        let mut b = [0u8; 3];
        m.read(BUF, &mut b).unwrap();
        assert_eq!(&b, b"456");
        // The port and DMA share the offset.
        assert_eq!(read_data(&mut f, 2), b"78");
        // Skipping past the end stops at the end.
        assert_eq!(dma(&mut f, &m, FW_CFG_DMA_CTL_SKIP, u32::MAX, 0), 0);
        assert_eq!(read_data(&mut f, 1), [0]);
        // Select only.
        assert_eq!(
            dma(
                &mut f,
                &m,
                (u32::from(sel) << 16) | FW_CFG_DMA_CTL_SELECT,
                0,
                0
            ),
            0
        );
        assert_eq!(read_data(&mut f, 1), b"0");
        // SeaBIOS's first DMA use: FW_CFG_ID by select + read.
        let control = (u32::from(FW_CFG_ID) << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ;
        assert_eq!(dma(&mut f, &m, control, 4, BUF), 0);
        assert_eq!(m.read_u32(BUF).unwrap(), 3);
    }

    #[test]
    fn dma_errors_instead_of_panicking() {
        let (mut f, m) = rig();
        select(&mut f, FW_CFG_SIGNATURE);
        // Destination not backed.
        assert_eq!(
            dma(&mut f, &m, FW_CFG_DMA_CTL_READ, 4, 0x1000_0000),
            FW_CFG_DMA_CTL_ERROR
        );
        assert_eq!(
            dma(&mut f, &m, FW_CFG_DMA_CTL_READ, 4, u64::MAX - 1),
            FW_CFG_DMA_CTL_ERROR
        );
        // Zeros past the end into unbacked memory.
        assert_eq!(
            dma(&mut f, &m, FW_CFG_DMA_CTL_READ, u32::MAX, BUF),
            FW_CFG_DMA_CTL_ERROR
        );
        // Writes are refused.
        assert_eq!(
            dma(&mut f, &m, FW_CFG_DMA_CTL_WRITE, 4, BUF),
            FW_CFG_DMA_CTL_ERROR
        );
        assert_eq!(dma(&mut f, &m, FW_CFG_DMA_CTL_WRITE, 0, BUF), 0);
        // A descriptor outside memory is dropped; the high half resets.
        f.write(FW_CFG_PORT_DMA, 0, &1u32.to_be_bytes());
        f.write(FW_CFG_PORT_DMA, 4, &(DESC as u32).to_be_bytes());
        f.write(FW_CFG_PORT_DMA, 0, &u64::MAX.to_be_bytes());
        f.write(FW_CFG_PORT_DMA, 4, &[1, 2]);
        f.write(FW_CFG_PORT_DMA, 2, &[1, 2, 3, 4]);
        // A 64-bit write starts a transfer too.
        select(&mut f, FW_CFG_SIGNATURE);
        let mut desc = Vec::new();
        desc.extend_from_slice(&FW_CFG_DMA_CTL_READ.to_be_bytes());
        desc.extend_from_slice(&4u32.to_be_bytes());
        desc.extend_from_slice(&BUF.to_be_bytes());
        m.write(DESC, &desc).unwrap();
        f.write(FW_CFG_PORT_DMA, 0, &DESC.to_be_bytes());
        assert_eq!(m.read_u32(DESC).unwrap(), 0);
        let mut b = [0u8; 4];
        m.read(BUF, &mut b).unwrap();
        assert_eq!(&b, b"QEMU");
    }

    #[test]
    fn dma_register_reads_the_signature() {
        let (mut f, _) = rig();
        let mut q = [0u8; 8];
        for (i, byte) in q.iter_mut().enumerate() {
            let mut b = [0u8];
            f.read(FW_CFG_PORT_DMA, i as u64, &mut b);
            *byte = b[0];
        }
        assert_eq!(&q, b"QEMU CFG");
        let mut d = [0u8; 4];
        f.read(FW_CFG_PORT_DMA, 4, &mut d);
        assert_eq!(&d, b" CFG");
        let mut over = [0xffu8; 8];
        f.read(FW_CFG_PORT_DMA, 6, &mut over);
        assert_eq!(&over, b"FG\0\0\0\0\0\0");
    }

    #[test]
    fn e820_file_format() {
        let map = layout::e820_map(128 << 20);
        let bytes = e820_file(&map);
        assert_eq!(bytes.len(), map.len() * 20);
        assert_eq!(&bytes[0..8], &0u64.to_le_bytes());
        assert_eq!(&bytes[8..16], &0x9fc00u64.to_le_bytes());
        assert_eq!(&bytes[16..20], &1u32.to_le_bytes());
        assert_eq!(&bytes[36..40], &(E820Kind::Reserved as u32).to_le_bytes());
        let (mut f, _) = rig();
        let sel = f.add_e820(&map).unwrap();
        assert_eq!(f.file_selector("etc/e820"), Some(sel));
        select(&mut f, sel);
        assert_eq!(read_data(&mut f, bytes.len()), bytes);
    }
}
