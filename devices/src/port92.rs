//! System control port A (0x92), the "fast A20 and reset" port of PS/2 and
//! later PC chipsets.
//!
//! Bit 1 gates address line 20; it is the same line the i8042's output port
//! drives, shared as an `AtomicBool`. Bit 0 is the fast reset: writing it
//! with a 0 to 1 transition resets the machine. Reads return the bits as
//! last written, with bit 1 reflecting the A20 line's current state.
//!
//! Inserted at 0x92, len 1. Only the first byte of a wider access is used.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use emu_core::{BusDevice, MachineControl, StopReason};

/// The port.
pub const PORT92: u64 = 0x92;
/// Ports at [`PORT92`].
pub const PORT92_LEN: u64 = 1;

const FAST_RESET: u8 = 0x01;
const A20_ENABLE: u8 = 0x02;

/// System control port A.
#[derive(Debug)]
pub struct Port92 {
    control: Arc<MachineControl>,
    a20: Arc<AtomicBool>,
    value: u8,
}

impl Port92 {
    /// The port, resetting through `control` and driving `a20`.
    pub fn new(control: Arc<MachineControl>, a20: Arc<AtomicBool>) -> Self {
        Self {
            control,
            a20,
            value: 0,
        }
    }
}

impl BusDevice for Port92 {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if offset != 0 {
            return;
        }
        if let Some(first) = data.first_mut() {
            let a20 = if self.a20.load(Ordering::SeqCst) {
                A20_ENABLE
            } else {
                0
            };
            *first = (self.value & !A20_ENABLE) | a20;
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let (0, Some(&value)) = (offset, data.first()) else {
            return;
        };
        let old = self.value;
        self.value = value;
        self.a20.store(value & A20_ENABLE != 0, Ordering::SeqCst);
        if value & FAST_RESET != 0 && old & FAST_RESET == 0 {
            tracing::debug!("port 0x92: fast reset");
            self.control.request_stop(StopReason::Reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port() -> (Port92, Arc<MachineControl>, Arc<AtomicBool>) {
        let control = MachineControl::new();
        let a20 = Arc::new(AtomicBool::new(false));
        (Port92::new(control.clone(), a20.clone()), control, a20)
    }

    fn inb(p: &mut Port92) -> u8 {
        let mut b = [0];
        p.read(PORT92, 0, &mut b);
        b[0]
    }

    #[test]
    fn a20_bit_is_shared() {
        let (mut p, control, a20) = port();
        assert_eq!(inb(&mut p), 0);
        p.write(PORT92, 0, &[A20_ENABLE]);
        assert!(a20.load(Ordering::SeqCst));
        assert_eq!(inb(&mut p), A20_ENABLE);
        // The i8042 turns it off: the read follows.
        a20.store(false, Ordering::SeqCst);
        assert_eq!(inb(&mut p), 0);
        assert_eq!(control.stop_reason(), None);
    }

    #[test]
    fn fast_reset_on_rising_bit0() {
        let (mut p, control, _) = port();
        p.write(PORT92, 0, &[FAST_RESET | A20_ENABLE]);
        assert_eq!(control.stop_reason(), Some(StopReason::Reset));
        assert_eq!(inb(&mut p), FAST_RESET | A20_ENABLE);
    }

    #[test]
    fn bit0_held_high_does_not_reset_again() {
        let control = MachineControl::new();
        let a20 = Arc::new(AtomicBool::new(false));
        let mut p = Port92 {
            control: control.clone(),
            a20,
            value: FAST_RESET,
        };
        p.write(PORT92, 0, &[FAST_RESET]);
        assert_eq!(control.stop_reason(), None);
        p.write(PORT92, 0, &[0]);
        p.write(PORT92, 0, &[FAST_RESET]);
        assert_eq!(control.stop_reason(), Some(StopReason::Reset));
    }

    #[test]
    fn odd_accesses() {
        let (mut p, control, _) = port();
        let mut w = [0u8; 4];
        p.read(PORT92, 0, &mut w);
        assert_eq!(w, [0, 0xff, 0xff, 0xff]);
        p.write(PORT92, 5, &[0xff]);
        p.write(PORT92, 0, &[]);
        assert_eq!(control.stop_reason(), None);
    }
}
