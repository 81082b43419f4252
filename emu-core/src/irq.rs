//! Interrupt lines from devices to an interrupt controller.
//!
//! A device holds an [`IrqLine`] and never knows whether KVM's in-kernel
//! irqchip, the software PIC/IOAPIC or a test recorder is behind it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// One interrupt input (an ISA IRQ or IOAPIC GSI).
pub trait IrqLine: Send + Sync {
    /// Drives the line high or low.
    fn set_level(&self, high: bool);

    /// An edge: raises then lowers the line, as an ISA device's pulse.
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// A shareable line.
pub type SharedIrqLine = Arc<dyn IrqLine>;

/// A line that goes nowhere, for devices whose interrupt is not wired.
#[derive(Debug, Default)]
pub struct NullIrq;

impl IrqLine for NullIrq {
    fn set_level(&self, _high: bool) {}
}

/// A line that records its level and counts rising edges; for tests.
#[derive(Debug, Default)]
pub struct RecordingIrq {
    level: AtomicBool,
    rising_edges: AtomicU32,
}

impl RecordingIrq {
    /// The current level.
    pub fn level(&self) -> bool {
        self.level.load(Ordering::SeqCst)
    }

    /// How many low-to-high transitions happened so far.
    pub fn rising_edges(&self) -> u32 {
        self.rising_edges.load(Ordering::SeqCst)
    }
}

impl IrqLine for RecordingIrq {
    fn set_level(&self, high: bool) {
        let was = self.level.swap(high, Ordering::SeqCst);
        if high && !was {
            self.rising_edges.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_counts_edges() {
        let l = RecordingIrq::default();
        l.pulse();
        l.set_level(true);
        l.set_level(true);
        assert!(l.level());
        assert_eq!(l.rising_edges(), 2);
    }
}
