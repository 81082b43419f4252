//! The x86 Linux boot protocol (Documentation/arch/x86/boot.rst), 64-bit
//! entry: linux-loader places the protected-mode kernel; this module checks
//! the image, fills `boot_params` (the zero page) with the setup header, E820
//! map, command line, initrd and ACPI RSDP, and starts the CPU in long mode
//! at `startup_64` with RSI pointing at the zero page.

use std::io::Cursor;
use std::path::Path;

use emu_core::cpu::reg;
use emu_core::layout::{self, E820Kind};
use emu_core::GuestMemory;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{bzimage::BzImage, KernelLoader};
use vm_memory::GuestAddress;

use super::{boot_structs, Boot};
use crate::acpi;
use crate::error::{Error, Result};

/// The zero page.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// The boot stack, growing down below the page tables.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Room for the command line, up to the EBDA's neighbourhood.
pub const CMDLINE_MAX_SIZE: usize = 0x1_0000;

const HEADER_MAGIC: u32 = 0x5372_6448; // "HdrS"
const SETUP_HEADER_OFFSET: usize = 0x1f1;
const SETUP_HEADER_END: usize = 0x268;
const XLF_KERNEL_64: u16 = 1 << 0;
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const LOADED_HIGH: u8 = 1 << 0;
const CAN_USE_HEAP: u8 = 1 << 7;
/// `startup_64` lies this far into the protected-mode kernel.
const STARTUP_64_OFFSET: u64 = 0x200;

/// Whether `data` carries the bzImage header signature.
pub fn has_bzimage_signature(data: &[u8]) -> bool {
    data.get(0x202..0x206) == Some(b"HdrS")
}

fn le16(d: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([d[off], d[off + 1]])
}

fn le32(d: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([d[off], d[off + 1], d[off + 2], d[off + 3]])
}

/// The header fields this loader checks, read straight from the file.
#[derive(Debug, Clone, Copy)]
struct HeaderFacts {
    version: u16,
    protected_size: usize,
    init_size: u64,
}

fn check_image(path: &Path, data: &[u8]) -> Result<HeaderFacts> {
    let bad = |p: String| Error::bad_file(path, p);
    if data.len() < SETUP_HEADER_END {
        return Err(bad(format!("is only {} bytes, too short to be a Linux bzImage", data.len())));
    }
    if le32(data, 0x202) != HEADER_MAGIC {
        return Err(bad("is not a Linux bzImage (no HdrS signature at 0x202)".into()));
    }
    let version = le16(data, 0x206);
    if version < 0x020c {
        return Err(bad(format!(
            "uses boot protocol {}.{:02}; popek needs 2.12 or later (a 64-bit entry point)",
            version >> 8,
            version & 0xff
        )));
    }
    if data[0x211] & LOADED_HIGH == 0 {
        return Err(bad("is a zImage (not loaded high); only bzImage is supported".into()));
    }
    let xloadflags = le16(data, 0x236);
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(bad("has no 64-bit entry point (XLF_KERNEL_64 is clear)".into()));
    }
    let setup_sects = match data[SETUP_HEADER_OFFSET] {
        0 => 4,
        n => usize::from(n),
    };
    let protected_size = le32(data, 0x1f4) as usize * 16;
    let expected = (setup_sects + 1) * 512 + protected_size;
    if data.len() < expected {
        return Err(bad(format!(
            "is truncated: its header describes {expected} bytes but the file has {}",
            data.len()
        )));
    }
    Ok(HeaderFacts { version, protected_size, init_size: u64::from(le32(data, 0x260)) })
}

fn e820_table(mem: &GuestMemory) -> Vec<boot_e820_entry> {
    let mut map: Vec<boot_e820_entry> = layout::e820_map(mem.ram_size())
        .into_iter()
        .map(|e| boot_e820_entry { addr: e.addr, size: e.size, r#type: e.kind as u32 })
        .collect();
    // KVM's real-mode TSS and identity-map pages, as QEMU reserves them.
    map.push(boot_e820_entry {
        addr: accel_kvm::KVM_IDENTITY_MAP_ADDR,
        size: 0x4000,
        r#type: E820Kind::Reserved as u32,
    });
    map
}

/// Loads the bzImage in `data` (read from `path`) with an optional initrd and
/// the command line, and returns the 64-bit entry state.
pub fn load(
    mem: &GuestMemory,
    path: &Path,
    data: &[u8],
    initrd: Option<(&Path, &[u8])>,
    cmdline: &str,
) -> Result<Boot> {
    let facts = check_image(path, data)?;
    let vm_mem = mem.as_vm_memory()?;
    let loaded = BzImage::load(
        &vm_mem,
        None,
        &mut Cursor::new(data),
        Some(GuestAddress(layout::HIGH_MEMORY_START)),
    )
    .map_err(|e| Error::bad_file(path, format!("cannot be loaded: {e}")))?;
    let Some(mut hdr) = loaded.setup_header else {
        return Err(Error::bad_file(path, "has no setup header"));
    };
    let kernel_start = loaded.kernel_load.0;
    // The kernel decompresses in place and needs init_size bytes from its
    // load address (boot protocol 2.10+).
    let kernel_extent = facts.init_size.max(facts.protected_size as u64);
    let kernel_top = kernel_start + kernel_extent;
    if kernel_top > mem.low_ram_end() {
        return Err(Error::Config(format!(
            "{} needs {} MiB of guest memory to decompress; give --memory more",
            path.display(),
            kernel_top.div_ceil(1 << 20)
        )));
    }

    // Command line, NUL-terminated, within the header's limit.
    let cmdline_limit = (hdr.cmdline_size as usize).min(CMDLINE_MAX_SIZE - 1);
    if cmdline.len() > cmdline_limit {
        return Err(Error::Config(format!(
            "the kernel command line is {} bytes; this kernel accepts at most {cmdline_limit}",
            cmdline.len()
        )));
    }
    if cmdline.bytes().any(|b| b == 0) {
        return Err(Error::Config("the kernel command line contains a NUL byte".into()));
    }
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    mem.write(CMDLINE_ADDR, &line)?;

    hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    hdr.loadflags |= CAN_USE_HEAP;
    hdr.heap_end_ptr = 0xfe00;

    // The initrd goes as high as the kernel allows, page-aligned, as QEMU
    // and GRUB place it.
    let mut initrd_range = None;
    if let Some((initrd_path, initrd_data)) = initrd {
        let size = initrd_data.len() as u64;
        let limit = (u64::from(hdr.initrd_addr_max) + 1).min(mem.low_ram_end());
        let addr = limit.checked_sub(size).map(|a| a & !0xfff);
        match addr {
            Some(addr) if addr >= kernel_top => {
                mem.write(addr, initrd_data)?;
                hdr.ramdisk_image = addr as u32;
                hdr.ramdisk_size = size as u32;
                initrd_range = Some((addr, size));
            }
            _ => {
                return Err(Error::Config(format!(
                    "{} ({} MiB) does not fit in guest memory beside the kernel; give --memory more",
                    initrd_path.display(),
                    size.div_ceil(1 << 20)
                )))
            }
        }
    }

    let mut params = boot_params { hdr, ..Default::default() };
    params.acpi_rsdp_addr = acpi::RSDP_ADDR;
    let e820 = e820_table(mem);
    for (slot, e) in params.e820_table.iter_mut().zip(&e820) {
        *slot = *e;
    }
    params.e820_entries = e820.len().min(params.e820_table.len()) as u8;
    LinuxBootConfigurator::write_bootparams::<vm_memory::GuestMemoryMmap>(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_ADDR)),
        &vm_mem,
    )
    .map_err(|e| Error::Config(format!("cannot write boot_params: {e}")))?;

    let mut cpu = boot_structs::long_mode(mem)?;
    cpu.rip = kernel_start + STARTUP_64_OFFSET;
    cpu.gpr[reg::RSI] = ZERO_PAGE_ADDR;
    cpu.gpr[reg::RSP] = BOOT_STACK_POINTER;
    cpu.gpr[reg::RBP] = BOOT_STACK_POINTER;
    let summary = format!(
        "Linux bzImage {} (boot protocol {}.{:02}, {} KiB at {:#x}){}",
        path.display(),
        facts.version >> 8,
        facts.version & 0xff,
        facts.protected_size / 1024,
        kernel_start,
        initrd_range.map(|(a, s)| format!(", initrd {} KiB at {a:#x}", s / 1024)).unwrap_or_default()
    );
    Ok(Boot { cpu, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal image with a valid header: enough for the checks, and
    /// loadable (its "kernel" is padding).
    pub(crate) fn fake_bzimage(version: u16, xloadflags: u16, protected_size: usize) -> Vec<u8> {
        let setup_sects = 4u8;
        let mut d = vec![0u8; (usize::from(setup_sects) + 1) * 512 + protected_size];
        d[SETUP_HEADER_OFFSET] = setup_sects;
        d[0x1f4..0x1f8].copy_from_slice(&((protected_size / 16) as u32).to_le_bytes());
        d[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        d[0x202..0x206].copy_from_slice(b"HdrS");
        d[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        d[0x211] = LOADED_HIGH;
        d[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        d[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        d[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        d[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes());
        d[0x260..0x264].copy_from_slice(&(4u32 << 20).to_le_bytes());
        d
    }

    fn params(mem: &GuestMemory) -> boot_params {
        let mut p = boot_params::default();
        // SAFETY: boot_params is plain old data; every byte pattern is valid.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut((&mut p as *mut boot_params).cast::<u8>(), std::mem::size_of::<boot_params>())
        };
        mem.read(ZERO_PAGE_ADDR, bytes).unwrap();
        p
    }

    #[test]
    fn fills_the_zero_page_and_entry_state() {
        let mem = GuestMemory::new(64 << 20).unwrap();
        let image = fake_bzimage(0x020f, XLF_KERNEL_64, 64 * 1024);
        let initrd = vec![0x5au8; 10_000];
        let boot = load(&mem, Path::new("k"), &image, Some((Path::new("i"), &initrd)), "console=ttyS0").unwrap();
        let p = params(&mem);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        let mut line = [0u8; 14];
        mem.read(CMDLINE_ADDR, &mut line).unwrap();
        assert_eq!(&line, b"console=ttyS0\0");
        // The initrd sits page-aligned at the top of RAM.
        let (addr, size) = ({ p.hdr.ramdisk_image }, { p.hdr.ramdisk_size });
        assert_eq!(size, 10_000);
        assert_eq!(addr % 4096, 0);
        assert!(u64::from(addr) + 10_000 <= 64 << 20 && u64::from(addr) + 10_000 + 4096 > 64 << 20);
        let mut b = [0u8; 1];
        mem.read(u64::from(addr) + 9_999, &mut b).unwrap();
        assert_eq!(b[0], 0x5a);
        // E820: low RAM, EBDA, BIOS area, extended RAM, KVM's pages.
        assert_eq!(p.e820_entries, 5);
        let e = p.e820_table[3];
        assert_eq!(({ e.addr }, { e.size }, { e.r#type }), (1 << 20, 63 << 20, 1));
        assert_eq!({ p.acpi_rsdp_addr }, acpi::RSDP_ADDR);
        assert_eq!(boot.cpu.rip, 0x10_0200);
        assert_eq!(boot.cpu.gpr[reg::RSI], ZERO_PAGE_ADDR);
        assert!(boot.cpu.long_mode());
    }

    #[test]
    fn rejects_bad_images_with_reasons() {
        let mem = GuestMemory::new(64 << 20).unwrap();
        let check = |img: &[u8], want: &str| {
            let err = load(&mem, Path::new("vmlinuz"), img, None, "").unwrap_err().to_string();
            assert!(err.starts_with("vmlinuz: ") && err.contains(want), "{err}");
        };
        check(&[0u8; 100], "too short");
        check(&[0u8; 0x1000], "no HdrS");
        check(&fake_bzimage(0x0206, XLF_KERNEL_64, 4096), "boot protocol 2.06");
        check(&fake_bzimage(0x020f, 0, 4096), "no 64-bit entry");
        let full = fake_bzimage(0x020f, XLF_KERNEL_64, 64 * 1024);
        check(&full[..full.len() - 1000], "truncated");
    }

    #[test]
    fn rejects_what_does_not_fit() {
        let mem = GuestMemory::new(4 << 20).unwrap();
        let image = fake_bzimage(0x020f, XLF_KERNEL_64, 4096);
        let err = load(&mem, Path::new("k"), &image, None, "").unwrap_err().to_string();
        assert!(err.contains("needs 5 MiB"), "{err}");
        let mem = GuestMemory::new(8 << 20).unwrap();
        let big = vec![0u8; 4 << 20];
        let err = load(&mem, Path::new("k"), &image, Some((Path::new("big.img"), &big)), "").unwrap_err().to_string();
        assert!(err.contains("big.img (4 MiB) does not fit"), "{err}");
        let err = load(&mem, Path::new("k"), &image, None, &"x".repeat(3000)).unwrap_err().to_string();
        assert!(err.contains("at most 2048"), "{err}");
    }
}
