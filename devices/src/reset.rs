//! The PIIX3 reset control register at port 0xCF9.
//!
//! Bit 2 (RCPU) set in a write resets the machine; bit 1 (SRST) selects a
//! hard reset and bit 3 (FULL_RST) a full one, which for a virtual machine
//! are the same reset. Bits 1 and 3 are latched and read back; bit 2 is
//! write-only, since the write that sets it resets the machine.
//!
//! Port 0xCF9 lies inside PCI's CONFIG_ADDRESS dword (0xCF8-0xCFB); see the
//! crate docs for how the two are inserted. Inserted at 0xCF9, len 1; only
//! byte writes act (a wider access starting at 0xCF9 is not a write to this
//! register on real hardware).

use std::sync::Arc;

use emu_core::{BusDevice, MachineControl, StopReason};

/// The port.
pub const RESET_CONTROL_PORT: u64 = 0xcf9;
/// Ports at [`RESET_CONTROL_PORT`].
pub const RESET_CONTROL_LEN: u64 = 1;

const SYSTEM_RESET: u8 = 0x02;
const RESET_CPU: u8 = 0x04;
const FULL_RESET: u8 = 0x08;

/// The reset control register.
#[derive(Debug)]
pub struct ResetControl {
    control: Arc<MachineControl>,
    value: u8,
}

impl ResetControl {
    /// The register, resetting the machine through `control`.
    pub fn new(control: Arc<MachineControl>) -> Self {
        Self { control, value: 0 }
    }
}

impl BusDevice for ResetControl {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if let (0, [only]) = (offset, &mut *data) {
            *only = self.value;
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let (0, [value]) = (offset, data) else {
            tracing::debug!("reset control: ignoring {}-byte write", data.len());
            return;
        };
        self.value = value & (SYSTEM_RESET | FULL_RESET);
        if value & RESET_CPU != 0 {
            tracing::debug!("reset control: reset ({value:#04x})");
            self.control.request_stop(StopReason::Reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> (ResetControl, Arc<MachineControl>) {
        let control = MachineControl::new();
        (ResetControl::new(control.clone()), control)
    }

    #[test]
    fn reset_on_bit2() {
        for v in [0x06u8, 0x0e, 0x04] {
            let (mut r, control) = reg();
            r.write(RESET_CONTROL_PORT, 0, &[v]);
            assert_eq!(
                control.stop_reason(),
                Some(StopReason::Reset),
                "value {v:#x}"
            );
        }
    }

    #[test]
    fn hard_reset_select_reads_back_without_reset() {
        let (mut r, control) = reg();
        r.write(RESET_CONTROL_PORT, 0, &[0x02]);
        assert_eq!(control.stop_reason(), None);
        let mut b = [0];
        r.read(RESET_CONTROL_PORT, 0, &mut b);
        assert_eq!(b, [0x02]);
    }

    #[test]
    fn wide_accesses_are_ignored() {
        let (mut r, control) = reg();
        r.write(RESET_CONTROL_PORT, 0, &[0x06, 0x06]);
        r.write(RESET_CONTROL_PORT, 0, &[]);
        assert_eq!(control.stop_reason(), None);
        let mut w = [0u8; 2];
        r.read(RESET_CONTROL_PORT, 0, &mut w);
        assert_eq!(w, [0xff, 0xff]);
    }
}
