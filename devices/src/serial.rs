//! A 16550A UART (COM1 at 0x3F8, IRQ 4), wrapping `vm_superio::Serial`.
//!
//! vm-superio models the register file as the PC16550D datasheet defines it:
//! RBR/THR and the divisor latch at +0/+1 selected by LCR.DLAB, IER, IIR with
//! the FIFO-enabled bits set (so Linux's 8250 driver detects a 16550A), LCR,
//! MCR with loopback, LSR (THRE and TEMT always set: transmission is
//! instantaneous; DR while the receive FIFO holds data), MSR and the scratch
//! register. Its interrupts are edges, which this wrapper delivers by pulsing
//! an [`emu_core::IrqLine`].
//!
//! The registers are 8 bits wide and the UART sits on the ISA bus, so a wider
//! access is split into byte accesses at consecutive ports, as the bus would;
//! bytes past the eighth register read as all ones and are not written.

use std::io::Write;

use emu_core::{BusDevice, SharedIrqLine};
use vm_superio::serial::NoEvents;
use vm_superio::Trigger;

/// COM1's base port.
pub const COM1_BASE: u64 = 0x3f8;
/// COM2's base port.
pub const COM2_BASE: u64 = 0x2f8;
/// The number of ports a UART decodes.
pub const SERIAL_PORT_LEN: u64 = 8;
/// COM1's (and COM3's) ISA IRQ.
pub const COM1_IRQ: u8 = 4;

/// Delivers vm-superio's interrupt events as edges on an interrupt line.
pub struct IrqTrigger(SharedIrqLine);

impl Trigger for IrqTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.pulse();
        Ok(())
    }
}

type Inner = vm_superio::Serial<IrqTrigger, NoEvents, Box<dyn Write + Send>>;

/// A 16550A UART whose output goes to a writer and whose input the console
/// feeds through [`Serial::enqueue_input`].
pub struct Serial {
    uart: Inner,
}

impl Serial {
    /// A UART raising its interrupt on `irq` and writing what the guest
    /// transmits to `out`.
    pub fn new(irq: SharedIrqLine, out: Box<dyn Write + Send>) -> Self {
        Self {
            uart: vm_superio::Serial::new(IrqTrigger(irq), out),
        }
    }

    /// Queues console input for the guest to receive and returns how many
    /// bytes fit in the 64-byte receive FIFO; the caller keeps the rest and
    /// retries once the guest has drained the FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        if bytes.is_empty() || self.uart.fifo_capacity() == 0 {
            return 0;
        }
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::trace!("serial: input dropped: {e:?}");
                0
            }
        }
    }

    /// Free space in the receive FIFO, in bytes.
    pub fn input_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    fn read_register(&mut self, offset: u64) -> u8 {
        match u8::try_from(offset) {
            Ok(reg) if offset < SERIAL_PORT_LEN => self.uart.read(reg),
            _ => 0xff,
        }
    }

    fn write_register(&mut self, offset: u64, value: u8) {
        let Ok(reg) = u8::try_from(offset) else {
            return;
        };
        if offset >= SERIAL_PORT_LEN {
            return;
        }
        if let Err(e) = self.uart.write(reg, value) {
            // The guest cannot be blocked on a failing console: the byte is
            // lost, as on a line with nobody listening.
            tracing::trace!("serial: write to register {reg} failed: {e:?}");
        }
    }
}

impl BusDevice for Serial {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        for (i, byte) in (0u64..).zip(data.iter_mut()) {
            *byte = self.read_register(offset.saturating_add(i));
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        for (i, &byte) in (0u64..).zip(data.iter()) {
            self.write_register(offset.saturating_add(i), byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use emu_core::RecordingIrq;

    use super::*;
    use crate::testutil::SharedBuffer;

    const THR: u64 = 0;
    const RBR: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const LSR: u64 = 5;
    const SCR: u64 = 7;

    const LSR_DR: u8 = 0x01;
    const LSR_THRE: u8 = 0x20;

    fn serial() -> (Serial, Arc<RecordingIrq>, SharedBuffer) {
        let irq = Arc::new(RecordingIrq::default());
        let out = SharedBuffer::default();
        (Serial::new(irq.clone(), Box::new(out.clone())), irq, out)
    }

    fn inb(s: &mut Serial, offset: u64) -> u8 {
        let mut b = [0u8];
        s.read(COM1_BASE, offset, &mut b);
        b[0]
    }

    fn outb(s: &mut Serial, offset: u64, v: u8) {
        s.write(COM1_BASE, offset, &[v]);
    }

    #[test]
    fn divisor_latch_is_selected_by_dlab() {
        let (mut s, _, out) = serial();
        outb(&mut s, LCR, 0x83);
        outb(&mut s, 0, 0x01);
        outb(&mut s, 1, 0x00);
        assert_eq!(inb(&mut s, 0), 0x01);
        assert_eq!(inb(&mut s, 1), 0x00);
        outb(&mut s, LCR, 0x03);
        // With DLAB clear, +1 is IER again and +0 transmits.
        assert_eq!(inb(&mut s, IER), 0);
        assert!(out.contents().is_empty());
        outb(&mut s, LCR, 0x80);
        assert_eq!(inb(&mut s, 0), 0x01);
    }

    #[test]
    fn scratch_register_holds_a_byte() {
        let (mut s, _, _) = serial();
        outb(&mut s, SCR, 0x5a);
        assert_eq!(inb(&mut s, SCR), 0x5a);
    }

    #[test]
    fn thr_write_reaches_the_writer() {
        let (mut s, _, out) = serial();
        for &b in b"hi\n" {
            outb(&mut s, THR, b);
        }
        assert_eq!(out.contents(), b"hi\n");
    }

    #[test]
    fn lsr_reports_thre_and_data_ready() {
        let (mut s, _, _) = serial();
        assert_eq!(inb(&mut s, LSR) & (LSR_THRE | LSR_DR), LSR_THRE);
        assert_eq!(s.enqueue_input(b"ab"), 2);
        assert_eq!(inb(&mut s, LSR) & LSR_DR, LSR_DR);
        assert_eq!(inb(&mut s, RBR), b'a');
        assert_eq!(inb(&mut s, LSR) & LSR_DR, LSR_DR);
        assert_eq!(inb(&mut s, RBR), b'b');
        assert_eq!(inb(&mut s, LSR) & LSR_DR, 0);
    }

    #[test]
    fn iir_reports_received_data_when_enabled() {
        let (mut s, irq, _) = serial();
        // FIFO-enabled bits (16550A) and "no interrupt pending".
        assert_eq!(inb(&mut s, IIR), 0xc1);
        outb(&mut s, IER, 0x01);
        s.enqueue_input(b"x");
        assert_eq!(inb(&mut s, IIR), 0xc4);
        assert_eq!(irq.rising_edges(), 1);
        assert!(!irq.level(), "the UART's interrupt is delivered as an edge");
    }

    #[test]
    fn no_irq_on_input_without_ier() {
        let (mut s, irq, _) = serial();
        s.enqueue_input(b"x");
        assert_eq!(irq.rising_edges(), 0);
        // Enabling RDA with data already pending raises it at once.
        outb(&mut s, IER, 0x01);
        assert_eq!(irq.rising_edges(), 1);
    }

    #[test]
    fn full_fifo_accepts_what_fits() {
        let (mut s, _, _) = serial();
        let input = [b'z'; 100];
        assert_eq!(s.enqueue_input(&input), 64);
        assert_eq!(s.input_capacity(), 0);
        assert_eq!(s.enqueue_input(b"more"), 0);
        assert_eq!(inb(&mut s, RBR), b'z');
        assert_eq!(s.enqueue_input(b"more"), 1);
    }

    #[test]
    fn wide_and_out_of_range_accesses_are_split_or_ignored() {
        let (mut s, _, out) = serial();
        // A word write at SCR covers SCR and one port past the UART.
        s.write(COM1_BASE, SCR, &[0x12, 0x34]);
        assert_eq!(inb(&mut s, SCR), 0x12);
        let mut w = [0u8; 4];
        s.read(COM1_BASE, 6, &mut w);
        assert_eq!(w[1], 0x12);
        assert_eq!(&w[2..], &[0xff, 0xff]);
        s.write(COM1_BASE, u64::MAX, &[1, 2, 3, 4]);
        s.read(COM1_BASE, 100, &mut w);
        assert_eq!(w, [0xff; 4]);
        assert!(out.contents().is_empty());
    }
}
