//! QEMU's `isa-debug-exit` device as configured with `iobase=0xf4,iosize=4`:
//! a write of value v, at any width, stops the machine with
//! [`StopReason::DebugExit`]`(v)`, which the process turns into exit status
//! `(v << 1) | 1`. Test programs use it to report pass/fail.
//!
//! Inserted at 0xF4, len 4. The written bytes are zero-extended little
//! endian, wherever in the range they land. Reads return all ones.

use std::sync::Arc;

use emu_core::{BusDevice, MachineControl, StopReason};

/// The port.
pub const DEBUG_EXIT_PORT: u64 = 0xf4;
/// Ports at [`DEBUG_EXIT_PORT`].
pub const DEBUG_EXIT_LEN: u64 = 4;

/// The debug-exit port.
#[derive(Debug)]
pub struct DebugExit {
    control: Arc<MachineControl>,
}

impl DebugExit {
    /// A debug-exit port that stops the machine through `control`.
    pub fn new(control: Arc<MachineControl>) -> Self {
        Self { control }
    }
}

impl BusDevice for DebugExit {
    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut bytes = [0u8; 4];
        for (dst, src) in bytes.iter_mut().zip(data) {
            *dst = *src;
        }
        let value = u32::from_le_bytes(bytes);
        tracing::debug!("debug-exit: {value:#x}");
        self.control.request_stop(StopReason::DebugExit(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit_value(offset: u64, data: &[u8]) -> Option<StopReason> {
        let control = MachineControl::new();
        let mut d = DebugExit::new(control.clone());
        d.write(DEBUG_EXIT_PORT, offset, data);
        control.stop_reason()
    }

    #[test]
    fn any_width_zero_extended() {
        assert_eq!(exit_value(0, &[0x10]), Some(StopReason::DebugExit(0x10)));
        assert_eq!(
            exit_value(0, &[0x34, 0x12]),
            Some(StopReason::DebugExit(0x1234))
        );
        assert_eq!(
            exit_value(0, &[1, 2, 3, 4]),
            Some(StopReason::DebugExit(0x0403_0201))
        );
        assert_eq!(exit_value(3, &[0xff]), Some(StopReason::DebugExit(0xff)));
        assert_eq!(exit_value(0, &[]), None);
        assert_eq!(
            exit_value(0, &[1, 2, 3, 4, 5, 6, 7, 8]),
            Some(StopReason::DebugExit(0x0403_0201))
        );
    }

    #[test]
    fn reads_all_ones() {
        let mut d = DebugExit::new(MachineControl::new());
        let mut b = [0u8; 4];
        d.read(DEBUG_EXIT_PORT, 0, &mut b);
        assert_eq!(b, [0xff; 4]);
    }
}
