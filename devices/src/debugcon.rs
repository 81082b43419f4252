//! QEMU's `isa-debugcon` at port 0x402 (SeaBIOS and OVMF debug output):
//! every byte written goes to a writer, and a read returns 0xE9, QEMU's
//! readback value that firmware probes for before using the port.
//!
//! Inserted at 0x402, len 1. A wider write outputs its first byte only (the
//! following ports are not the console's), and a wider read returns 0xE9
//! then all ones.

use std::io::Write;

use emu_core::BusDevice;

/// The port.
pub const DEBUGCON_PORT: u64 = 0x402;
/// Ports at [`DEBUGCON_PORT`].
pub const DEBUGCON_LEN: u64 = 1;
/// What a read of the port returns.
pub const DEBUGCON_READBACK: u8 = 0xe9;

/// The debug console port.
pub struct DebugCon {
    out: Box<dyn Write + Send>,
    write_failed: bool,
}

impl std::fmt::Debug for DebugCon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugCon").finish_non_exhaustive()
    }
}

impl DebugCon {
    /// A debug console writing to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            write_failed: false,
        }
    }
}

impl BusDevice for DebugCon {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if let Some(first) = data.first_mut() {
            *first = DEBUGCON_READBACK;
        }
    }

    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        let Some(&byte) = data.first() else { return };
        let result = self.out.write_all(&[byte]).and_then(|()| {
            if byte == b'\n' {
                self.out.flush()
            } else {
                Ok(())
            }
        });
        if let Err(e) = result {
            // Warn once: the guest may write a great deal.
            if !self.write_failed {
                tracing::warn!("debugcon: output failed, dropping bytes: {e}");
                self.write_failed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::SharedBuffer;

    #[test]
    fn bytes_reach_the_writer_and_reads_return_e9() {
        let out = SharedBuffer::default();
        let mut d = DebugCon::new(Box::new(out.clone()));
        for &b in b"SeaBIOS\n" {
            d.write(DEBUGCON_PORT, 0, &[b]);
        }
        d.write(DEBUGCON_PORT, 0, b"xy");
        d.write(DEBUGCON_PORT, 0, &[]);
        assert_eq!(out.contents(), b"SeaBIOS\nx");
        let mut b = [0u8; 2];
        d.read(DEBUGCON_PORT, 0, &mut b);
        assert_eq!(b, [0xe9, 0xff]);
    }

    #[test]
    fn failing_writer_is_tolerated() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("gone"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut d = DebugCon::new(Box::new(Broken));
        d.write(DEBUGCON_PORT, 0, b"a");
        d.write(DEBUGCON_PORT, 0, b"b");
        assert!(d.write_failed);
    }
}
