//! Register-level tests of the HPET, driven by a manual clock.

use std::collections::BTreeMap;

use emu_core::{Clock, ManualClock, RecordingIrq};

use super::*;

/// 10 ns per counter tick.
const TICK: u64 = NS_PER_TICK;

struct Rig {
    hpet: Hpet,
    clock: Arc<ManualClock>,
    irq0: Arc<RecordingIrq>,
    irq8: Arc<RecordingIrq>,
    gsi: BTreeMap<u32, Arc<RecordingIrq>>,
}

impl Rig {
    fn new() -> Self {
        let clock = ManualClock::new(0);
        let irq0 = Arc::new(RecordingIrq::default());
        let irq8 = Arc::new(RecordingIrq::default());
        let mut gsi = BTreeMap::new();
        let hpet = Hpet::new(clock.clone(), irq0.clone(), irq8.clone(), |n| {
            let line = Arc::new(RecordingIrq::default());
            gsi.insert(n, line.clone());
            line
        });
        Self {
            hpet,
            clock,
            irq0,
            irq8,
            gsi,
        }
    }

    fn gsi(&self, n: u32) -> &RecordingIrq {
        &self.gsi[&n]
    }

    fn read64(&mut self, offset: u64) -> u64 {
        let mut data = [0xaa; 8];
        self.hpet.read(HPET_BASE, offset, &mut data);
        u64::from_le_bytes(data)
    }

    fn read32(&mut self, offset: u64) -> u32 {
        let mut data = [0xaa; 4];
        self.hpet.read(HPET_BASE, offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn write64(&mut self, offset: u64, value: u64) {
        self.hpet.write(HPET_BASE, offset, &value.to_le_bytes());
    }

    fn write32(&mut self, offset: u64, value: u32) {
        self.hpet.write(HPET_BASE, offset, &value.to_le_bytes());
    }

    fn advance(&mut self, ns: u64) {
        self.clock.advance_ns(ns);
        self.hpet.tick();
    }

    /// Runs the clock to the HPET's next deadline and ticks there.
    fn run_to_deadline(&mut self) -> u64 {
        let deadline = self.hpet.next_deadline_ns().expect("a deadline");
        let now = self.clock.monotonic_ns();
        self.advance(deadline.saturating_sub(now));
        deadline
    }
}

fn config(n: u64) -> u64 {
    REG_TIMER0_CONFIG + n * TIMER_STRIDE
}

fn comparator(n: u64) -> u64 {
    REG_TIMER0_COMPARATOR + n * TIMER_STRIDE
}

fn route(gsi: u64) -> u64 {
    gsi << TN_INT_ROUTE_SHIFT
}

const ROUTE_CAP: u64 = (HPET_INT_ROUTE_CAP as u64) << 32;

#[test]
fn capabilities_and_reset_values() {
    let mut r = Rig::new();
    assert_eq!(r.read64(REG_CAPABILITIES), 0x0098_9680_8086_a201);
    assert_eq!(r.read32(REG_CAPABILITIES), 0x8086_a201);
    assert_eq!(r.read32(REG_CAPABILITIES + 4), 10_000_000, "period in fs");
    assert_eq!(HPET_FREQUENCY_HZ, 100_000_000);
    r.write64(REG_CAPABILITIES, 0);
    assert_eq!(r.read64(REG_CAPABILITIES), HPET_CAPABILITIES, "read-only");
    assert_eq!(r.read64(REG_CONFIG), 0);
    assert_eq!(r.read64(REG_INT_STATUS), 0);
    assert_eq!(r.read64(REG_COUNTER), 0);
    assert_eq!(
        r.read64(config(0)),
        ROUTE_CAP | TN_PERIODIC_CAP | TN_SIZE_CAP,
        "only timer 0 is periodic-capable"
    );
    for n in 1..3 {
        assert_eq!(r.read64(config(n)), ROUTE_CAP | TN_SIZE_CAP);
    }
    for n in 0..3 {
        assert_eq!(r.read64(comparator(n)), u64::MAX);
        assert_eq!(r.read64(REG_TIMER0_FSB_ROUTE + n * TIMER_STRIDE), 0);
    }
    assert_eq!(r.read64(config(3)), 0, "no timer 3");
    assert_eq!(
        r.gsi.keys().copied().collect::<Vec<_>>(),
        vec![2, 20, 21, 22, 23]
    );
}

#[test]
fn config_write_masks() {
    let mut r = Rig::new();
    r.write64(REG_CONFIG, u64::MAX);
    assert_eq!(r.read64(REG_CONFIG), CONFIG_ENABLE | CONFIG_LEGACY);
    r.write64(REG_CONFIG, 0);
    // Route 20 is in the capability; FSB, caps and reserved bits are not
    // writable.
    r.write64(config(0), !TN_INT_ROUTE_MASK | route(20));
    assert_eq!(
        r.read64(config(0)),
        ROUTE_CAP
            | TN_PERIODIC_CAP
            | TN_SIZE_CAP
            | TN_INT_TYPE_LEVEL
            | TN_INT_ENABLE
            | TN_PERIODIC
            | TN_VAL_SET
            | TN_32BIT
            | route(20)
    );
    r.write64(config(1), !TN_INT_ROUTE_MASK | route(2));
    assert_eq!(
        r.read64(config(1)),
        ROUTE_CAP | TN_SIZE_CAP | TN_INT_TYPE_LEVEL | TN_INT_ENABLE | TN_32BIT | route(2),
        "no periodic mode or VAL_SET on timer 1"
    );
    // A route outside the capability is not taken.
    r.write64(config(1), route(5));
    assert_eq!(r.read64(config(1)) & TN_INT_ROUTE_MASK, route(2));
    r.write64(config(1), route(0));
    assert_eq!(r.read64(config(1)) & TN_INT_ROUTE_MASK, route(2));
    r.write64(config(1), route(23));
    assert_eq!(r.read64(config(1)) & TN_INT_ROUTE_MASK, route(23));
}

#[test]
fn counter_runs_at_100_mhz_only_while_enabled() {
    let mut r = Rig::new();
    r.advance(1_000_000);
    assert_eq!(r.read64(REG_COUNTER), 0, "halted at reset");
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    r.advance(1_000);
    assert_eq!(r.read64(REG_COUNTER), 100);
    r.advance(9);
    assert_eq!(r.read64(REG_COUNTER), 100);
    r.advance(1);
    assert_eq!(r.read64(REG_COUNTER), 101);
    r.advance(1_000_000_000);
    assert_eq!(r.read64(REG_COUNTER), 100_000_101, "10^8 ticks a second");
    // Halting freezes the count; enabling again goes on from there.
    r.write64(REG_CONFIG, 0);
    r.advance(5_000);
    assert_eq!(r.read64(REG_COUNTER), 100_000_101);
    assert_eq!(r.hpet.counter(), 100_000_101);
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    r.advance(50);
    assert_eq!(r.read64(REG_COUNTER), 100_000_106);
}

#[test]
fn counter_writes() {
    let mut r = Rig::new();
    r.write64(REG_COUNTER, 0x1234_5678_9abc_def0);
    assert_eq!(r.read64(REG_COUNTER), 0x1234_5678_9abc_def0);
    // Halves.
    r.write32(REG_COUNTER, 0x1111_1111);
    assert_eq!(r.read64(REG_COUNTER), 0x1234_5678_1111_1111);
    r.write32(REG_COUNTER + 4, 0x2222_2222);
    assert_eq!(r.read64(REG_COUNTER), 0x2222_2222_1111_1111);
    assert_eq!(r.read32(REG_COUNTER), 0x1111_1111);
    assert_eq!(r.read32(REG_COUNTER + 4), 0x2222_2222);
    r.advance(1_000);
    assert_eq!(r.read64(REG_COUNTER), 0x2222_2222_1111_1111, "still halted");
    // Counting goes on from the written value, carrying into the high half.
    r.write64(REG_COUNTER, 0xffff_fff0);
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    r.advance(200);
    assert_eq!(r.read64(REG_COUNTER), 0x1_0000_0004);
    // A write while running takes effect too.
    r.write64(REG_COUNTER, 7);
    r.advance(30);
    assert_eq!(r.read64(REG_COUNTER), 10);
    // The 64-bit counter wraps.
    r.write64(REG_CONFIG, 0);
    r.write64(REG_COUNTER, u64::MAX - 1);
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    r.advance(40);
    assert_eq!(r.read64(REG_COUNTER), 2);
}

#[test]
fn one_shot_edge_interrupt() {
    let mut r = Rig::new();
    r.write64(config(2), TN_INT_ENABLE | route(20));
    r.write64(comparator(2), 1_000);
    assert_eq!(r.hpet.next_deadline_ns(), None, "halted");
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    assert_eq!(r.hpet.next_deadline_ns(), Some(1_000 * TICK));
    r.advance(1_000 * TICK - 1);
    assert_eq!(r.gsi(20).rising_edges(), 0);
    r.advance(1);
    assert_eq!(r.gsi(20).rising_edges(), 1);
    assert!(!r.gsi(20).level(), "a pulse");
    assert_eq!(r.read64(REG_INT_STATUS), 0, "edge timers set no status");
    assert_eq!(
        r.read64(comparator(2)),
        1_000,
        "a one-shot comparator stays"
    );
    // The next match is a 64-bit wrap away.
    assert_eq!(r.hpet.next_deadline_ns(), None);
    r.advance(1_000_000_000);
    assert_eq!(r.gsi(20).rising_edges(), 1, "fires once");
    // Re-arming.
    let now = r.read64(REG_COUNTER);
    r.write64(comparator(2), now + 50);
    r.advance(50 * TICK);
    assert_eq!(r.gsi(20).rising_edges(), 2);
}

#[test]
fn comparator_behind_the_counter_waits_for_the_wrap() {
    let mut r = Rig::new();
    r.write64(config(1), TN_INT_ENABLE | TN_32BIT | route(21));
    r.write64(REG_COUNTER, 1_000);
    r.write64(comparator(1), 1_000);
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    r.advance(1_000 * TICK);
    assert_eq!(r.gsi(21).rising_edges(), 0, "equal is already past");
    // In 32-bit mode it expires at the wrap, then at the comparator.
    let wrap = r.run_to_deadline();
    assert_eq!(wrap, ((1u64 << 32) - 1_000) * TICK);
    assert_eq!(r.read64(REG_COUNTER), 1 << 32);
    assert_eq!(r.gsi(21).rising_edges(), 1);
    r.run_to_deadline();
    assert_eq!(r.read64(REG_COUNTER), (1 << 32) + 1_000);
    assert_eq!(r.gsi(21).rising_edges(), 2);
}

#[test]
fn interrupt_enable_gates_edges_but_the_timer_runs() {
    let mut r = Rig::new();
    r.write64(config(0), TN_PERIODIC | TN_VAL_SET | route(22));
    r.write64(comparator(0), 100);
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    assert_eq!(r.hpet.next_deadline_ns(), None, "nothing to wake for");
    r.advance(250 * TICK);
    assert_eq!(r.gsi(22).rising_edges(), 0);
    assert_eq!(r.read64(comparator(0)), 300, "the accumulator moved on");
    // Enabling does not replay what happened while disabled.
    r.write64(config(0), TN_PERIODIC | TN_INT_ENABLE | route(22));
    assert_eq!(r.gsi(22).rising_edges(), 0);
    assert_eq!(r.hpet.next_deadline_ns(), Some(300 * TICK));
    r.run_to_deadline();
    assert_eq!(r.gsi(22).rising_edges(), 1);
}

#[test]
fn periodic_accumulator() {
    let mut r = Rig::new();
    // VAL_SET: the write sets the comparator and the period.
    r.write64(
        config(0),
        TN_PERIODIC | TN_VAL_SET | TN_INT_ENABLE | route(20),
    );
    r.write64(comparator(0), 1_000);
    assert_eq!(r.read64(config(0)) & TN_VAL_SET, 0, "self-clearing");
    // Without it, only the period.
    r.write64(comparator(0), 400);
    assert_eq!(r.read64(comparator(0)), 1_000);
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    for (n, expect) in [1_000u64, 1_400, 1_800].into_iter().enumerate() {
        let at = r.run_to_deadline();
        assert_eq!(at, expect * TICK);
        assert_eq!(r.gsi(20).rising_edges(), n as u32 + 1);
        assert_eq!(r.read64(comparator(0)), expect + 400, "grows by the period");
    }
    // Missed periods coalesce; the comparator lands on the first match
    // after the counter, on the original grid.
    r.advance(2_000 * TICK + 5 * TICK);
    assert_eq!(r.gsi(20).rising_edges(), 4);
    assert_eq!(r.read64(REG_COUNTER), 3_805);
    assert_eq!(r.read64(comparator(0)), 4_200);
    assert_eq!(r.hpet.next_deadline_ns(), Some(4_200 * TICK));
    // Back to one-shot: the comparator stays.
    r.write64(config(0), TN_INT_ENABLE | route(20));
    r.advance(1_000 * TICK);
    assert_eq!(r.gsi(20).rising_edges(), 5);
    assert_eq!(r.read64(comparator(0)), 4_200);
    assert_eq!(r.hpet.next_deadline_ns(), None);
}

#[test]
fn periodic_with_zero_period_keeps_its_comparator() {
    let mut r = Rig::new();
    r.write64(
        config(0),
        TN_PERIODIC | TN_VAL_SET | TN_INT_ENABLE | TN_32BIT | route(20),
    );
    r.write64(comparator(0), 0);
    r.write64(REG_COUNTER, 0xffff_ff00);
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    r.advance(0x100 * TICK);
    assert_eq!(r.gsi(20).rising_edges(), 1);
    assert_eq!(r.read64(comparator(0)), 0);
    assert_eq!(r.hpet.next_deadline_ns(), Some((0x100 + (1 << 32)) * TICK));
}

/// Linux's hpet_clkevt_set_state_periodic: counter stopped and zeroed,
/// 32-bit periodic mode with VAL_SET, comparator written twice.
#[test]
fn linux_periodic_sequence() {
    let mut r = Rig::new();
    r.write32(REG_CONFIG, CONFIG_LEGACY as u32);
    r.write32(REG_COUNTER, 0);
    r.write32(REG_COUNTER + 4, 0);
    let delta = 1_000_000u32; // 10 ms
    let cfg = (TN_INT_ENABLE | TN_PERIODIC | TN_VAL_SET | TN_32BIT) as u32;
    r.write32(config(0), cfg);
    let now = r.read32(REG_COUNTER);
    r.write32(comparator(0), now + delta);
    r.write32(comparator(0), delta);
    r.write32(REG_CONFIG, (CONFIG_ENABLE | CONFIG_LEGACY) as u32);
    for n in 1..=3u32 {
        r.run_to_deadline();
        assert_eq!(r.irq0.rising_edges(), n);
        assert_eq!(r.read32(comparator(0)), delta * (n + 1));
    }
    assert_eq!(r.clock.monotonic_ns(), 30_000_000);
}

#[test]
fn val_set_with_32_bit_halves() {
    let mut r = Rig::new();
    // Intel's sequence: VAL_SET before each half.
    r.write64(config(0), TN_PERIODIC | TN_VAL_SET);
    r.write32(comparator(0), 0x1111_1111);
    r.write64(config(0), TN_PERIODIC | TN_VAL_SET);
    r.write32(comparator(0) + 4, 0x2);
    assert_eq!(r.read64(comparator(0)), 0x2_1111_1111);
    // VAL_SET once, then both halves.
    r.write64(config(0), TN_PERIODIC | TN_VAL_SET);
    r.write32(comparator(0), 0x3333_3333);
    r.write32(comparator(0) + 4, 0x4);
    assert_eq!(r.read64(comparator(0)), 0x4_3333_3333);
    // Then period-only writes leave the comparator alone.
    r.write32(comparator(0), 0x10);
    r.write32(comparator(0) + 4, 0);
    assert_eq!(r.read64(comparator(0)), 0x4_3333_3333);
    r.write64(REG_COUNTER, 0x4_3333_3333);
    r.write64(config(0), TN_PERIODIC | TN_INT_ENABLE | route(20));
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    r.advance(0x10 * TICK);
    assert_eq!(
        r.gsi(20).rising_edges(),
        0,
        "the counter started on the comparator"
    );
    assert_eq!(r.read64(comparator(0)), 0x4_3333_3333);
    assert_eq!(r.hpet.next_deadline_ns(), None, "a 64-bit wrap away");
}

#[test]
fn level_triggered_status_and_clear() {
    let mut r = Rig::new();
    r.write64(config(1), TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(21));
    r.write64(comparator(1), 10);
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    r.advance(10 * TICK);
    assert_eq!(r.read64(REG_INT_STATUS), 0b10);
    assert!(r.gsi(21).level());
    assert_eq!(r.hpet.next_deadline_ns(), None, "already asserted");
    // Writing 0 changes nothing; writing 1 clears and deasserts.
    r.write64(REG_INT_STATUS, 0b101);
    assert_eq!(r.read64(REG_INT_STATUS), 0b10);
    assert!(r.gsi(21).level());
    r.write32(REG_INT_STATUS, 0b10);
    assert_eq!(r.read64(REG_INT_STATUS), 0);
    assert!(!r.gsi(21).level());
    assert_eq!(r.gsi(21).rising_edges(), 1);

    // With its interrupt disabled a level timer still sets its status;
    // enabling the interrupt then raises the line, disabling lowers it.
    r.write64(config(1), TN_INT_TYPE_LEVEL | route(21));
    let now = r.read64(REG_COUNTER);
    r.write64(comparator(1), now + 5);
    r.advance(5 * TICK);
    assert_eq!(r.read64(REG_INT_STATUS), 0b10);
    assert!(!r.gsi(21).level());
    r.write64(config(1), TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(21));
    assert!(r.gsi(21).level());
    r.write64(config(1), TN_INT_TYPE_LEVEL | route(21));
    assert!(!r.gsi(21).level());
    r.write64(config(1), TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(21));
    assert!(r.gsi(21).level());
    // Halting the HPET lowers it, keeping the status; enabling raises it.
    r.write64(REG_CONFIG, 0);
    assert!(!r.gsi(21).level());
    assert_eq!(r.read64(REG_INT_STATUS), 0b10);
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    assert!(r.gsi(21).level());
    // Moving the route moves the assertion.
    r.write64(config(1), TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(23));
    assert!(!r.gsi(21).level());
    assert!(r.gsi(23).level());
    // Switching to edge drops the status and the line.
    r.write64(config(1), TN_INT_ENABLE | route(23));
    assert_eq!(r.read64(REG_INT_STATUS), 0);
    assert!(!r.gsi(23).level());
}

#[test]
fn timers_sharing_a_level_line() {
    let mut r = Rig::new();
    for n in [1, 2] {
        r.write64(config(n), TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(22));
    }
    r.write64(comparator(1), 10);
    r.write64(comparator(2), 20);
    // An edge timer on the same line while it is held high shows nothing.
    r.write64(config(0), TN_INT_ENABLE | route(22));
    r.write64(comparator(0), 15);
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    r.advance(20 * TICK);
    assert_eq!(r.read64(REG_INT_STATUS), 0b110);
    assert!(r.gsi(22).level());
    assert_eq!(r.gsi(22).rising_edges(), 1);
    r.write64(REG_INT_STATUS, 0b010);
    assert!(r.gsi(22).level(), "timer 2 still holds it");
    r.write64(REG_INT_STATUS, 0b100);
    assert!(!r.gsi(22).level());
}

#[test]
fn legacy_replacement_routing() {
    let mut r = Rig::new();
    for n in 0..3 {
        r.write64(config(n), TN_INT_ENABLE | route(20));
        r.write64(comparator(n), 100 * (n + 1));
    }
    r.write64(REG_CONFIG, CONFIG_ENABLE | CONFIG_LEGACY);
    r.advance(100 * TICK);
    assert_eq!(r.irq0.rising_edges(), 1, "timer 0 on IRQ0");
    r.advance(100 * TICK);
    assert_eq!(r.irq8.rising_edges(), 1, "timer 1 on IRQ8");
    assert_eq!(r.gsi(20).rising_edges(), 0);
    r.advance(100 * TICK);
    assert_eq!(r.gsi(20).rising_edges(), 1, "timer 2 keeps its route");
    // Out of legacy mode the route fields apply again.
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    let now = r.read64(REG_COUNTER);
    r.write64(comparator(0), now + 10);
    r.advance(10 * TICK);
    assert_eq!(r.gsi(20).rising_edges(), 2);
    assert_eq!(r.irq0.rising_edges(), 1);

    // A level timer 1 asserting in legacy mode moves with the mode.
    r.write64(config(1), TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(21));
    r.write64(comparator(1), now + 20);
    r.write64(REG_CONFIG, CONFIG_ENABLE | CONFIG_LEGACY);
    r.advance(10 * TICK);
    assert!(r.irq8.level());
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    assert!(!r.irq8.level());
    assert!(r.gsi(21).level());
}

#[test]
fn legacy_mode_gates_the_pit_and_rtc() {
    let mut r = Rig::new();
    let pit_out = Arc::new(RecordingIrq::default());
    let rtc_out = Arc::new(RecordingIrq::default());
    let pit = r.hpet.legacy_gate(pit_out.clone());
    let rtc = r.hpet.legacy_gate(rtc_out.clone());
    pit.pulse();
    assert_eq!(pit_out.rising_edges(), 1, "passes through by default");
    rtc.set_level(true);
    assert!(rtc_out.level());
    r.write64(REG_CONFIG, CONFIG_LEGACY);
    assert!(!rtc_out.level(), "cut off");
    pit.pulse();
    assert_eq!(pit_out.rising_edges(), 1);
    rtc.set_level(false);
    rtc.set_level(true);
    assert_eq!(rtc_out.rising_edges(), 1);
    r.write64(REG_CONFIG, 0);
    assert!(rtc_out.level(), "the source's level comes back");
    assert_eq!(rtc_out.rising_edges(), 2);
    pit.pulse();
    assert_eq!(pit_out.rising_edges(), 2);
    // A gate made while legacy mode is on starts closed; reset opens it.
    r.write64(REG_CONFIG, CONFIG_LEGACY);
    let late_out = Arc::new(RecordingIrq::default());
    let late = r.hpet.legacy_gate(late_out.clone());
    late.set_level(true);
    assert!(!late_out.level());
    r.hpet.reset();
    assert!(late_out.level());
    assert_eq!(r.read64(REG_CONFIG), 0);
}

#[test]
fn thirty_two_bit_mode() {
    let mut r = Rig::new();
    // Setting the mode truncates the comparator (all ones at reset).
    r.write64(config(0), TN_32BIT | TN_INT_ENABLE | route(20));
    assert_eq!(r.read64(comparator(0)), 0xffff_ffff);
    // High-half writes are ignored, 64-bit writes keep the low half.
    r.write32(comparator(0) + 4, 0x1234);
    r.write64(comparator(0), 0x5555_0000_0100);
    assert_eq!(r.read64(comparator(0)), 0x100);
    // One-shot: the wrap of the low 32 bits expires too.
    r.write64(REG_COUNTER, 0x7_ffff_ff00);
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    assert_eq!(r.hpet.next_deadline_ns(), Some(0x100 * TICK));
    r.advance(0x100 * TICK);
    assert_eq!(r.gsi(20).rising_edges(), 1, "wrap");
    assert_eq!(r.read64(REG_COUNTER), 0x8_0000_0000);
    r.advance(0x100 * TICK);
    assert_eq!(r.gsi(20).rising_edges(), 2, "match on the low 32 bits");
    assert_eq!(
        r.hpet.next_deadline_ns(),
        Some(((1 << 32) + 0x100) * TICK),
        "the next wrap"
    );
    // 64-bit mode again: the comparator stays 32-bit until written.
    r.write64(config(0), TN_INT_ENABLE | route(20));
    assert_eq!(r.read64(comparator(0)), 0x100);
    r.write64(comparator(0), 0x9_0000_0000);
    assert_eq!(r.read64(comparator(0)), 0x9_0000_0000);
}

#[test]
fn thirty_two_bit_periodic_wraps_the_comparator() {
    let mut r = Rig::new();
    r.write64(
        config(0),
        TN_PERIODIC | TN_VAL_SET | TN_32BIT | TN_INT_ENABLE | route(20),
    );
    r.write64(comparator(0), 0xffff_ff80);
    r.write64(comparator(0), 0x100);
    r.write64(REG_COUNTER, 0xffff_ff00);
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    r.advance(0x80 * TICK);
    assert_eq!(r.gsi(20).rising_edges(), 1);
    assert_eq!(r.read64(comparator(0)), 0x80, "wrapped at 32 bits");
    // No wrap interrupt in periodic mode: next is the comparator.
    assert_eq!(r.hpet.next_deadline_ns(), Some(0x180 * TICK));
    r.advance(0x100 * TICK);
    assert_eq!(r.gsi(20).rising_edges(), 2);
    assert_eq!(r.read64(REG_COUNTER), 0x1_0000_0080);
}

#[test]
fn thirty_two_bit_halves_of_registers() {
    let mut r = Rig::new();
    // Configuration by halves: the high half is read-only.
    r.write32(config(2), (TN_INT_ENABLE | route(23)) as u32);
    r.write32(config(2) + 4, 0);
    assert_eq!(
        r.read32(config(2)),
        (TN_SIZE_CAP | TN_INT_ENABLE | route(23)) as u32
    );
    assert_eq!(r.read32(config(2) + 4), HPET_INT_ROUTE_CAP);
    // A 64-bit comparator by halves.
    r.write32(comparator(2), 0x89ab_cdef);
    r.write32(comparator(2) + 4, 0x0123_4567);
    assert_eq!(r.read64(comparator(2)), 0x0123_4567_89ab_cdef);
    assert_eq!(r.read32(comparator(2) + 4), 0x0123_4567);
    // The counter by halves while it runs.
    r.write64(REG_COUNTER, 0xffff_fffe);
    r.write32(REG_CONFIG, CONFIG_ENABLE as u32);
    r.advance(5 * TICK);
    assert_eq!(r.read32(REG_COUNTER), 3);
    assert_eq!(r.read32(REG_COUNTER + 4), 1);
    // Status and configuration high halves are reserved.
    r.write32(REG_CONFIG + 4, u32::MAX);
    assert_eq!(r.read64(REG_CONFIG), CONFIG_ENABLE);
    assert_eq!(r.read32(REG_INT_STATUS + 4), 0);
}

#[test]
fn odd_accesses_read_zero_and_never_panic() {
    let mut r = Rig::new();
    let mut one = [0xaau8; 1];
    r.hpet.read(HPET_BASE, REG_CAPABILITIES, &mut one);
    assert_eq!(one, [0]);
    let mut two = [0xaau8; 2];
    r.hpet.read(HPET_BASE, REG_CAPABILITIES, &mut two);
    assert_eq!(two, [0; 2]);
    let mut eight = [0xaau8; 8];
    r.hpet.read(HPET_BASE, REG_CAPABILITIES + 4, &mut eight);
    assert_eq!(eight, [0; 8], "misaligned 64-bit");
    r.hpet.write(HPET_BASE, REG_CONFIG, &[1]);
    r.hpet.write(HPET_BASE, REG_CONFIG, &[1, 0]);
    r.hpet.write(HPET_BASE, REG_CONFIG + 2, &[1, 0, 0, 0]);
    assert_eq!(r.read64(REG_CONFIG), 0);
    for offset in 0..0x410u64 {
        for len in [1usize, 2, 3, 4, 8, 16] {
            let mut buf = vec![0xff; len];
            r.hpet.read(HPET_BASE, offset, &mut buf);
            r.hpet.write(HPET_BASE, offset, &buf);
            r.advance(1_000);
        }
    }
    let mut d = [0u8; 8];
    r.hpet.read(HPET_BASE, u64::MAX, &mut d);
    r.hpet.write(HPET_BASE, u64::MAX - 7, &d);
    assert_eq!(d, [0; 8]);
    r.hpet.tick();
    let _ = r.hpet.next_deadline_ns();
}

#[test]
fn reset_lowers_lines() {
    let mut r = Rig::new();
    r.write64(config(2), TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(2));
    r.write64(comparator(2), 1);
    r.write64(REG_CONFIG, CONFIG_ENABLE);
    r.advance(TICK);
    assert!(r.gsi(2).level());
    r.hpet.reset();
    assert!(!r.gsi(2).level());
    assert_eq!(r.read64(REG_INT_STATUS), 0);
    assert_eq!(r.read64(config(2)), ROUTE_CAP | TN_SIZE_CAP);
    assert_eq!(r.read64(comparator(2)), u64::MAX);
    assert_eq!(r.read64(REG_COUNTER), 0);
}

/// Linux's RTC emulation (`hpet_rtc_timer_init`) in legacy mode: a 32-bit
/// comparator write while timer 1 is still in 64-bit mode, then 32-bit
/// mode; the interrupt must come one delta later, not at a wrap.
#[test]
fn linux_rtc_emulation_sequence() {
    let mut r = Rig::new();
    r.write64(REG_CONFIG, CONFIG_ENABLE | CONFIG_LEGACY);
    r.advance(7_000_000_000);
    let delta: u32 = 1_562_500; // 1/64 s at 100 MHz
    let cnt = delta.wrapping_add(r.read32(REG_COUNTER));
    r.write32(comparator(1), cnt);
    let cfg = r.read32(config(1)) & !(TN_PERIODIC as u32);
    r.write32(config(1), cfg | TN_INT_ENABLE as u32 | TN_32BIT as u32);
    let now = r.clock.monotonic_ns();
    let deadline = r.hpet.next_deadline_ns().expect("armed");
    assert_eq!(deadline - now, u64::from(delta) * TICK);
    r.advance(u64::from(delta) * TICK);
    assert_eq!(r.irq8.rising_edges(), 1);
}
