//! A minimal ELF32 image builder for multiboot test kernels.

/// The multiboot header is 12 bytes; code follows it in the segment.
pub const CODE_OFFSET_IN_SEGMENT: u64 = 12;
const HEADER_MAGIC: u32 = 0x1bad_b002;
const TEXT_FILE_OFFSET: u32 = 0x1000;

/// An ELF32 i386 executable with one PT_LOAD segment at `load_addr`: a
/// multiboot header (page-align and memory-info flags), then `code`, then
/// `bss` zero bytes. The entry point is the first byte of `code`.
pub fn elf32_multiboot(load_addr: u32, code: &[u8], bss: u32) -> Vec<u8> {
    let flags = 0b11u32;
    let mut body = Vec::new();
    for v in [HEADER_MAGIC, flags, 0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags))] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.extend_from_slice(code);
    let mut f = vec![0u8; TEXT_FILE_OFFSET as usize];
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 1; // ELFCLASS32
    f[5] = 1; // little-endian
    f[6] = 1; // EV_CURRENT
    let put16 = |f: &mut Vec<u8>, off: usize, v: u16| f[off..off + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |f: &mut Vec<u8>, off: usize, v: u32| f[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put16(&mut f, 16, 2); // ET_EXEC
    put16(&mut f, 18, 3); // EM_386
    put32(&mut f, 20, 1);
    put32(&mut f, 24, load_addr + CODE_OFFSET_IN_SEGMENT as u32);
    put32(&mut f, 28, 52); // e_phoff
    put16(&mut f, 40, 52); // e_ehsize
    put16(&mut f, 42, 32); // e_phentsize
    put16(&mut f, 44, 1); // e_phnum
    put16(&mut f, 46, 40); // e_shentsize
    let len = body.len() as u32;
    for (i, v) in [1, TEXT_FILE_OFFSET, load_addr, load_addr, len, len + bss, 7, 0x1000].into_iter().enumerate() {
        put32(&mut f, 52 + 4 * i, v);
    }
    f.extend_from_slice(&body);
    f
}
