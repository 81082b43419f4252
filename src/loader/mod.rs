//! Loaders that put firmware or a kernel into guest memory and say how the
//! CPU starts: [`firmware`] (a BIOS image at the reset vector), [`linux`]
//! (the x86 Linux boot protocol, 64-bit entry) and [`multiboot`] (v1 ELF
//! kernels, as QEMU's `-kernel`).

pub mod boot_structs;
pub mod firmware;
pub mod linux;
pub mod multiboot;

use std::path::Path;

use emu_core::{CpuState, GuestMemory};

use crate::error::{Error, Result};

/// Reads a whole input file, refusing directories and empty files with a
/// message that names them.
pub fn read_input(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Io { path: path.into(), source })?;
    if meta.is_dir() {
        return Err(Error::bad_file(path, "is a directory, not a file"));
    }
    let data = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
    if data.is_empty() {
        return Err(Error::bad_file(path, "is empty"));
    }
    Ok(data)
}

/// What a kernel image turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// A Linux bzImage.
    BzImage,
    /// A multiboot (v1) kernel.
    Multiboot,
}

/// Tells a bzImage from a multiboot kernel.
pub fn detect_kernel(data: &[u8]) -> Option<KernelFormat> {
    if linux::has_bzimage_signature(data) {
        Some(KernelFormat::BzImage)
    } else if multiboot::find_header(data).is_some() {
        Some(KernelFormat::Multiboot)
    } else {
        None
    }
}

/// Where the boot left the machine: the first CPU's state and a line
/// describing what was loaded, for the log.
#[derive(Debug)]
pub struct Boot {
    /// The boot CPU's initial state.
    pub cpu: CpuState,
    /// A summary for the log.
    pub summary: String,
}

/// Loads `--kernel` (with `--initrd` and `--append`) of either format.
pub fn load_kernel(
    mem: &GuestMemory,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
) -> Result<Boot> {
    let data = read_input(kernel)?;
    let initrd_data = initrd.map(read_input).transpose()?;
    let initrd_arg = initrd.zip(initrd_data.as_deref());
    match detect_kernel(&data) {
        Some(KernelFormat::BzImage) => linux::load(mem, kernel, &data, initrd_arg, cmdline),
        Some(KernelFormat::Multiboot) => multiboot::load(mem, kernel, &data, initrd_arg, cmdline),
        None => Err(Error::bad_file(
            kernel,
            "is neither a Linux bzImage (no HdrS signature at 0x202) nor a multiboot kernel (no header in its first 8 KiB)",
        )),
    }
}
