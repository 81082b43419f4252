//! The "etc/table-loader" file: QEMU's linker/loader script with which
//! firmware (SeaBIOS's `romfile_loader_execute`, OVMF's AcpiPlatform) places
//! fw_cfg blobs in guest memory and patches the pointers and checksums
//! between them, since only the firmware knows where the tables end up.
//!
//! Each command is 128 bytes, little-endian: a u32 command, then its
//! arguments, zero-padded. File names are 56-byte NUL-padded fields.
//!
//! * 1 ALLOCATE: file, u32 alignment (a power of two), u8 zone (1 high
//!   memory, 2 the F segment). Must come before any command naming the file.
//! * 2 ADD_POINTER: destination file, source file, u32 offset, u8 size
//!   (1, 2, 4 or 8): adds the source's address to the size-byte integer at
//!   the offset in the destination.
//! * 3 ADD_CHECKSUM: file, u32 checksum offset, u32 start, u32 length: adds
//!   to the byte at the offset the value that makes the range sum to 0.
//!
//! WRITE_POINTER (4) needs writable fw_cfg files and is not offered.

use super::{check_file_name, name_field};
use crate::{Error, Result};

const ENTRY_LEN: usize = 128;
const COMMAND_ALLOCATE: u32 = 1;
const COMMAND_ADD_POINTER: u32 = 2;
const COMMAND_ADD_CHECKSUM: u32 = 3;

/// Where ALLOCATE places a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AllocZone {
    /// Anywhere in RAM (high memory): ACPI tables.
    High = 1,
    /// The 0xF0000 segment, where legacy scans look: the RSDP.
    FSeg = 2,
}

/// Builds the contents of "etc/table-loader".
#[derive(Clone, Debug, Default)]
pub struct TableLoader {
    bytes: Vec<u8>,
}

impl TableLoader {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, command: u32, args: &[&[u8]]) {
        let mut entry = [0u8; ENTRY_LEN];
        let mut at = 0;
        for piece in std::iter::once(&command.to_le_bytes()[..]).chain(args.iter().copied()) {
            let end = (at + piece.len()).min(ENTRY_LEN);
            entry[at..end].copy_from_slice(&piece[..end - at]);
            at = end;
        }
        self.bytes.extend_from_slice(&entry);
    }

    /// ALLOCATE: load `file` at an `align`-aligned address in `zone`.
    pub fn allocate(&mut self, file: &str, align: u32, zone: AllocZone) -> Result<()> {
        check_file_name(file)?;
        if !align.is_power_of_two() {
            return Err(Error::TableLoaderAlignment(align));
        }
        self.push(
            COMMAND_ALLOCATE,
            &[&name_field(file), &align.to_le_bytes(), &[zone as u8]],
        );
        Ok(())
    }

    /// ADD_POINTER: add the address of `src_file` to the `size`-byte
    /// little-endian integer at `offset` in `dest_file`.
    pub fn add_pointer(
        &mut self,
        dest_file: &str,
        src_file: &str,
        offset: u32,
        size: u8,
    ) -> Result<()> {
        check_file_name(dest_file)?;
        check_file_name(src_file)?;
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(Error::TableLoaderPointerSize(size));
        }
        self.push(
            COMMAND_ADD_POINTER,
            &[
                &name_field(dest_file),
                &name_field(src_file),
                &offset.to_le_bytes(),
                &[size],
            ],
        );
        Ok(())
    }

    /// ADD_CHECKSUM: fix the byte at `checksum_offset` in `file` so that
    /// `length` bytes from `start` sum to zero.
    pub fn add_checksum(
        &mut self,
        file: &str,
        checksum_offset: u32,
        start: u32,
        length: u32,
    ) -> Result<()> {
        check_file_name(file)?;
        self.push(
            COMMAND_ADD_CHECKSUM,
            &[
                &name_field(file),
                &checksum_offset.to_le_bytes(),
                &start.to_le_bytes(),
                &length.to_le_bytes(),
            ],
        );
        Ok(())
    }

    /// The file contents.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_layout() {
        let mut t = TableLoader::new();
        t.allocate("etc/acpi/rsdp", 16, AllocZone::FSeg).unwrap();
        t.add_pointer("etc/acpi/rsdp", "etc/acpi/tables", 16, 4)
            .unwrap();
        t.add_checksum("etc/acpi/rsdp", 8, 0, 20).unwrap();
        let b = t.into_bytes();
        assert_eq!(b.len(), 3 * 128);
        let alloc = &b[..128];
        assert_eq!(&alloc[0..4], &[1, 0, 0, 0]);
        assert_eq!(&alloc[4..17], b"etc/acpi/rsdp");
        assert!(alloc[17..60].iter().all(|&x| x == 0));
        assert_eq!(&alloc[60..64], &16u32.to_le_bytes());
        assert_eq!(alloc[64], 2);
        assert!(alloc[65..].iter().all(|&x| x == 0));
        let ptr = &b[128..256];
        assert_eq!(&ptr[0..4], &[2, 0, 0, 0]);
        assert_eq!(&ptr[4..17], b"etc/acpi/rsdp");
        assert_eq!(&ptr[60..75], b"etc/acpi/tables");
        assert_eq!(&ptr[116..120], &16u32.to_le_bytes());
        assert_eq!(ptr[120], 4);
        let ck = &b[256..];
        assert_eq!(&ck[0..4], &[3, 0, 0, 0]);
        assert_eq!(&ck[60..72], &[8, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0]);
    }

    #[test]
    fn rejects_bad_arguments() {
        let mut t = TableLoader::new();
        assert_eq!(
            t.allocate("f", 3, AllocZone::High),
            Err(Error::TableLoaderAlignment(3))
        );
        assert_eq!(
            t.add_pointer("a", "b", 0, 3),
            Err(Error::TableLoaderPointerSize(3))
        );
        assert!(t.add_checksum(&"n".repeat(56), 0, 0, 0).is_err());
        assert!(t.into_bytes().is_empty());
    }
}
