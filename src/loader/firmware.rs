//! `--bios`: a firmware image mapped read-only at the top of 4 GiB, with its
//! last 128 KiB copied below 1 MiB (the legacy BIOS area, as the chipset's
//! shadow RAM holds it), and the CPU at the reset vector F000:FFF0.

use std::path::Path;

use emu_core::layout::{BIOS_AREA_SIZE, HIGH_MEMORY_START};
use emu_core::{CpuState, GuestMemory};

use super::{read_input, Boot};
use crate::error::{Error, Result};

/// The largest firmware accepted (QEMU's limit for `-bios` is similar).
pub const MAX_FIRMWARE_SIZE: usize = 16 << 20;

/// Loads the firmware at `path`.
pub fn load(mem: &mut GuestMemory, path: &Path) -> Result<Boot> {
    let image = read_input(path)?;
    load_image(mem, path, &image)
}

/// Loads a firmware image already in memory; `path` names it in errors.
pub fn load_image(mem: &mut GuestMemory, path: &Path, image: &[u8]) -> Result<Boot> {
    if image.len() % 0x1_0000 != 0 {
        return Err(Error::bad_file(
            path,
            format!("is {} bytes; a firmware image must be a multiple of 64 KiB", image.len()),
        ));
    }
    if image.len() > MAX_FIRMWARE_SIZE {
        return Err(Error::bad_file(path, format!("is {} bytes; at most 16 MiB is supported", image.len())));
    }
    let top = 1u64 << 32;
    mem.add_rom(top - image.len() as u64, image)?;
    let alias_len = image.len().min(BIOS_AREA_SIZE as usize);
    mem.write(HIGH_MEMORY_START - alias_len as u64, &image[image.len() - alias_len..])?;
    Ok(Boot {
        cpu: CpuState::reset(),
        summary: format!("firmware {} ({} KiB)", path.display(), image.len() / 1024),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_at_the_top_and_aliases_below_1m() {
        let mut mem = GuestMemory::new(16 << 20).unwrap();
        let mut image = vec![0u8; 0x4_0000];
        image[0x3_fff0] = 0xea; // far jmp at the reset vector
        image[0] = 0x11;
        image[0x2_0000] = 0x22;
        let boot = load_image(&mut mem, Path::new("bios.bin"), &image).unwrap();
        let mut b = [0u8];
        mem.read(0xffff_fff0, &mut b).unwrap();
        assert_eq!(b[0], 0xea);
        mem.read(0xfffc_0000, &mut b).unwrap();
        assert_eq!(b[0], 0x11);
        // Only the last 128 KiB appear below 1 MiB.
        mem.read(0xe_0000, &mut b).unwrap();
        assert_eq!(b[0], 0x22);
        mem.read(0xf_fff0, &mut b).unwrap();
        assert_eq!(b[0], 0xea);
        assert_eq!(boot.cpu.rip, 0xfff0);
    }

    #[test]
    fn rejects_odd_sizes() {
        let mut mem = GuestMemory::new(16 << 20).unwrap();
        let err = load_image(&mut mem, Path::new("x.bin"), &[0u8; 1000]).unwrap_err();
        assert!(err.to_string().starts_with("x.bin: is 1000 bytes"), "{err}");
    }
}
