//! The POST code port (0x80): firmware writes progress codes here, and
//! Linux writes it to delay I/O (`outb_p`), so it must stay cheap and
//! quiet. It latches the last byte written and reads it back, like a POST
//! card's display.
//!
//! Inserted at 0x80, len 1. A wider write latches its first byte.

use emu_core::BusDevice;

/// The port.
pub const POST_CODE_PORT: u64 = 0x80;
/// Ports at [`POST_CODE_PORT`].
pub const POST_CODE_LEN: u64 = 1;

/// The POST code latch.
#[derive(Debug, Default)]
pub struct PostCode {
    last: u8,
}

impl PostCode {
    /// A latch holding 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last code written.
    pub fn last_code(&self) -> u8 {
        self.last
    }
}

impl BusDevice for PostCode {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if let Some(first) = data.first_mut() {
            *first = self.last;
        }
    }

    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        if let Some(&code) = data.first() {
            tracing::trace!("POST code {code:#04x}");
            self.last = code;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latches_last_code() {
        let mut p = PostCode::new();
        let mut b = [0xaa];
        p.read(POST_CODE_PORT, 0, &mut b);
        assert_eq!(b, [0]);
        p.write(POST_CODE_PORT, 0, &[0x12]);
        p.write(POST_CODE_PORT, 0, &[0x34]);
        p.read(POST_CODE_PORT, 0, &mut b);
        assert_eq!(b, [0x34]);
        assert_eq!(p.last_code(), 0x34);
        let mut w = [0u8; 2];
        p.write(POST_CODE_PORT, 0, &[]);
        p.read(POST_CODE_PORT, 0, &mut w);
        assert_eq!(w, [0x34, 0xff]);
    }
}
