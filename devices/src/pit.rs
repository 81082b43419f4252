//! The Intel 8254 programmable interval timer (ports 0x40-0x43) and the
//! PC/AT "system control port B" (0x61), clocked at 1.193182 MHz from an
//! [`emu_core::Clock`].
//!
//! Counters are computed from the time since they were loaded rather than
//! stepped, so a counter reads correctly however rarely it is looked at. Per
//! the 8254 datasheet:
//!
//! * Control word (0x43): counter select, access mode (LSB, MSB, LSB then
//!   MSB, or the counter latch command), mode 0-5 (6 and 7 alias 2 and 3)
//!   and BCD. Writing it stops the counter until a count is written, sets
//!   OUT to its initial state (low in mode 0, high otherwise), sets NULL COUNT
//!   and releases any latch.
//! * Read-back command (0xC0 | ...): latches count and/or status of each
//!   selected counter; status (OUT, NULL COUNT, RW, mode, BCD) reads first.
//! * An initial count of 0 means 65536 (10000 in BCD).
//! * Mode 0: OUT rises at terminal count. Mode 1: gate-triggered one-shot.
//!   Mode 2: rate generator, OUT low for the last clock of each period.
//!   Mode 3: square wave. Modes 4/5: software/gate-triggered strobe. In modes
//!   2 and 3 a new count takes effect at the end of the current period.
//! * Gate: low pauses counting in modes 0 and 4 and stops modes 2 and 3
//!   (forcing OUT high); a rising edge (re)starts modes 1, 2, 3 and 5. Only
//!   counter 2's gate is wired (port 0x61 bit 0); 0 and 1 are tied high.
//!
//! Counter 0's OUT drives IRQ0. [`Pit::tick`] pulses IRQ0 once for the
//! rising edges of OUT since the previous tick (several missed periods
//! coalesce into one edge, as a late timer interrupt would), and
//! [`Pit::next_deadline_ns`] says when the next one is due. Every port access
//! first catches up the same way, so reprogramming never loses an expiry
//! that already happened.
//!
//! Port 0x61: bit 0 gate of counter 2, bit 1 speaker data enable, bits 2-3
//! read back as written, bit 4 the refresh-request toggle (flips every
//! 15.085 us), bit 5 counter 2's OUT. Linux calibrates the TSC by polling
//! that bit while counter 2 counts down in mode 0.
//!
//! One [`Pit`] is inserted at both 0x40 (len 4) and 0x61 (len 1); it tells
//! the two apart by the absolute port. Wider accesses are split into byte
//! accesses at consecutive ports.

use emu_core::{BusDevice, SharedClock, SharedIrqLine};

/// The PIT's base port.
pub const PIT_BASE: u64 = 0x40;
/// Ports the PIT decodes at [`PIT_BASE`].
pub const PIT_LEN: u64 = 4;
/// System control port B.
pub const SYSTEM_CONTROL_PORT_B: u64 = 0x61;
/// Ports at [`SYSTEM_CONTROL_PORT_B`].
pub const SYSTEM_CONTROL_PORT_B_LEN: u64 = 1;
/// The PIT's ISA IRQ.
pub const PIT_IRQ: u8 = 0;
/// The PIT's input clock.
pub const PIT_FREQUENCY_HZ: u64 = 1_193_182;

const NS_PER_SEC: u128 = 1_000_000_000;
const CONTROL_PORT: u64 = PIT_BASE + 3;
/// The refresh-request bit of port 0x61 toggles with this period (from
/// counter 1 programmed for DRAM refresh on the original AT).
const REFRESH_TOGGLE_NS: u64 = 15_085;

const PORT_B_GATE2: u8 = 0x01;
const PORT_B_SPEAKER: u8 = 0x02;
const PORT_B_WRITABLE: u8 = 0x0f;
const PORT_B_REFRESH: u8 = 0x10;
const PORT_B_OUT2: u8 = 0x20;

/// How a counter's count is read and written through its port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AccessMode {
    LowByte,
    HighByte,
    LowThenHigh,
}

impl AccessMode {
    fn from_rw_bits(rw: u8) -> Self {
        match rw {
            1 => AccessMode::LowByte,
            2 => AccessMode::HighByte,
            _ => AccessMode::LowThenHigh,
        }
    }

    fn rw_bits(self) -> u8 {
        match self {
            AccessMode::LowByte => 1,
            AccessMode::HighByte => 2,
            AccessMode::LowThenHigh => 3,
        }
    }
}

/// What a counting element is doing; times are in PIT clock ticks since
/// the clock's origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counting {
    /// No count written since the control word (or only the first byte of
    /// two in mode 0).
    Idle,
    /// Mode 1 or 5 with a count written, waiting for a gate rising edge.
    WaitingForTrigger,
    /// Counting `count` (1..=65536) since tick `start`.
    Running { start: u64, count: u32 },
    /// Counting suspended by a low gate after `elapsed` ticks.
    Paused { elapsed: u64, count: u32 },
}

/// When OUT rises, relative to the start of counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RisingEdges {
    Once(u64),
    Every(u64),
}

/// One 8254 counter.
#[derive(Debug)]
struct Counter {
    /// The mode field as written (6 and 7 alias 2 and 3), for the status byte.
    mode_field: u8,
    access: AccessMode,
    bcd: bool,
    /// The count register: the count loaded into the counting element at
    /// the next (re)start, 1..=65536.
    reload: u32,
    counting: Counting,
    /// The counting element's value while it is not counting.
    held: u16,
    /// Modes 2/3: the tick at which a count written while counting is loaded.
    reload_at: Option<u64>,
    gate: bool,
    write_high_next: bool,
    low_byte_written: u8,
    read_high_next: bool,
    latched_count: Option<u16>,
    latched_read_high_next: bool,
    latched_status: Option<u8>,
    null_count: bool,
}

impl Counter {
    fn new(gate: bool) -> Self {
        Self {
            mode_field: 0,
            access: AccessMode::LowThenHigh,
            bcd: false,
            reload: 0x10000,
            counting: Counting::Idle,
            held: 0,
            reload_at: None,
            gate,
            write_high_next: false,
            low_byte_written: 0,
            read_high_next: false,
            latched_count: None,
            latched_read_high_next: false,
            latched_status: None,
            null_count: true,
        }
    }

    fn mode(&self) -> u8 {
        match self.mode_field & 7 {
            6 => 2,
            7 => 3,
            m => m,
        }
    }

    fn modulus(&self) -> u64 {
        if self.bcd {
            10_000
        } else {
            0x10000
        }
    }

    /// Loads a deferred mode 2/3 count whose period has ended.
    fn sync(&mut self, now: u64) {
        if let Some(at) = self.reload_at {
            if at <= now {
                self.reload_at = None;
                if let Counting::Running { .. } = self.counting {
                    self.counting = Counting::Running {
                        start: at,
                        count: self.reload,
                    };
                    self.null_count = false;
                }
            }
        }
    }

    /// Ticks counted and the count being counted, if counting has begun.
    fn progress(&self, now: u64) -> Option<(u64, u32)> {
        match self.counting {
            Counting::Running { start, count } => Some((now.saturating_sub(start), count)),
            Counting::Paused { elapsed, count } => Some((elapsed, count)),
            Counting::Idle | Counting::WaitingForTrigger => None,
        }
    }

    /// The counting element after `elapsed` ticks of `count`, in binary.
    fn element_at(&self, elapsed: u64, count: u32) -> u64 {
        let n = u64::from(count.max(1));
        let modulus = self.modulus();
        match self.mode() {
            2 => (n - elapsed % n) % modulus,
            3 => {
                // Decrements by two, through each half of the period.
                let phase = elapsed % n;
                let high_half = n.div_ceil(2);
                let into_half = if phase < high_half {
                    phase
                } else {
                    phase - high_half
                };
                n.saturating_sub(2 * into_half) % modulus
            }
            // One-shot modes keep counting down (wrapping) after terminal count.
            _ => (i128::from(n) - i128::from(elapsed)).rem_euclid(i128::from(modulus)) as u64,
        }
    }

    fn out_at(&self, elapsed: u64, count: u32) -> bool {
        let n = u64::from(count.max(1));
        match self.mode() {
            0 | 1 => elapsed >= n,
            2 => n == 1 || elapsed % n != n - 1,
            3 => elapsed % n < n.div_ceil(2),
            _ => elapsed != n,
        }
    }

    /// The counter's value as its port presents it (BCD-encoded in BCD mode).
    fn value(&self, now: u64) -> u16 {
        match self.progress(now) {
            Some((elapsed, count)) => {
                let element = self.element_at(elapsed, count);
                if self.bcd {
                    to_bcd16(element)
                } else {
                    element as u16
                }
            }
            None => self.held,
        }
    }

    fn out(&self, now: u64) -> bool {
        match self.counting {
            Counting::Idle => self.mode() != 0,
            Counting::WaitingForTrigger => true,
            Counting::Paused { .. } if matches!(self.mode(), 2 | 3) => true,
            _ => match self.progress(now) {
                Some((elapsed, count)) => self.out_at(elapsed, count),
                None => true,
            },
        }
    }

    fn rising_edges(&self, count: u32) -> RisingEdges {
        let n = u64::from(count.max(1));
        match self.mode() {
            0 | 1 => RisingEdges::Once(n),
            2 | 3 => RisingEdges::Every(n),
            _ => RisingEdges::Once(n + 1),
        }
    }

    /// Whether OUT rises in the tick interval (from, to].
    fn rises_between(&self, from: u64, to: u64) -> bool {
        let Counting::Running { start, count } = self.counting else {
            return false;
        };
        if to <= from {
            return false;
        }
        let low = i128::from(from) - i128::from(start);
        let high = i128::from(to) - i128::from(start);
        match self.rising_edges(count) {
            RisingEdges::Once(at) => low < i128::from(at) && i128::from(at) <= high,
            RisingEdges::Every(period) => {
                let period = i128::from(period);
                let last = high.div_euclid(period);
                last >= 1 && last * period > low
            }
        }
    }

    /// The first tick after `after` at which OUT rises.
    fn next_rise_after(&self, after: u64) -> Option<u64> {
        let Counting::Running { start, count } = self.counting else {
            return None;
        };
        let rel = i128::from(after) - i128::from(start);
        let at = match self.rising_edges(count) {
            RisingEdges::Once(at) => {
                let at = i128::from(at);
                (at > rel).then_some(at)?
            }
            RisingEdges::Every(period) => {
                let period = i128::from(period);
                (rel.div_euclid(period) + 1).max(1) * period
            }
        };
        u64::try_from(i128::from(start) + at).ok()
    }

    fn hold_current(&mut self, now: u64) {
        self.held = self.value(now);
    }

    fn write_control(&mut self, now: u64, mode_field: u8, access: AccessMode, bcd: bool) {
        self.hold_current(now);
        self.mode_field = mode_field & 7;
        self.access = access;
        self.bcd = bcd;
        self.counting = Counting::Idle;
        self.reload_at = None;
        self.write_high_next = false;
        self.read_high_next = false;
        self.latched_count = None;
        self.latched_read_high_next = false;
        self.latched_status = None;
        self.null_count = true;
    }

    fn write_count_byte(&mut self, now: u64, byte: u8) {
        match self.access {
            AccessMode::LowByte => self.load_count(now, u16::from(byte)),
            AccessMode::HighByte => self.load_count(now, u16::from(byte) << 8),
            AccessMode::LowThenHigh if !self.write_high_next => {
                self.low_byte_written = byte;
                self.write_high_next = true;
                if self.mode() == 0 {
                    // Writing the first byte stops a mode 0 count and
                    // drives OUT low until the second byte arrives.
                    self.hold_current(now);
                    self.counting = Counting::Idle;
                    self.reload_at = None;
                }
            }
            AccessMode::LowThenHigh => {
                self.write_high_next = false;
                let raw = u16::from(self.low_byte_written) | (u16::from(byte) << 8);
                self.load_count(now, raw);
            }
        }
    }

    /// Counting from the count register starts now, unless the gate holds it.
    fn start(&mut self, now: u64) {
        self.reload_at = None;
        self.null_count = false;
        self.counting = if self.gate || matches!(self.mode(), 1 | 5) {
            Counting::Running {
                start: now,
                count: self.reload,
            }
        } else {
            Counting::Paused {
                elapsed: 0,
                count: self.reload,
            }
        };
    }

    fn load_count(&mut self, now: u64, raw: u16) {
        let value = if self.bcd {
            from_bcd16(raw)
        } else {
            u32::from(raw)
        };
        self.reload = if value == 0 {
            self.modulus() as u32
        } else {
            value
        };
        self.null_count = true;
        match (self.mode(), self.counting) {
            (1 | 5, Counting::Idle) => self.counting = Counting::WaitingForTrigger,
            // A one-shot in progress uses the new count at the next trigger.
            (1 | 5, _) => {}
            (2 | 3, Counting::Running { start, count }) => {
                let n = u64::from(count.max(1));
                let elapsed = now.saturating_sub(start);
                self.reload_at = Some(start + (elapsed / n + 1) * n);
            }
            // Stopped by the gate: the rising edge will load the new count.
            (2 | 3, Counting::Paused { .. }) => {}
            _ => self.start(now),
        }
    }

    fn set_gate(&mut self, now: u64, high: bool) {
        let rising = high && !self.gate;
        let falling = !high && self.gate;
        self.gate = high;
        match self.mode() {
            0 | 4 => match self.counting {
                Counting::Running { start, count } if falling => {
                    self.counting = Counting::Paused {
                        elapsed: now.saturating_sub(start),
                        count,
                    };
                }
                Counting::Paused { elapsed, count } if rising => {
                    self.counting = Counting::Running {
                        start: now.saturating_sub(elapsed),
                        count,
                    };
                }
                _ => {}
            },
            1 | 5 => {
                if rising && self.counting != Counting::Idle {
                    self.start(now);
                }
            }
            _ => {
                if falling {
                    if let Counting::Running { start, count } = self.counting {
                        self.counting = Counting::Paused {
                            elapsed: now.saturating_sub(start),
                            count,
                        };
                    }
                    self.reload_at = None;
                } else if rising && self.counting != Counting::Idle {
                    self.start(now);
                }
            }
        }
    }

    fn status(&self, now: u64) -> u8 {
        u8::from(self.out(now)) << 7
            | u8::from(self.null_count) << 6
            | self.access.rw_bits() << 4
            | (self.mode_field & 7) << 1
            | u8::from(self.bcd)
    }

    fn latch_count(&mut self, now: u64) {
        if self.latched_count.is_none() {
            self.latched_count = Some(self.value(now));
            self.latched_read_high_next = false;
        }
    }

    fn latch_status(&mut self, now: u64) {
        if self.latched_status.is_none() {
            self.latched_status = Some(self.status(now));
        }
    }

    fn read_byte(&mut self, now: u64) -> u8 {
        if let Some(status) = self.latched_status.take() {
            return status;
        }
        if let Some(latched) = self.latched_count {
            let [low, high] = latched.to_le_bytes();
            return match self.access {
                AccessMode::LowByte => {
                    self.latched_count = None;
                    low
                }
                AccessMode::HighByte => {
                    self.latched_count = None;
                    high
                }
                AccessMode::LowThenHigh if !self.latched_read_high_next => {
                    self.latched_read_high_next = true;
                    low
                }
                AccessMode::LowThenHigh => {
                    self.latched_read_high_next = false;
                    self.latched_count = None;
                    high
                }
            };
        }
        let [low, high] = self.value(now).to_le_bytes();
        match self.access {
            AccessMode::LowByte => low,
            AccessMode::HighByte => high,
            AccessMode::LowThenHigh => {
                self.read_high_next = !self.read_high_next;
                if self.read_high_next {
                    low
                } else {
                    high
                }
            }
        }
    }
}

fn to_bcd16(value: u64) -> u16 {
    let v = value % 10_000;
    (((v / 1000) << 12) | ((v / 100 % 10) << 8) | ((v / 10 % 10) << 4) | (v % 10)) as u16
}

/// Decodes a BCD count; invalid digits (A-F) count as their binary value.
fn from_bcd16(raw: u16) -> u32 {
    let digit = |shift: u16| u32::from((raw >> shift) & 0xf);
    digit(12) * 1000 + digit(8) * 100 + digit(4) * 10 + digit(0)
}

/// The 8254 PIT with port 0x61.
pub struct Pit {
    clock: SharedClock,
    irq0: SharedIrqLine,
    counters: [Counter; 3],
    /// Port 0x61 bits 1-3 as written (bit 0 is counter 2's gate).
    port_b_latch: u8,
    /// Counter 0's OUT edges up to this tick have been delivered.
    irq_checked_until: u64,
}

impl std::fmt::Debug for Pit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pit")
            .field("counters", &self.counters)
            .finish()
    }
}

impl Pit {
    /// A PIT as QEMU resets it: counters 0 and 1 running in mode 3 with a
    /// count of 65536 (IRQ0 at 18.2 Hz until the guest reprograms it),
    /// counter 2 loaded likewise but held by its low gate.
    pub fn new(clock: SharedClock, irq0: SharedIrqLine) -> Self {
        let mut pit = Self {
            clock,
            irq0,
            counters: [Counter::new(true), Counter::new(true), Counter::new(false)],
            port_b_latch: 0,
            irq_checked_until: 0,
        };
        let now = pit.now_ticks();
        pit.irq_checked_until = now;
        for counter in &mut pit.counters {
            counter.write_control(now, 3, AccessMode::LowThenHigh, false);
            counter.load_count(now, 0);
        }
        pit
    }

    fn now_ticks(&self) -> u64 {
        ticks_at_ns(self.clock.monotonic_ns())
    }

    /// Delivers counter 0's OUT rising edges that happened since the last
    /// call as at most one IRQ0 pulse. Call it at [`Pit::next_deadline_ns`].
    pub fn tick(&mut self) {
        let now = self.now_ticks();
        self.catch_up(now);
    }

    /// The monotonic time at which counter 0's OUT next rises, if it will;
    /// already past when an edge is waiting for [`Pit::tick`].
    pub fn next_deadline_ns(&self) -> Option<u64> {
        let counter = &self.counters[0];
        let mut next = counter.next_rise_after(self.irq_checked_until)?;
        if let Some(reload_at) = counter.reload_at {
            next = next.min(reload_at);
        }
        Some(ns_at_tick(next))
    }

    fn catch_up(&mut self, now: u64) {
        let mut fired = false;
        let counter = &mut self.counters[0];
        if let Some(reload_at) = counter.reload_at.filter(|&at| at <= now) {
            // Edges of the old count up to the end of its last period.
            fired |= counter.rises_between(self.irq_checked_until, reload_at);
            self.irq_checked_until = self.irq_checked_until.max(reload_at);
            counter.sync(now);
        }
        fired |= counter.rises_between(self.irq_checked_until, now);
        self.irq_checked_until = self.irq_checked_until.max(now);
        for counter in &mut self.counters[1..] {
            counter.sync(now);
        }
        if fired {
            self.irq0.pulse();
        }
    }

    fn write_control_word(&mut self, now: u64, value: u8) {
        let select = value >> 6;
        let rw = (value >> 4) & 3;
        if select == 3 {
            // Read-back: bit 5 low latches counts, bit 4 low latches status,
            // bits 3-1 select counters 2-0.
            for (i, counter) in self.counters.iter_mut().enumerate() {
                if value & (2 << i) == 0 {
                    continue;
                }
                if value & 0x20 == 0 {
                    counter.latch_count(now);
                }
                if value & 0x10 == 0 {
                    counter.latch_status(now);
                }
            }
            return;
        }
        let Some(counter) = self.counters.get_mut(usize::from(select)) else {
            return;
        };
        if rw == 0 {
            counter.latch_count(now);
        } else {
            counter.write_control(
                now,
                (value >> 1) & 7,
                AccessMode::from_rw_bits(rw),
                value & 1 != 0,
            );
        }
    }

    fn read_port_b(&self, now: u64) -> u8 {
        let refresh = (self.clock.monotonic_ns() / REFRESH_TOGGLE_NS) & 1 == 1;
        let counter2 = &self.counters[2];
        (self.port_b_latch & (PORT_B_WRITABLE & !PORT_B_GATE2))
            | if counter2.gate { PORT_B_GATE2 } else { 0 }
            | if refresh { PORT_B_REFRESH } else { 0 }
            | if counter2.out(now) { PORT_B_OUT2 } else { 0 }
    }

    fn write_port_b(&mut self, now: u64, value: u8) {
        self.port_b_latch = value & PORT_B_WRITABLE;
        self.counters[2].set_gate(now, value & PORT_B_GATE2 != 0);
    }

    /// Whether the guest has enabled the speaker (port 0x61 bits 0 and 1).
    pub fn speaker_enabled(&self) -> bool {
        self.port_b_latch & (PORT_B_GATE2 | PORT_B_SPEAKER) == PORT_B_GATE2 | PORT_B_SPEAKER
    }

    fn read_port(&mut self, now: u64, port: u64) -> u8 {
        match port {
            PIT_BASE..=0x42 => match self.counters.get_mut((port - PIT_BASE) as usize) {
                Some(counter) => counter.read_byte(now),
                None => 0xff,
            },
            SYSTEM_CONTROL_PORT_B => self.read_port_b(now),
            // The control word register is write-only.
            _ => 0xff,
        }
    }

    fn write_port(&mut self, now: u64, port: u64, value: u8) {
        match port {
            PIT_BASE..=0x42 => {
                if let Some(counter) = self.counters.get_mut((port - PIT_BASE) as usize) {
                    counter.write_count_byte(now, value);
                }
            }
            CONTROL_PORT => self.write_control_word(now, value),
            SYSTEM_CONTROL_PORT_B => self.write_port_b(now, value),
            _ => {}
        }
    }
}

/// PIT ticks at monotonic time `ns`.
fn ticks_at_ns(ns: u64) -> u64 {
    u64::try_from(u128::from(ns) * u128::from(PIT_FREQUENCY_HZ) / NS_PER_SEC).unwrap_or(u64::MAX)
}

/// The first monotonic nanosecond at which [`ticks_at_ns`] reaches `tick`.
fn ns_at_tick(tick: u64) -> u64 {
    let ns = (u128::from(tick) * NS_PER_SEC).div_ceil(u128::from(PIT_FREQUENCY_HZ));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

impl BusDevice for Pit {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        let now = self.now_ticks();
        self.catch_up(now);
        let port = base.wrapping_add(offset);
        for (i, byte) in (0u64..).zip(data.iter_mut()) {
            *byte = self.read_port(now, port.wrapping_add(i));
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let now = self.now_ticks();
        self.catch_up(now);
        let port = base.wrapping_add(offset);
        for (i, &byte) in (0u64..).zip(data.iter()) {
            self.write_port(now, port.wrapping_add(i), byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use emu_core::{Clock, ManualClock, RecordingIrq};

    use super::*;

    const MS: u64 = 1_000_000;

    fn pit() -> (Pit, Arc<ManualClock>, Arc<RecordingIrq>) {
        let clock = ManualClock::new(0);
        let irq = Arc::new(RecordingIrq::default());
        (Pit::new(clock.clone(), irq.clone()), clock, irq)
    }

    fn outb(pit: &mut Pit, port: u64, value: u8) {
        pit.write(port, 0, &[value]);
    }

    fn inb(pit: &mut Pit, port: u64) -> u8 {
        let mut b = [0u8];
        pit.read(port, 0, &mut b);
        b[0]
    }

    fn program(pit: &mut Pit, control: u8, count: u16) {
        let counter = u64::from(control >> 6);
        outb(pit, 0x43, control);
        let [low, high] = count.to_le_bytes();
        outb(pit, 0x40 + counter, low);
        outb(pit, 0x40 + counter, high);
    }

    fn latched_count(pit: &mut Pit, counter: u8) -> u16 {
        outb(pit, 0x43, counter << 6);
        let low = inb(pit, 0x40 + u64::from(counter));
        let high = inb(pit, 0x40 + u64::from(counter));
        u16::from_le_bytes([low, high])
    }

    #[test]
    fn tick_conversions_round_trip() {
        assert_eq!(ticks_at_ns(1_000_000_000), PIT_FREQUENCY_HZ);
        for tick in [0, 1, 2, 1193, 65536, 1_193_182, 123_456_789] {
            let ns = ns_at_tick(tick);
            assert_eq!(ticks_at_ns(ns), tick);
            assert_eq!(
                ticks_at_ns(ns - u64::from(tick > 0)),
                tick.saturating_sub(1)
            );
        }
    }

    #[test]
    fn counts_down_at_1193182_hz() {
        let (mut pit, clock, _) = pit();
        program(&mut pit, 0x30, 50_000); // counter 0, mode 0
        assert_eq!(latched_count(&mut pit, 0), 50_000);
        clock.advance_ns(10 * MS);
        assert_eq!(latched_count(&mut pit, 0), 50_000 - 11_931);
        clock.advance_ns(MS);
        assert_eq!(latched_count(&mut pit, 0), 50_000 - 13_125);
    }

    #[test]
    fn mode0_out_rises_at_terminal_count_and_irq0_fires_once() {
        let (mut pit, clock, irq) = pit();
        program(&mut pit, 0x30, 1193);
        outb(&mut pit, 0x43, 0xe2); // read-back status of counter 0
        assert_eq!(inb(&mut pit, 0x40) & 0x80, 0, "OUT low while counting");
        let deadline = pit.next_deadline_ns().unwrap();
        assert_eq!(deadline, ns_at_tick(ticks_at_ns(0) + 1193));
        clock.advance_ns(deadline - 1);
        pit.tick();
        assert_eq!(irq.rising_edges(), 0);
        clock.advance_ns(1);
        pit.tick();
        assert_eq!(irq.rising_edges(), 1);
        outb(&mut pit, 0x43, 0xe2);
        assert_eq!(
            inb(&mut pit, 0x40) & 0x80,
            0x80,
            "OUT high at terminal count"
        );
        assert_eq!(pit.next_deadline_ns(), None);
        clock.advance_ns(100 * MS);
        pit.tick();
        assert_eq!(irq.rising_edges(), 1, "a one-shot fires once");
        // The counter wraps and keeps counting after terminal count.
        assert_eq!(
            latched_count(&mut pit, 0),
            (1193i64 - ticks_at_ns(deadline + 100 * MS) as i64).rem_euclid(65536) as u16
        );
    }

    #[test]
    fn mode2_periodic_irq_edges() {
        let (mut pit, clock, irq) = pit();
        program(&mut pit, 0x34, 11_932); // Linux's LATCH for HZ=100
        for _ in 0..10 {
            let deadline = pit.next_deadline_ns().unwrap();
            clock.advance_ns(deadline - clock.monotonic_ns());
            pit.tick();
        }
        assert_eq!(irq.rising_edges(), 10);
        assert_eq!(clock.monotonic_ns(), ns_at_tick(10 * 11_932));
        // Missed periods coalesce into one edge.
        clock.advance_ns(55 * MS);
        pit.tick();
        assert_eq!(irq.rising_edges(), 11);
        assert!(pit.next_deadline_ns().unwrap() > clock.monotonic_ns());
    }

    #[test]
    fn mode3_square_wave_periodic_irq_and_out() {
        let (mut pit, clock, irq) = pit();
        program(&mut pit, 0x36, 1000);
        outb(&mut pit, 0x43, 0xe2);
        assert_eq!(inb(&mut pit, 0x40) & 0x80, 0x80, "high for the first half");
        clock.advance_ns(ns_at_tick(600));
        outb(&mut pit, 0x43, 0xe2);
        assert_eq!(inb(&mut pit, 0x40) & 0x80, 0, "low for the second half");
        let mut ticks = 0;
        while irq.rising_edges() < 5 {
            clock.advance_ns(pit.next_deadline_ns().unwrap() - clock.monotonic_ns());
            pit.tick();
            ticks += 1;
        }
        assert_eq!(ticks, 5);
        assert_eq!(ticks_at_ns(clock.monotonic_ns()), 5000);
    }

    #[test]
    fn new_mode2_count_applies_at_end_of_period() {
        let (mut pit, clock, irq) = pit();
        program(&mut pit, 0x34, 1000);
        clock.advance_ns(ns_at_tick(500));
        outb(&mut pit, 0x40, 0xd0);
        outb(&mut pit, 0x40, 0x07); // 2000, written without a control word
        assert_eq!(pit.next_deadline_ns(), Some(ns_at_tick(1000)));
        clock.advance_ns(ns_at_tick(1000) - clock.monotonic_ns());
        pit.tick();
        assert_eq!(irq.rising_edges(), 1);
        assert_eq!(pit.next_deadline_ns(), Some(ns_at_tick(3000)));
        clock.advance_ns(ns_at_tick(100));
        assert_eq!(latched_count(&mut pit, 0), 1900);
    }

    #[test]
    fn latched_count_is_stable_until_read() {
        let (mut pit, clock, _) = pit();
        program(&mut pit, 0x34, 0); // 65536
        clock.advance_ns(ns_at_tick(1000));
        outb(&mut pit, 0x43, 0x00);
        clock.advance_ns(ns_at_tick(5000));
        // A second latch before the read is ignored.
        outb(&mut pit, 0x43, 0x00);
        let low = inb(&mut pit, 0x40);
        clock.advance_ns(ns_at_tick(5000));
        let high = inb(&mut pit, 0x40);
        assert_eq!(u16::from_le_bytes([low, high]), 64_536);
        // Now unlatched: reads follow the counter.
        assert_eq!(latched_count(&mut pit, 0), (65536 - 11_000) as u16);
    }

    #[test]
    fn readback_status_byte() {
        let (mut pit, clock, _) = pit();
        outb(&mut pit, 0x43, 0xb1); // counter 2, lo/hi, mode 0, BCD
        outb(&mut pit, 0x43, 0xe8); // read-back status of counter 2
        assert_eq!(
            inb(&mut pit, 0x42),
            0x71,
            "OUT low, null count, rw 3, mode 0, BCD"
        );
        outb(&mut pit, 0x61, 0x01);
        outb(&mut pit, 0x42, 0x00);
        outb(&mut pit, 0x42, 0x10); // 1000 in BCD
        clock.advance_ns(ns_at_tick(10));
        // Count and status together: status reads first.
        outb(&mut pit, 0x43, 0xc8);
        assert_eq!(inb(&mut pit, 0x42), 0x31);
        assert_eq!(inb(&mut pit, 0x42), 0x90);
        assert_eq!(inb(&mut pit, 0x42), 0x09, "990 in BCD");
        clock.advance_ns(ns_at_tick(1000));
        outb(&mut pit, 0x43, 0xe8);
        assert_eq!(inb(&mut pit, 0x42) & 0x80, 0x80);
    }

    #[test]
    fn lo_hi_access_toggles() {
        let (mut pit, _, _) = pit();
        program(&mut pit, 0xb0, 0x1234); // counter 2, gate low: held
        assert_eq!(inb(&mut pit, 0x42), 0x34);
        assert_eq!(inb(&mut pit, 0x42), 0x12);
        assert_eq!(inb(&mut pit, 0x42), 0x34);
        // LSB-only and MSB-only access modes.
        outb(&mut pit, 0x43, 0x90);
        outb(&mut pit, 0x42, 0x56);
        assert_eq!(inb(&mut pit, 0x42), 0x56);
        assert_eq!(inb(&mut pit, 0x42), 0x56);
        outb(&mut pit, 0x43, 0xa0);
        outb(&mut pit, 0x42, 0x78);
        assert_eq!(inb(&mut pit, 0x42), 0x78);
        outb(&mut pit, 0x43, 0x80);
        assert_eq!(inb(&mut pit, 0x42), 0x78);
    }

    #[test]
    fn port_61_out2_follows_mode0_one_shot_like_pit_calibrate_tsc() {
        let (mut pit, clock, irq) = pit();
        // outb((inb(0x61) & ~0x02) | 0x01, 0x61)
        let b = inb(&mut pit, 0x61);
        outb(&mut pit, 0x61, (b & !0x02) | 0x01);
        // 50 ms one-shot on counter 2.
        let latch = (PIT_FREQUENCY_HZ / 20) as u16;
        program(&mut pit, 0xb0, latch);
        assert_eq!(inb(&mut pit, 0x61) & 0x20, 0);
        let mut polls = 0u64;
        while inb(&mut pit, 0x61) & 0x20 == 0 {
            clock.advance_ns(100_000);
            polls += 1;
            assert!(polls < 1_000);
        }
        assert_eq!(polls, 500, "OUT2 rises after 50 ms");
        assert_eq!(inb(&mut pit, 0x61) & 0x01, 0x01);
        assert_eq!(irq.rising_edges(), 0, "counter 2 does not raise IRQ0");
        // Gate low pauses a mode 0 count.
        program(&mut pit, 0xb0, 1000);
        outb(&mut pit, 0x61, 0x00);
        clock.advance_ns(10 * MS);
        assert_eq!(inb(&mut pit, 0x61) & 0x20, 0);
        assert_eq!(latched_count(&mut pit, 2), 1000);
    }

    #[test]
    fn port_61_refresh_bit_toggles() {
        let (mut pit, clock, _) = pit();
        let a = inb(&mut pit, 0x61) & 0x10;
        clock.advance_ns(REFRESH_TOGGLE_NS);
        let b = inb(&mut pit, 0x61) & 0x10;
        assert_ne!(a, b);
        outb(&mut pit, 0x61, 0xff);
        assert_eq!(inb(&mut pit, 0x61) & 0x0f, 0x0f);
        assert!(pit.speaker_enabled());
    }

    #[test]
    fn mode1_waits_for_gate_trigger() {
        let (mut pit, clock, _) = pit();
        outb(&mut pit, 0x61, 0x00);
        program(&mut pit, 0xb2, 100);
        clock.advance_ns(MS);
        assert_eq!(inb(&mut pit, 0x61) & 0x20, 0x20, "OUT high until triggered");
        outb(&mut pit, 0x61, 0x01);
        assert_eq!(inb(&mut pit, 0x61) & 0x20, 0);
        clock.advance_ns(ns_at_tick(100) + 1_000);
        assert_eq!(inb(&mut pit, 0x61) & 0x20, 0x20);
    }

    #[test]
    fn reset_state_runs_counter0_at_18_2_hz() {
        let (mut pit, clock, irq) = pit();
        assert_eq!(pit.next_deadline_ns(), Some(ns_at_tick(65536)));
        clock.advance_ns(ns_at_tick(65536));
        pit.tick();
        assert_eq!(irq.rising_edges(), 1);
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let (mut pit, _, _) = pit();
        let mut d = [0u8; 4];
        pit.read(PIT_BASE, 0, &mut d);
        pit.write(PIT_BASE, 2, &[0xff, 0xff, 0xff, 0xff]);
        pit.read(u64::MAX, 3, &mut d);
        pit.write(u64::MAX, 3, &d);
        pit.write(SYSTEM_CONTROL_PORT_B, 0, &[1, 2]);
        // Invalid BCD digits and a mode 2 count of one.
        outb(&mut pit, 0x43, 0x35);
        outb(&mut pit, 0x40, 0xff);
        outb(&mut pit, 0x40, 0xff);
        outb(&mut pit, 0x43, 0x14);
        outb(&mut pit, 0x40, 0x01);
        pit.tick();
        assert!(pit.next_deadline_ns().is_some());
    }
}
