//! The High Precision Event Timer, as the IA-PC HPET specification 1.0a
//! describes it and QEMU models it for the PC machine: one event timer
//! block with a 64-bit main counter at 100 MHz and three comparators, for
//! popek's software CPU backends.
//!
//! # Registers
//!
//! The block sits on the MMIO bus at [`HPET_BASE`], len [`HPET_LEN`]. Its
//! registers are 64 bits wide; aligned 64-bit accesses reach a whole
//! register and aligned 32-bit accesses its low or high half. Other widths
//! and misaligned accesses read 0 and ignore writes, as do reserved offsets.
//!
//! * General Capabilities and ID (0x000, read-only): [`HPET_CAPABILITIES`],
//!   QEMU's value: revision 1, NUM_TIM_CAP 2 (three timers), COUNT_SIZE_CAP
//!   (64-bit counter), LEG_RT_CAP, vendor 0x8086, and a counter period of
//!   [`HPET_PERIOD_FS`] = 10,000,000 fs.
//! * General Configuration (0x010): ENABLE_CNF (bit 0) runs the main
//!   counter and lets timers interrupt; LEG_RT_CNF (bit 1) is the legacy
//!   replacement route (below).
//! * General Interrupt Status (0x020): bit n is set when level-triggered
//!   timer n expires, whether or not its interrupt is enabled; writing 1
//!   clears it (and deasserts the line). Edge-triggered timers leave it 0,
//!   as the specification lets software ignore it for them.
//! * Main Counter (0x0F0): counts at [`HPET_FREQUENCY_HZ`] while ENABLE_CNF
//!   is set and holds its value while it is clear. It is computed from the
//!   [`emu_core::Clock`] time since it was started, so reading it needs no
//!   ticking. The specification asks software to write it only while
//!   halted; a write while running takes effect too, and counting goes on
//!   from the written value.
//! * Timer n (n = 0-2) at 0x100 + 0x20 * n: configuration and capabilities
//!   (+0x00), comparator (+0x08) and FSB route (+0x10, which reads 0: FSB
//!   delivery is not supported).
//!
//! Timer configuration bits: Tn_INT_TYPE_CNF (1: level), Tn_INT_ENB_CNF
//! (2), Tn_TYPE_CNF (3: periodic, writable on timer 0 only), Tn_PER_INT_CAP
//! (4, timer 0 only, as on Intel's ICH parts; QEMU gives it to all three),
//! Tn_SIZE_CAP (5, every timer is 64-bit), Tn_VAL_SET_CNF (6, timer 0),
//! Tn_32MODE_CNF (8), Tn_INT_ROUTE_CNF (9-13), Tn_FSB_EN_CNF (14, reads 0)
//! and Tn_FSB_INT_DEL_CAP (15, 0). Bits 32-63 are Tn_INT_ROUTE_CAP,
//! [`HPET_INT_ROUTE_CAP`]: GSI 2, which QEMU's i440FX machine offers, and
//! GSIs 20-23, which nothing else on popek's PC uses (QEMU's Q35 offers 8 and
//! 16-23 as well). A route outside it is not taken: the field keeps its old
//! value, so it reads back different from what was written, as the
//! specification describes. Reset routes to 0, which goes nowhere.
//!
//! # Comparators
//!
//! A timer expires when the main counter reaches its comparator (in 32-bit
//! mode, when the counter's low 32 bits do). The counter is compared as it
//! counts, so a comparator written behind the counter matches only after the
//! counter wraps around to it, as the specification has it. (QEMU instead
//! fires at once when the comparator is less than half the counter range
//! behind; a guest checks the counter after programming either way.)
//!
//! * One-shot (Tn_TYPE_CNF 0): the comparator stays; it matches again each
//!   time the counter comes round to it. In 32-bit mode the timer also
//!   expires when the counter's low 32 bits wrap to 0, as the Intel parts'
//!   32-bit timers do and QEMU models.
//! * Periodic (timer 0): at each match the comparator grows by the period,
//!   the last value written to it. A write sets only the period unless
//!   Tn_VAL_SET_CNF is set, in which case it sets the comparator too; the
//!   bit clears itself after the write. A 32-bit write of the low half with
//!   Tn_VAL_SET_CNF also lets the high-half write that follows set the
//!   comparator, so both Intel's documented sequence (set the bit before
//!   each half) and one setting it once work. Periods missed while nobody
//!   looked coalesce into one expiry, and the comparator lands on the first
//!   match after the counter, as QEMU's catch-up does. A period of 0 leaves
//!   the comparator where it is.
//! * 32-bit mode (Tn_32MODE_CNF): setting it truncates the comparator and
//!   the period to 32 bits; comparator writes keep the low 32 bits and
//!   high-half writes are ignored.
//!
//! # Interrupts
//!
//! A timer interrupts only while ENABLE_CNF and its Tn_INT_ENB_CNF are set.
//! Edge-triggered timers pulse their line at each expiry. A level-triggered
//! timer sets its status bit and holds its line high until software clears
//! the bit; enabling the timer's interrupt while the bit is set raises the
//! line, disabling it (or the HPET) lowers it. Timers sharing a line are
//! OR-ed; an edge on a line another timer is holding high is not seen.
//!
//! The line is the GSI Tn_INT_ROUTE_CNF names, except that in legacy
//! replacement mode (LEG_RT_CNF) timer 0 drives the PIT's IRQ0 input and
//! timer 1 the RTC's IRQ8, whatever their route fields say. As in QEMU, the
//! PIT's and RTC's own outputs are then cut off: the machine passes them
//! through [`Hpet::legacy_gate`], and a gated line is held low while legacy
//! replacement is on and gets its source's level back when it goes off.
//!
//! # Wiring
//!
//! [`Hpet::new`] takes the clock, the two legacy lines and a function that
//! gives the line for each GSI in [`HPET_INT_ROUTE_CAP`]. The machine's
//! device-timer thread calls [`Hpet::tick`] at [`Hpet::next_deadline_ns`]
//! to deliver expiries; every register access first catches up the same
//! way, like the PIT and the local APIC timer. Lock order: the HPET drives
//! its lines (and its gates) with its own lock held, as the PIT does; a
//! gate drives its line under a lock of its own and never locks the HPET.

use std::sync::{Arc, Mutex};

use emu_core::{BusDevice, IrqLine, SharedClock, SharedIrqLine};

/// Where the machine inserts the HPET on the MMIO bus.
pub const HPET_BASE: u64 = 0xfed0_0000;
/// Length of the register block.
pub const HPET_LEN: u64 = 0x400;
/// Number of comparators.
pub const HPET_NUM_TIMERS: usize = 3;
/// The main counter's period in femtoseconds (10 ns, as in QEMU).
pub const HPET_PERIOD_FS: u64 = 10_000_000;
/// The main counter's rate.
pub const HPET_FREQUENCY_HZ: u64 = 1_000_000_000_000_000 / HPET_PERIOD_FS;
/// General Capabilities and ID: the period in bits 32-63, vendor 0x8086,
/// LEG_RT_CAP (bit 15), COUNT_SIZE_CAP (bit 13), NUM_TIM_CAP 2 (bits 8-12),
/// revision 1.
pub const HPET_CAPABILITIES: u64 =
    (HPET_PERIOD_FS << 32) | 0x8086_a001 | ((HPET_NUM_TIMERS as u64 - 1) << 8);
/// Tn_INT_ROUTE_CAP of every timer: GSIs 2 and 20-23.
pub const HPET_INT_ROUTE_CAP: u32 = 0x00f0_0004;

/// General Capabilities and ID register.
pub const REG_CAPABILITIES: u64 = 0x000;
/// General Configuration register.
pub const REG_CONFIG: u64 = 0x010;
/// General Interrupt Status register.
pub const REG_INT_STATUS: u64 = 0x020;
/// Main Counter register.
pub const REG_COUNTER: u64 = 0x0f0;
/// Timer 0's configuration register; timer n's is 0x20 * n further.
pub const REG_TIMER0_CONFIG: u64 = 0x100;
/// Timer 0's comparator register.
pub const REG_TIMER0_COMPARATOR: u64 = 0x108;
/// Timer 0's FSB interrupt route register.
pub const REG_TIMER0_FSB_ROUTE: u64 = 0x110;
/// Distance between the register sets of consecutive timers.
pub const TIMER_STRIDE: u64 = 0x20;

/// General Configuration: run the counter and allow interrupts.
pub const CONFIG_ENABLE: u64 = 1 << 0;
/// General Configuration: legacy replacement route.
pub const CONFIG_LEGACY: u64 = 1 << 1;

/// Timer configuration: level-triggered (else edge).
pub const TN_INT_TYPE_LEVEL: u64 = 1 << 1;
/// Timer configuration: interrupt enable.
pub const TN_INT_ENABLE: u64 = 1 << 2;
/// Timer configuration: periodic mode.
pub const TN_PERIODIC: u64 = 1 << 3;
/// Timer capability: periodic mode supported.
pub const TN_PERIODIC_CAP: u64 = 1 << 4;
/// Timer capability: 64-bit comparator.
pub const TN_SIZE_CAP: u64 = 1 << 5;
/// Timer configuration: the next comparator write sets the accumulator.
pub const TN_VAL_SET: u64 = 1 << 6;
/// Timer configuration: 32-bit mode.
pub const TN_32BIT: u64 = 1 << 8;
/// Timer configuration: the interrupt route field's position (bits 9-13).
pub const TN_INT_ROUTE_SHIFT: u32 = 9;
const TN_INT_ROUTE_MASK: u64 = 0x1f << TN_INT_ROUTE_SHIFT;

const NS_PER_TICK: u64 = HPET_PERIOD_FS / 1_000_000;
const LOW_HALF: u64 = 0xffff_ffff;
/// Bits of the `asserted` mask for the legacy lines (after the 32 GSIs).
const LEGACY_IRQ0_BIT: u32 = 32;
const LEGACY_IRQ8_BIT: u32 = 33;

/// The counter value just after `pos` at which a comparator of `value`
/// matches, comparing the low `bits` bits.
fn next_match(pos: u128, value: u64, bits: u32) -> u128 {
    let modulus = 1u128 << bits;
    let candidate = pos - pos % modulus + u128::from(value) % modulus;
    if candidate > pos {
        candidate
    } else {
        candidate + modulus
    }
}

/// One comparator.
#[derive(Debug, Clone)]
struct Timer {
    /// The writable configuration bits (capabilities are added on read).
    config: u64,
    comparator: u64,
    period: u64,
    /// A low-half comparator write with Tn_VAL_SET_CNF lets the high-half
    /// write that follows set the comparator as well.
    val_set_high: bool,
    /// Where on the counter (see [`Hpet`]'s positions) it next expires.
    next_fire: u128,
}

impl Timer {
    fn new() -> Self {
        Self {
            config: 0,
            comparator: u64::MAX,
            period: 0,
            val_set_high: false,
            next_fire: u128::MAX,
        }
    }

    fn bits(&self) -> u32 {
        if self.config & TN_32BIT != 0 {
            32
        } else {
            64
        }
    }

    fn periodic(&self) -> bool {
        self.config & TN_PERIODIC != 0
    }

    fn level(&self) -> bool {
        self.config & TN_INT_TYPE_LEVEL != 0
    }

    fn route(&self) -> u32 {
        ((self.config & TN_INT_ROUTE_MASK) >> TN_INT_ROUTE_SHIFT) as u32
    }

    /// The next expiry after counter position `pos`.
    fn arm(&mut self, pos: u128) {
        let mut next = next_match(pos, self.comparator, self.bits());
        if self.bits() == 32 && !self.periodic() {
            next = next.min(next_match(pos, 0, 32));
        }
        self.next_fire = next;
    }

    /// Moves past an expiry at or before `pos`.
    fn advance(&mut self, pos: u128) {
        let period = u128::from(self.period) % (1u128 << self.bits());
        if !self.periodic() || period == 0 {
            self.arm(pos);
            return;
        }
        let steps = (pos - self.next_fire) / period + 1;
        self.next_fire += steps * period;
        let comparator = (u128::from(self.comparator) + steps * period) % (1u128 << self.bits());
        self.comparator = comparator as u64;
    }
}

/// A line that the HPET's legacy replacement mode cuts off: wrap the PIT's
/// IRQ0 and the RTC's IRQ8 in one with [`Hpet::legacy_gate`]. It remembers
/// its source's level, holds the line low while legacy replacement is on
/// and restores the level when it goes off.
pub struct HpetLegacyGate {
    line: SharedIrqLine,
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    blocked: bool,
    level: bool,
}

impl HpetLegacyGate {
    fn set_blocked(&self, blocked: bool) {
        let mut state = crate::lock(&self.state);
        if state.blocked == blocked {
            return;
        }
        state.blocked = blocked;
        if state.level {
            self.line.set_level(!blocked);
        }
    }
}

impl IrqLine for HpetLegacyGate {
    fn set_level(&self, high: bool) {
        let mut state = crate::lock(&self.state);
        state.level = high;
        if !state.blocked {
            self.line.set_level(high);
        }
    }
}

impl std::fmt::Debug for HpetLegacyGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HpetLegacyGate")
            .field("state", &*crate::lock(&self.state))
            .finish_non_exhaustive()
    }
}

/// The HPET event timer block.
///
/// The counter is kept as a position that never wraps (a `u128`); the
/// guest sees its low 64 bits. While the counter runs, the position is
/// `ref_pos` plus the ticks since `ref_ns`; while it is halted, `ref_pos`.
pub struct Hpet {
    clock: SharedClock,
    config: u64,
    status: u64,
    ref_pos: u128,
    ref_ns: u64,
    timers: [Timer; HPET_NUM_TIMERS],
    /// Timers 0 and 1 in legacy replacement mode.
    legacy_lines: [SharedIrqLine; 2],
    /// The route field's lines, by GSI; `None` outside the route capability.
    gsi_lines: Vec<Option<SharedIrqLine>>,
    /// Lines held high by level-triggered timers: GSIs in bits 0-31, the
    /// legacy IRQ0 and IRQ8 lines in bits 32 and 33.
    asserted: u64,
    gates: Vec<Arc<HpetLegacyGate>>,
}

impl std::fmt::Debug for Hpet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hpet")
            .field("config", &self.config)
            .field("status", &self.status)
            .field("ref_pos", &self.ref_pos)
            .field("ref_ns", &self.ref_ns)
            .field("timers", &self.timers)
            .field("asserted", &self.asserted)
            .finish_non_exhaustive()
    }
}

impl Hpet {
    /// An HPET as after reset (halted at 0, every timer disabled, one-shot,
    /// edge-triggered, comparators all ones), counting from `clock`.
    ///
    /// `legacy_irq0` and `legacy_irq8` are where timers 0 and 1 go in legacy
    /// replacement mode: the lines the PIT's and the RTC's outputs drive
    /// (ISA IRQ0: PIC IRQ0 and the IOAPIC pin the MADT gives IRQ0; ISA
    /// IRQ8). `gsi_line` is called once for each GSI in
    /// [`HPET_INT_ROUTE_CAP`] and gives the line a timer routed there drives
    /// (the IOAPIC pin of that number).
    pub fn new(
        clock: SharedClock,
        legacy_irq0: SharedIrqLine,
        legacy_irq8: SharedIrqLine,
        mut gsi_line: impl FnMut(u32) -> SharedIrqLine,
    ) -> Self {
        let gsi_lines = (0..32u32)
            .map(|gsi| (HPET_INT_ROUTE_CAP & (1 << gsi) != 0).then(|| gsi_line(gsi)))
            .collect();
        let ref_ns = clock.monotonic_ns();
        let mut hpet = Self {
            clock,
            config: 0,
            status: 0,
            ref_pos: 0,
            ref_ns,
            timers: std::array::from_fn(|_| Timer::new()),
            legacy_lines: [legacy_irq0, legacy_irq8],
            gsi_lines,
            asserted: 0,
            gates: Vec::new(),
        };
        hpet.rearm_all(0);
        hpet
    }

    /// Returns every register to its reset value, lowering the lines the
    /// timers held and reopening the legacy gates.
    pub fn reset(&mut self) {
        self.config = 0;
        self.status = 0;
        self.ref_pos = 0;
        self.ref_ns = self.clock.monotonic_ns();
        for timer in &mut self.timers {
            *timer = Timer::new();
        }
        self.rearm_all(0);
        self.update_lines();
        for gate in &self.gates {
            gate.set_blocked(false);
        }
    }

    /// Wraps `line` (the PIT's IRQ0 or the RTC's IRQ8 line) so that legacy
    /// replacement mode cuts it off; give the device the returned line.
    pub fn legacy_gate(&mut self, line: SharedIrqLine) -> SharedIrqLine {
        let gate = Arc::new(HpetLegacyGate {
            line,
            state: Mutex::new(GateState {
                blocked: self.legacy(),
                level: false,
            }),
        });
        self.gates.push(gate.clone());
        gate
    }

    /// Delivers the timer expiries that are due. Call it at
    /// [`Hpet::next_deadline_ns`].
    pub fn tick(&mut self) {
        let now = self.clock.monotonic_ns();
        self.catch_up(now);
    }

    /// The monotonic time of the next expiry that would interrupt; already
    /// past when one is waiting for [`Hpet::tick`]. None while the counter
    /// is halted or no timer can raise an interrupt (one whose line is
    /// already held high included).
    pub fn next_deadline_ns(&self) -> Option<u64> {
        if !self.enabled() {
            return None;
        }
        self.timers
            .iter()
            .enumerate()
            .filter(|(i, t)| {
                t.config & TN_INT_ENABLE != 0 && !(t.level() && self.status & (1u64 << *i) != 0)
            })
            .filter_map(|(_, t)| self.ns_at(t.next_fire))
            .min()
    }

    /// The main counter now.
    pub fn counter(&self) -> u64 {
        self.position(self.clock.monotonic_ns()) as u64
    }

    fn enabled(&self) -> bool {
        self.config & CONFIG_ENABLE != 0
    }

    fn legacy(&self) -> bool {
        self.config & CONFIG_LEGACY != 0
    }

    fn position(&self, now: u64) -> u128 {
        if self.enabled() {
            self.ref_pos + u128::from(now.saturating_sub(self.ref_ns) / NS_PER_TICK)
        } else {
            self.ref_pos
        }
    }

    /// When a running counter reaches `pos`; None beyond the clock's range.
    fn ns_at(&self, pos: u128) -> Option<u64> {
        let ticks = pos.saturating_sub(self.ref_pos);
        let ns =
            u128::from(self.ref_ns).checked_add(ticks.checked_mul(u128::from(NS_PER_TICK))?)?;
        u64::try_from(ns).ok()
    }

    fn catch_up(&mut self, now: u64) {
        if !self.enabled() {
            return;
        }
        let pos = self.position(now);
        // In the order they happened, so a level timer's line is seen high
        // by an edge that came after it.
        let mut order: [usize; HPET_NUM_TIMERS] = std::array::from_fn(|i| i);
        order.sort_by_key(|&i| self.timers[i].next_fire);
        for index in order {
            if self.timers[index].next_fire <= pos {
                // Several missed expiries coalesce into one.
                self.timers[index].advance(pos);
                self.expire(index);
            }
        }
    }

    fn interrupt_enabled(&self, index: usize) -> bool {
        self.enabled() && self.timers[index].config & TN_INT_ENABLE != 0
    }

    /// The bit in `asserted` of the line timer `index` drives now.
    fn line_bit(&self, index: usize) -> u32 {
        match index {
            0 if self.legacy() => LEGACY_IRQ0_BIT,
            1 if self.legacy() => LEGACY_IRQ8_BIT,
            _ => self.timers[index].route(),
        }
    }

    fn line(&self, bit: u32) -> Option<&SharedIrqLine> {
        match bit {
            LEGACY_IRQ0_BIT => self.legacy_lines.first(),
            LEGACY_IRQ8_BIT => self.legacy_lines.get(1),
            gsi => self.gsi_lines.get(gsi as usize)?.as_ref(),
        }
    }

    fn expire(&mut self, index: usize) {
        if self.timers[index].level() {
            self.status |= 1u64 << index;
            self.update_lines();
        } else if self.interrupt_enabled(index) {
            let bit = self.line_bit(index);
            if self.asserted & (1u64 << bit) == 0 {
                if let Some(line) = self.line(bit) {
                    line.pulse();
                }
            }
        }
    }

    /// Drives each line to the OR of the level-triggered timers on it.
    fn update_lines(&mut self) {
        let mut want = 0u64;
        for index in 0..HPET_NUM_TIMERS {
            if self.timers[index].level()
                && self.status & (1 << index) != 0
                && self.interrupt_enabled(index)
            {
                want |= 1u64 << self.line_bit(index);
            }
        }
        let changed = want ^ self.asserted;
        self.asserted = want;
        for bit in (0..64u32).filter(|b| changed & (1u64 << b) != 0) {
            if let Some(line) = self.line(bit) {
                line.set_level(want & (1u64 << bit) != 0);
            }
        }
    }

    fn rearm_all(&mut self, pos: u128) {
        for timer in &mut self.timers {
            timer.arm(pos);
        }
    }

    fn read_timer(&self, index: usize, register: u64) -> u64 {
        let timer = &self.timers[index];
        match register {
            0x00 => {
                let mut caps = TN_SIZE_CAP | (u64::from(HPET_INT_ROUTE_CAP) << 32);
                if index == 0 {
                    caps |= TN_PERIODIC_CAP;
                }
                timer.config | caps
            }
            0x08 => timer.comparator,
            _ => 0,
        }
    }

    fn read_register(&self, now: u64, offset: u64) -> u64 {
        match offset {
            REG_CAPABILITIES => HPET_CAPABILITIES,
            REG_CONFIG => self.config,
            REG_INT_STATUS => self.status,
            REG_COUNTER => self.position(now) as u64,
            _ => match timer_register(offset) {
                Some((index, register)) => self.read_timer(index, register),
                None => 0,
            },
        }
    }

    /// Writes the bits of `value` under `mask` (a whole register or one
    /// 32-bit half) to the register at `offset`.
    fn write_register(&mut self, now: u64, offset: u64, value: u64, mask: u64) {
        match offset {
            REG_CONFIG => self.write_config(now, merge(self.config, value, mask)),
            REG_INT_STATUS => {
                self.status &= !(value & mask);
                self.update_lines();
            }
            REG_COUNTER => {
                let counter = merge(self.position(now) as u64, value, mask);
                self.ref_pos = u128::from(counter);
                self.ref_ns = now;
                self.rearm_all(self.ref_pos);
            }
            _ => match timer_register(offset) {
                Some((index, 0x00)) => self.write_timer_config(now, index, value, mask),
                Some((index, 0x08)) => self.write_comparator(now, index, value, mask),
                // Capabilities, FSB routes and reserved registers.
                _ => {}
            },
        }
    }

    fn write_config(&mut self, now: u64, value: u64) {
        let old = self.config;
        let new = value & (CONFIG_ENABLE | CONFIG_LEGACY);
        if (old ^ new) & CONFIG_ENABLE != 0 {
            // Start or stop the counter where it stands.
            self.ref_pos = self.position(now);
            self.ref_ns = now;
        }
        let entering_legacy = new & CONFIG_LEGACY != 0 && old & CONFIG_LEGACY == 0;
        let leaving_legacy = new & CONFIG_LEGACY == 0 && old & CONFIG_LEGACY != 0;
        // Cut the PIT and RTC off before timers 0 and 1 take their lines,
        // and give them back only after the timers let go.
        if entering_legacy {
            for gate in &self.gates {
                gate.set_blocked(true);
            }
        }
        self.config = new;
        self.update_lines();
        if leaving_legacy {
            for gate in &self.gates {
                gate.set_blocked(false);
            }
        }
    }

    fn write_timer_config(&mut self, now: u64, index: usize, value: u64, mask: u64) {
        let pos = self.position(now);
        let timer = &mut self.timers[index];
        let old = timer.config;
        let mut writable = TN_INT_TYPE_LEVEL | TN_INT_ENABLE | TN_32BIT;
        if index == 0 {
            writable |= TN_PERIODIC | TN_VAL_SET;
        }
        let mut new = merge(old, value, mask & writable);
        let route = ((value & TN_INT_ROUTE_MASK) >> TN_INT_ROUTE_SHIFT) as u32;
        if mask & TN_INT_ROUTE_MASK != 0 && HPET_INT_ROUTE_CAP & (1 << route) != 0 {
            new = (new & !TN_INT_ROUTE_MASK) | (value & TN_INT_ROUTE_MASK);
        }
        timer.config = new;
        if new & TN_32BIT != 0 && old & TN_32BIT == 0 {
            timer.comparator &= LOW_HALF;
            timer.period &= LOW_HALF;
        }
        timer.arm(pos);
        if new & TN_INT_TYPE_LEVEL == 0 {
            // Only level-triggered timers keep a status bit.
            self.status &= !(1u64 << index);
        }
        self.update_lines();
    }

    fn write_comparator(&mut self, now: u64, index: usize, value: u64, mut mask: u64) {
        let pos = self.position(now);
        let timer = &mut self.timers[index];
        if timer.config & TN_32BIT != 0 {
            mask &= LOW_HALF;
        }
        if mask == 0 {
            return;
        }
        let low = mask & LOW_HALF != 0;
        let high = mask & !LOW_HALF != 0;
        let val_set = timer.config & TN_VAL_SET != 0 || (high && !low && timer.val_set_high);
        if !timer.periodic() || val_set {
            timer.comparator = merge(timer.comparator, value, mask);
        }
        if timer.periodic() {
            timer.period = merge(timer.period, value, mask);
        }
        timer.val_set_high = timer.config & TN_VAL_SET != 0 && low && !high;
        timer.config &= !TN_VAL_SET;
        timer.arm(pos);
    }
}

/// `old` with the bits under `mask` taken from `value`.
fn merge(old: u64, value: u64, mask: u64) -> u64 {
    (old & !mask) | (value & mask)
}

/// The timer and the register within its set (0x00, 0x08, 0x10, 0x18) at
/// `offset`, for the three timers that exist.
fn timer_register(offset: u64) -> Option<(usize, u64)> {
    let relative = offset.checked_sub(REG_TIMER0_CONFIG)?;
    let index = usize::try_from(relative / TIMER_STRIDE).ok()?;
    (index < HPET_NUM_TIMERS).then_some((index, relative % TIMER_STRIDE))
}

/// The 64-bit register an access reaches, with the bit position and mask of
/// the part it covers: aligned 32-bit and 64-bit accesses only.
fn decode(offset: u64, len: usize) -> Option<(u64, u32, u64)> {
    if offset >= HPET_LEN {
        return None;
    }
    match len {
        8 if offset % 8 == 0 => Some((offset, 0, u64::MAX)),
        4 if offset % 4 == 0 => {
            let shift = ((offset & 4) * 8) as u32;
            Some((offset & !7, shift, LOW_HALF << shift))
        }
        _ => None,
    }
}

impl BusDevice for Hpet {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let Some((register, shift, _)) = decode(offset, data.len()) else {
            data.fill(0);
            return;
        };
        let now = self.clock.monotonic_ns();
        self.catch_up(now);
        let value = self.read_register(now, register) >> shift;
        let bytes = value.to_le_bytes();
        data.copy_from_slice(&bytes[..data.len()]);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let Some((register, shift, mask)) = decode(offset, data.len()) else {
            return;
        };
        let mut bytes = [0u8; 8];
        bytes[..data.len()].copy_from_slice(data);
        let value = u64::from_le_bytes(bytes) << shift;
        let now = self.clock.monotonic_ns();
        self.catch_up(now);
        self.write_register(now, register, value, mask);
    }
}

#[cfg(test)]
mod tests;
