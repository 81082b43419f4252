//! Multiboot (v1) kernels, as QEMU's `-kernel` loads them: the format of
//! kvm-unit-tests' images and many hobby and test kernels.
//!
//! The header is found in the first 8 KiB; the image is placed either from
//! its ELF32 program headers or, when the header sets the address-fields
//! flag (bit 16), from the header's own load addresses. The CPU starts in
//! flat 32-bit protected mode with paging off, EAX = 0x2BADB002 and EBX
//! pointing at the multiboot information structure (memory sizes, E820-style
//! map, command line, the initrd as the one module, the loader's name).

use std::path::Path;

use emu_core::cpu::reg;
use emu_core::layout;
use emu_core::GuestMemory;

use super::{boot_structs, Boot};
use crate::error::{Error, Result};

/// The header magic.
pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// What the loader leaves in EAX.
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;
/// Where the information structure and what it points at go: below the
/// EBDA, clear of kernels (which load at 1 MiB and up).
pub const INFO_ADDR: u64 = 0x9000;
const MMAP_ADDR: u64 = INFO_ADDR + 0x100;
const MODS_ADDR: u64 = INFO_ADDR + 0x400;
const NAME_ADDR: u64 = INFO_ADDR + 0x480;
const CMDLINE_ADDR: u64 = INFO_ADDR + 0x500;
const MODULE_CMDLINE_ADDR: u64 = INFO_ADDR + 0x1500;
const CMDLINE_MAX: usize = 0x1000;
const SEARCH_LIMIT: usize = 8192;

const FLAG_PAGE_ALIGN: u32 = 1 << 0;
const FLAG_MEMORY_INFO: u32 = 1 << 1;
const FLAG_VIDEO_MODE: u32 = 1 << 2;
const FLAG_ADDRESSES: u32 = 1 << 16;

const INFO_MEMORY: u32 = 1 << 0;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MODS: u32 = 1 << 3;
const INFO_MMAP: u32 = 1 << 6;
const INFO_LOADER_NAME: u32 = 1 << 9;

fn le32(d: &[u8], off: usize) -> Option<u32> {
    d.get(off..off + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A multiboot header found in an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// File offset of the header.
    pub offset: usize,
    /// The header's flags.
    pub flags: u32,
}

/// Finds a valid multiboot header (magic + flags + checksum == 0) at a
/// 4-byte boundary in the first 8 KiB.
pub fn find_header(data: &[u8]) -> Option<Header> {
    let end = data.len().min(SEARCH_LIMIT);
    (0..end.saturating_sub(11)).step_by(4).find_map(|offset| {
        let magic = le32(data, offset)?;
        let flags = le32(data, offset + 4)?;
        let checksum = le32(data, offset + 8)?;
        (magic == HEADER_MAGIC && magic.wrapping_add(flags).wrapping_add(checksum) == 0)
            .then_some(Header { offset, flags })
    })
}

/// A piece of the image to copy into guest memory.
struct Segment {
    file_offset: usize,
    file_size: usize,
    guest_addr: u64,
    mem_size: u64,
}

fn elf_segments(path: &Path, data: &[u8]) -> Result<(Vec<Segment>, u64)> {
    use goblin::elf::{header, program_header::PT_LOAD, Elf};
    let bad = |p: String| Error::bad_file(path, p);
    let elf = Elf::parse(data).map_err(|e| bad(format!("has a multiboot header but a bad ELF image: {e}")))?;
    if elf.is_64 {
        // QEMU refuses these too: multiboot v1 enters in 32-bit mode.
        return Err(bad("is a 64-bit ELF; multiboot v1 kernels must be ELF32 (or use the header's address fields)".into()));
    }
    if elf.header.e_machine != header::EM_386 {
        return Err(bad(format!("is an ELF for machine {}, not i386", elf.header.e_machine)));
    }
    let segs = elf
        .program_headers
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD && ph.p_memsz > 0)
        .map(|ph| {
            let file_offset = usize::try_from(ph.p_offset).map_err(|_| bad("has an ELF segment offset out of range".into()))?;
            let file_size = usize::try_from(ph.p_filesz).map_err(|_| bad("has an ELF segment size out of range".into()))?;
            if file_offset.checked_add(file_size).is_none_or(|end| end > data.len()) {
                return Err(bad(format!(
                    "is truncated: an ELF segment needs bytes {file_offset:#x}..{:#x} but the file has {:#x}",
                    file_offset.saturating_add(file_size),
                    data.len()
                )));
            }
            Ok(Segment { file_offset, file_size, guest_addr: ph.p_paddr, mem_size: ph.p_memsz.max(ph.p_filesz) })
        })
        .collect::<Result<Vec<_>>>()?;
    if segs.is_empty() {
        return Err(bad("has no loadable ELF segments".into()));
    }
    Ok((segs, elf.entry))
}

/// The header's address fields (flag bit 16): header_addr, load_addr,
/// load_end_addr, bss_end_addr, entry_addr.
fn address_segments(path: &Path, data: &[u8], h: Header) -> Result<(Vec<Segment>, u64)> {
    let bad = |p: &str| Error::bad_file(path, p.to_string());
    let field = |i: usize| le32(data, h.offset + 12 + 4 * i).ok_or_else(|| bad("has a truncated multiboot header"));
    let (header_addr, load_addr, load_end, bss_end, entry) = (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    let header_offset = h.offset as u64;
    // The file offset that load_addr corresponds to.
    let start = header_offset
        .checked_sub(u64::from(header_addr.wrapping_sub(load_addr)))
        .filter(|_| header_addr >= load_addr)
        .ok_or_else(|| bad("has multiboot address fields that put the header before the load address"))?;
    let file_size = if load_end == 0 {
        data.len() as u64 - start
    } else {
        u64::from(load_end.checked_sub(load_addr).ok_or_else(|| bad("has load_end_addr below load_addr"))?)
    };
    if start + file_size > data.len() as u64 {
        return Err(bad("is truncated: the multiboot header describes more bytes than the file has"));
    }
    let mem_size = if bss_end == 0 { file_size } else { u64::from(bss_end.saturating_sub(load_addr)).max(file_size) };
    Ok((
        vec![Segment { file_offset: start as usize, file_size: file_size as usize, guest_addr: u64::from(load_addr), mem_size }],
        u64::from(entry),
    ))
}

/// Loads the multiboot kernel in `data` (read from `path`); `initrd`
/// becomes module 0 and `cmdline` the kernel's command line.
pub fn load(
    mem: &GuestMemory,
    path: &Path,
    data: &[u8],
    initrd: Option<(&Path, &[u8])>,
    cmdline: &str,
) -> Result<Boot> {
    let header = find_header(data).ok_or_else(|| Error::bad_file(path, "has no multiboot header in its first 8 KiB"))?;
    let known = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE | FLAG_ADDRESSES;
    if header.flags & 0xffff & !known != 0 {
        return Err(Error::bad_file(path, format!("asks for unsupported multiboot features (flags {:#x})", header.flags)));
    }
    let (segments, entry) = if header.flags & FLAG_ADDRESSES != 0 {
        address_segments(path, data, header)?
    } else {
        elf_segments(path, data)?
    };

    let low_end = mem.low_ram_end();
    let mut kernel_end = 0u64;
    for s in &segments {
        let end = s.guest_addr.checked_add(s.mem_size).filter(|&e| e <= low_end);
        let Some(end) = end.filter(|_| s.guest_addr >= layout::HIGH_MEMORY_START) else {
            return Err(Error::bad_file(
                path,
                format!(
                    "wants {:#x}..{:#x}, outside guest RAM above 1 MiB (RAM ends at {low_end:#x})",
                    s.guest_addr,
                    s.guest_addr.saturating_add(s.mem_size)
                ),
            ));
        };
        mem.write(s.guest_addr, &data[s.file_offset..s.file_offset + s.file_size])?;
        // Zero the BSS: guest RAM starts zeroed, but be explicit for reloads.
        let bss = usize::try_from(s.mem_size - s.file_size as u64).unwrap_or(0);
        if bss > 0 {
            mem.write(s.guest_addr + s.file_size as u64, &vec![0u8; bss])?;
        }
        kernel_end = kernel_end.max(end);
    }

    let mut flags = INFO_MEMORY | INFO_MMAP | INFO_LOADER_NAME | INFO_CMDLINE | INFO_MODS;
    let mut info = [0u32; 22];
    let mem_upper_kib = (low_end - layout::HIGH_MEMORY_START) / 1024;
    info[1] = (layout::EBDA_START / 1024) as u32; // mem_lower
    info[2] = mem_upper_kib.min(u64::from(u32::MAX)) as u32; // mem_upper

    if cmdline.len() >= CMDLINE_MAX || cmdline.bytes().any(|b| b == 0) {
        return Err(Error::Config(format!("the kernel command line must be under {CMDLINE_MAX} bytes with no NUL")));
    }
    // QEMU passes the kernel's file name first, as GRUB does.
    let full_cmdline = if cmdline.is_empty() { path.display().to_string() } else { format!("{} {cmdline}", path.display()) };
    let mut line = full_cmdline.into_bytes();
    line.truncate(CMDLINE_MAX - 1);
    line.push(0);
    mem.write(CMDLINE_ADDR, &line)?;
    info[4] = CMDLINE_ADDR as u32;

    // The initrd is module 0, page-aligned after the kernel.
    let mut mods_count = 0;
    if let Some((mod_path, mod_data)) = initrd {
        let start = (kernel_end + 0xfff) & !0xfff;
        let end = start + mod_data.len() as u64;
        if end > low_end {
            return Err(Error::Config(format!(
                "{} does not fit in guest memory after the kernel; give --memory more",
                mod_path.display()
            )));
        }
        mem.write(start, mod_data)?;
        let mut name = mod_path.display().to_string().into_bytes();
        name.truncate(0x3ff);
        name.push(0);
        mem.write(MODULE_CMDLINE_ADDR, &name)?;
        for (i, v) in [start as u32, end as u32, MODULE_CMDLINE_ADDR as u32, 0].iter().enumerate() {
            mem.write_u32(MODS_ADDR + 4 * i as u64, *v)?;
        }
        mods_count = 1;
    }
    info[5] = mods_count;
    info[6] = MODS_ADDR as u32;
    if mods_count == 0 {
        flags &= !INFO_MODS;
    }

    // Memory map: entries of (size = 20, base, length, type).
    let mut mmap = Vec::new();
    for e in layout::e820_map(mem.ram_size()) {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&e.addr.to_le_bytes());
        mmap.extend_from_slice(&e.size.to_le_bytes());
        mmap.extend_from_slice(&(e.kind as u32).to_le_bytes());
    }
    mem.write(MMAP_ADDR, &mmap)?;
    info[11] = mmap.len() as u32;
    info[12] = MMAP_ADDR as u32;
    mem.write(NAME_ADDR, b"popek\0")?;
    info[16] = NAME_ADDR as u32;
    info[0] = flags;
    let bytes: Vec<u8> = info.iter().flat_map(|v| v.to_le_bytes()).collect();
    mem.write(INFO_ADDR, &bytes)?;

    let mut cpu = boot_structs::protected_mode(mem)?;
    cpu.rip = entry;
    cpu.gpr[reg::RAX] = u64::from(BOOTLOADER_MAGIC);
    cpu.gpr[reg::RBX] = INFO_ADDR;
    Ok(Boot {
        cpu,
        summary: format!("multiboot kernel {} (entry {entry:#x}, {} segment(s))", path.display(), segments.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF32 multiboot kernel at 1 MiB: header, `code`, `bss` zeros.
    fn elf32_kernel(code: &[u8], bss: u32) -> Vec<u8> {
        test_roms::elf32_multiboot(0x10_0000, code, bss)
    }

    #[test]
    fn finds_the_header_and_loads_the_elf() {
        let mem = GuestMemory::new(32 << 20).unwrap();
        let kernel = elf32_kernel(&[0xf4], 0x2000);
        assert_eq!(find_header(&kernel).map(|h| h.offset), Some(0x1000));
        let initrd = b"module contents".to_vec();
        let boot = load(&mem, Path::new("k.elf"), &kernel, Some((Path::new("mod.bin"), &initrd)), "a=1").unwrap();
        let s = &boot.cpu;
        assert_eq!(s.gpr[reg::RAX], 0x2bad_b002);
        assert_eq!(s.gpr[reg::RBX], INFO_ADDR);
        assert_eq!(s.rip, 0x10_000c);
        assert_eq!(s.cr0 & 1, 1);
        assert_eq!(s.cr0 >> 31, 0);
        let mut b = [0u8];
        mem.read(0x10_000c, &mut b).unwrap();
        assert_eq!(b[0], 0xf4);

        let word = |i: u64| mem.read_u32(INFO_ADDR + 4 * i).unwrap();
        assert_eq!(word(0) & (INFO_MEMORY | INFO_MMAP | INFO_CMDLINE | INFO_MODS), INFO_MEMORY | INFO_MMAP | INFO_CMDLINE | INFO_MODS);
        assert_eq!(word(1), 639);
        assert_eq!(word(2), 31 * 1024);
        let mut line = [0u8; 10];
        mem.read(u64::from(word(4)), &mut line).unwrap();
        assert_eq!(&line, b"k.elf a=1\0");
        assert_eq!(word(5), 1);
        let mod_start = mem.read_u32(u64::from(word(6))).unwrap();
        assert_eq!(mod_start % 4096, 0);
        assert!(mod_start >= 0x10_3000);
        let mut m = [0u8; 15];
        mem.read(u64::from(mod_start), &mut m).unwrap();
        assert_eq!(&m, b"module contents");
        // The memory map's first entry: 0..EBDA usable.
        let mmap = u64::from(word(12));
        assert_eq!(mem.read_u32(mmap).unwrap(), 20);
        assert_eq!(mem.read_u64(mmap + 12).unwrap(), 0x9fc00);
        assert_eq!(mem.read_u32(mmap + 20).unwrap(), 1);
    }

    #[test]
    fn address_fields_kernels_load_from_the_header() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        let flags = FLAG_ADDRESSES;
        let mut img = Vec::new();
        for v in [HEADER_MAGIC, flags, 0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags)), 0x20_0000, 0x20_0000, 0, 0x20_4000, 0x20_0020] {
            img.extend_from_slice(&v.to_le_bytes());
        }
        img.resize(0x20, 0);
        img.push(0xf4);
        let boot = load(&mem, Path::new("a.bin"), &img, None, "").unwrap();
        assert_eq!(boot.cpu.rip, 0x20_0020);
        let mut b = [0u8];
        mem.read(0x20_0020, &mut b).unwrap();
        assert_eq!(b[0], 0xf4);
    }

    #[test]
    fn bad_kernels_get_reasons() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        let kernel = elf32_kernel(&[0xf4; 64], 0);
        let err = load(&mem, Path::new("k"), &kernel[..kernel.len() - 10], None, "").unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        let mut k64 = kernel.clone();
        k64[4] = 2;
        let err = load(&mem, Path::new("k"), &k64, None, "").unwrap_err().to_string();
        assert!(err.starts_with("k: "), "{err}");
        let small = GuestMemory::new(2 << 20).unwrap();
        let big = elf32_kernel(&[0; 16], 4 << 20);
        let err = load(&small, Path::new("k"), &big, None, "").unwrap_err().to_string();
        assert!(err.contains("outside guest RAM"), "{err}");
        assert!(find_header(&[0u8; 64]).is_none());
    }
}
