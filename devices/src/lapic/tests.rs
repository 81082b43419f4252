//! Register-level tests of the local APIC.

use std::sync::atomic::{AtomicU32, Ordering};

use emu_core::{Clock, ManualClock};

use super::*;

fn rig() -> (Lapic, Arc<ManualClock>) {
    let clock = ManualClock::new(0);
    (Lapic::new(clock.clone()), clock)
}

/// An APIC the way Linux sets it up: software-enabled with spurious
/// vector 0xFF, error LVT masked.
fn enabled() -> (Lapic, Arc<ManualClock>) {
    let (mut l, clock) = rig();
    l.write_register(REG_SVR, 0x1ff);
    (l, clock)
}

#[test]
fn power_on_state() {
    let (mut l, _) = rig();
    assert_eq!(l.base_msr(), 0xfee0_0900);
    assert_eq!(l.read_register(REG_VERSION), 0x0005_0014);
    assert_eq!(l.read_register(REG_SVR), 0xff);
    assert_eq!(l.read_register(REG_DFR), 0xffff_ffff);
    assert_eq!(l.read_register(REG_ID), 0);
    assert_eq!(l.read_register(REG_LVT_LINT0), 0x700);
    for reg in [
        REG_LVT_TIMER,
        REG_LVT_THERMAL,
        REG_LVT_PERF,
        REG_LVT_LINT1,
        REG_LVT_ERROR,
    ] {
        assert_eq!(l.read_register(reg), LVT_MASKED, "{reg:#x}");
    }
    assert!(l.hw_enabled());
    assert!(!l.enabled(), "software-disabled until SVR bit 8");
    assert!(l.lint0_is_extint(), "the PIC reaches the BSP");
    assert!(!l.accept_interrupt(0x30, false), "dropped while disabled");
    assert_eq!(l.pending_vector(), None);
    assert_eq!(l.acknowledge(), Some(0xff), "spurious");
}

#[test]
fn register_write_masks() {
    let (mut l, _) = enabled();
    l.write_register(REG_ID, 0xffff_ffff);
    assert_eq!(l.read_register(REG_ID), 0xff00_0000);
    assert_eq!(l.apic_id(), 0xff);
    l.write_register(REG_TPR, 0xffff_ffff);
    assert_eq!(l.read_register(REG_TPR), 0xff);
    l.write_register(REG_LDR, 0x1234_5678);
    assert_eq!(l.read_register(REG_LDR), 0x1200_0000);
    l.write_register(REG_DFR, 0);
    assert_eq!(l.read_register(REG_DFR), 0x0fff_ffff);
    l.write_register(REG_SVR, 0xffff_ffff);
    assert_eq!(l.read_register(REG_SVR), 0x3ff);
    l.write_register(REG_LVT_TIMER, 0xffff_ffff);
    assert_eq!(
        l.read_register(REG_LVT_TIMER),
        0x0007_00ff,
        "vector, mask and the two mode bits"
    );
    l.write_register(REG_LVT_LINT0, 0xffff_ffff);
    assert_eq!(
        l.read_register(REG_LVT_LINT0),
        0x0001_a7ff,
        "remote IRR is read-only"
    );
    l.write_register(REG_LVT_ERROR, 0xffff_ffff);
    assert_eq!(l.read_register(REG_LVT_ERROR), 0x0001_00ff);
    l.write_register(REG_TIMER_DIVIDE, 0xffff_ffff);
    assert_eq!(l.read_register(REG_TIMER_DIVIDE), 0xb);
    l.write_register(REG_ICR_HIGH, 0xffff_ffff);
    assert_eq!(l.read_register(REG_ICR_HIGH), 0xff00_0000);
    l.write_register(REG_VERSION, 0);
    l.write_register(REG_PPR, 0x55);
    assert_eq!(l.read_register(REG_VERSION), LAPIC_VERSION);
}

#[test]
fn software_disable_masks_lvt() {
    let (mut l, _) = enabled();
    l.write_register(REG_LVT_TIMER, 0x30);
    assert_eq!(l.read_register(REG_LVT_TIMER), 0x30);
    l.write_register(REG_SVR, 0xff);
    assert_eq!(l.read_register(REG_LVT_TIMER), 0x0001_0030);
    assert_eq!(l.read_register(REG_LVT_LINT0), 0x0001_0700);
    assert!(!l.lint0_is_extint());
    l.write_register(REG_LVT_TIMER, 0x31);
    assert_eq!(
        l.read_register(REG_LVT_TIMER),
        0x0001_0031,
        "stays masked while disabled"
    );
    l.write_register(REG_SVR, 0x1ff);
    assert_eq!(
        l.read_register(REG_LVT_TIMER),
        0x0001_0031,
        "enabling does not unmask"
    );
}

#[test]
fn irr_to_isr_and_eoi_by_priority() {
    let (mut l, _) = enabled();
    assert!(l.accept_interrupt(0x31, false));
    assert!(l.accept_interrupt(0x52, false));
    assert_eq!(l.read_register(REG_IRR + 0x10), 1 << 17);
    assert_eq!(l.read_register(REG_IRR + 0x20), 1 << 18);
    assert_eq!(l.pending_vector(), Some(0x52));
    assert_eq!(l.acknowledge(), Some(0x52));
    assert!(l.is_in_service(0x52));
    assert_eq!(l.read_register(REG_ISR + 0x20), 1 << 18);
    assert_eq!(l.read_register(REG_PPR), 0x50);
    // 0x31 is a lower class than the 0x52 in service.
    assert_eq!(l.pending_vector(), None);
    assert_eq!(l.acknowledge(), Some(0xff), "spurious, no ISR bit");
    assert_eq!(l.read_register(REG_ISR + 0xf0), 0);
    // A higher class nests.
    l.accept_interrupt(0x61, false);
    assert_eq!(l.acknowledge(), Some(0x61));
    l.write_register(REG_EOI, 0);
    assert!(!l.is_in_service(0x61));
    assert!(l.is_in_service(0x52));
    l.write_register(REG_EOI, 0);
    assert_eq!(l.read_register(REG_PPR), 0);
    assert_eq!(l.acknowledge(), Some(0x31));
    assert!(
        l.take_eois().is_empty(),
        "edge-triggered EOIs are not broadcast"
    );
}

#[test]
fn tpr_blocks_its_class_and_below() {
    let (mut l, _) = enabled();
    l.accept_interrupt(0x45, false);
    l.write_register(REG_TPR, 0x45);
    assert_eq!(l.read_register(REG_PPR), 0x45);
    assert_eq!(l.pending_vector(), None, "same class as TPR");
    l.set_tpr_cr8(3);
    assert_eq!(l.read_register(REG_TPR), 0x30);
    assert_eq!(l.tpr_cr8(), 3);
    assert_eq!(l.pending_vector(), Some(0x45));
    // APR: TPR below the IRR's class gives the IRR class.
    assert_eq!(l.read_register(REG_APR), 0x40);
    l.write_register(REG_TPR, 0x56);
    assert_eq!(l.read_register(REG_APR), 0x56);
    assert_eq!(l.acknowledge(), Some(0xff), "masked by TPR: spurious");
}

#[test]
fn ppr_follows_isr_above_tpr() {
    let (mut l, _) = enabled();
    l.write_register(REG_TPR, 0x21);
    l.accept_interrupt(0x80, false);
    l.acknowledge();
    assert_eq!(l.read_register(REG_PPR), 0x80);
    l.write_register(REG_TPR, 0x91);
    assert_eq!(l.read_register(REG_PPR), 0x91);
}

#[test]
fn level_triggered_eoi_is_reported_after_unlock() {
    let (mut l, _) = enabled();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    l.set_eoi_listener(move |v| s.lock().unwrap().push(v));
    l.accept_interrupt(0x40, true);
    assert_eq!(l.read_register(REG_TMR + 0x20), 1);
    assert_eq!(l.acknowledge(), Some(0x40));
    l.write_register(REG_EOI, 0);
    assert!(seen.lock().unwrap().is_empty(), "not from inside the write");
    let eois = l.take_eois();
    assert_eq!(eois.vectors().collect::<Vec<_>>(), vec![0x40]);
    eois.deliver();
    assert_eq!(*seen.lock().unwrap(), vec![0x40]);
    assert!(l.take_eois().is_empty());

    // Through the MMIO page the listener runs with the LAPIC unlocked:
    // it may lock it again.
    let lapic = Arc::new(Mutex::new(l));
    let inner = lapic.clone();
    let relocked = Arc::new(AtomicU32::new(0));
    let r = relocked.clone();
    crate::lock(&lapic).set_eoi_listener(move |v| {
        let _ = crate::lock(&inner).pending_vector();
        r.store(u32::from(v), Ordering::SeqCst);
    });
    let mut mmio = LapicMmio::new(lapic.clone());
    crate::lock(&lapic).accept_interrupt(0x41, true);
    crate::lock(&lapic).acknowledge();
    mmio.write(LAPIC_BASE, REG_EOI, &0u32.to_le_bytes());
    assert_eq!(relocked.load(Ordering::SeqCst), 0x41);
}

#[test]
fn self_ipis() {
    let (mut l, _) = enabled();
    // Shorthand self, fixed.
    l.write_register(REG_ICR_LOW, 0x0004_0033);
    assert!(l.is_requested(0x33));
    assert_eq!(
        l.read_register(REG_ICR_LOW) & (1 << 12),
        0,
        "delivery status idle"
    );
    // No shorthand, physical destination = own ID.
    l.write_register(REG_ID, 0x0500_0000);
    l.write_register(REG_ICR_HIGH, 0x0500_0000);
    l.write_register(REG_ICR_LOW, 0x34);
    assert!(l.is_requested(0x34));
    // Another ID: nobody.
    l.write_register(REG_ICR_HIGH, 0x0600_0000);
    l.write_register(REG_ICR_LOW, 0x35);
    assert!(!l.is_requested(0x35));
    // Logical, flat model.
    l.write_register(REG_LDR, 0x0200_0000);
    l.write_register(REG_ICR_HIGH, 0x0300_0000);
    l.write_register(REG_ICR_LOW, 0x0800 | 0x36);
    assert!(l.is_requested(0x36));
    // Cluster model: cluster 1, member bit 1.
    l.write_register(REG_DFR, 0x0fff_ffff);
    l.write_register(REG_LDR, 0x1200_0000);
    assert!(l.matches_destination(0x13, true));
    assert!(!l.matches_destination(0x23, true));
    assert!(l.matches_destination(0xff, true));
    // All excluding self: no other CPU.
    l.write_register(REG_ICR_LOW, 0x000c_0037);
    assert!(!l.is_requested(0x37));
    // All including self.
    l.write_register(REG_ICR_LOW, 0x0008_0038);
    assert!(l.is_requested(0x38));
    // NMI to self.
    l.write_register(REG_ICR_LOW, 0x0004_0400);
    assert!(l.take_nmi());
    assert!(!l.take_nmi());
}

#[test]
fn init_and_sipi_are_recorded() {
    let (mut l, _) = enabled();
    // SeaBIOS's broadcast INIT then SIPI, all excluding self.
    l.write_register(REG_ICR_LOW, 0x000c_4500);
    assert_eq!(l.last_ipi(), Some(0x000c_4500));
    l.write_register(REG_ICR_HIGH, 0x0100_0000);
    l.write_register(REG_ICR_LOW, 0x000c_4690);
    assert_eq!(l.last_ipi(), Some(0x0100_0000_000c_4690));
    assert_eq!(l.pending_vector(), None);
    assert!(!l.take_nmi());
}

#[test]
fn esr_latches_on_write() {
    let (mut l, _) = enabled();
    l.write_register(REG_ICR_LOW, 0x0004_0005);
    assert_eq!(l.read_register(REG_ESR), 0, "not visible before a write");
    l.write_register(REG_ESR, 0);
    assert_eq!(l.read_register(REG_ESR), ESR_SEND_ILLEGAL_VECTOR);
    l.write_register(REG_ESR, 0);
    assert_eq!(l.read_register(REG_ESR), 0);
    assert!(!l.accept_interrupt(7, false));
    l.read_register(0x2f0); // CMCI is reserved with max LVT 5
    l.write_register(REG_ESR, 0);
    assert_eq!(
        l.read_register(REG_ESR),
        ESR_RECEIVE_ILLEGAL_VECTOR | ESR_ILLEGAL_REGISTER
    );
}

#[test]
fn errors_raise_the_error_lvt() {
    let (mut l, _) = enabled();
    l.write_register(REG_LVT_ERROR, 0xfe);
    l.write_register(REG_ICR_LOW, 0x0004_0001);
    assert!(l.is_requested(0xfe));
    // An illegal error vector is not delivered and does not recurse.
    l.write_register(REG_LVT_ERROR, 0x03);
    l.write_register(0x3f0, 0);
    l.write_register(REG_ESR, 0);
    assert_eq!(
        l.read_register(REG_ESR),
        ESR_SEND_ILLEGAL_VECTOR | ESR_RECEIVE_ILLEGAL_VECTOR | ESR_ILLEGAL_REGISTER
    );
}

#[test]
fn divide_configuration() {
    let (mut l, _) = enabled();
    for (config, divisor) in [
        (0x0, 2),
        (0x1, 4),
        (0x2, 8),
        (0x3, 16),
        (0x8, 32),
        (0x9, 64),
        (0xa, 128),
        (0xb, 1),
    ] {
        l.write_register(REG_TIMER_DIVIDE, config);
        assert_eq!(l.timer_divisor(), divisor, "{config:#x}");
    }
}

#[test]
fn one_shot_timer() {
    let (mut l, clock) = enabled();
    l.write_register(REG_LVT_TIMER, 0xec);
    l.write_register(REG_TIMER_DIVIDE, 0x3); // by 16
    l.write_register(REG_TIMER_INITIAL, 1000);
    assert_eq!(l.read_register(REG_TIMER_CURRENT), 1000);
    assert_eq!(l.next_deadline_ns(), Some(16_000));
    clock.advance_ns(1600);
    assert_eq!(l.read_register(REG_TIMER_CURRENT), 900);
    clock.advance_ns(14_399);
    l.tick();
    assert_eq!(l.read_register(REG_TIMER_CURRENT), 1);
    assert!(!l.is_requested(0xec));
    clock.advance_ns(1);
    l.tick();
    assert!(l.is_requested(0xec));
    assert_eq!(l.read_register(REG_TIMER_CURRENT), 0);
    assert_eq!(l.next_deadline_ns(), None);
    assert_eq!(l.acknowledge(), Some(0xec));
    l.write_register(REG_EOI, 0);
    clock.advance_ns(1_000_000);
    l.tick();
    assert!(!l.is_requested(0xec), "fires once");
    assert_eq!(l.read_register(REG_TIMER_INITIAL), 1000);
    // Writing the initial count restarts it; 0 stops it.
    l.write_register(REG_TIMER_INITIAL, 10);
    assert_eq!(l.next_deadline_ns(), Some(clock.monotonic_ns() + 160));
    l.write_register(REG_TIMER_INITIAL, 0);
    assert_eq!(l.next_deadline_ns(), None);
    assert_eq!(l.read_register(REG_TIMER_CURRENT), 0);
}

#[test]
fn periodic_timer_reloads_and_coalesces() {
    let (mut l, clock) = enabled();
    l.write_register(REG_LVT_TIMER, LVT_TIMER_PERIODIC | 0xef);
    l.write_register(REG_TIMER_DIVIDE, 0xb); // by 1
    l.write_register(REG_TIMER_INITIAL, 1_000_000); // 1 ms
    for period in 1..=3u64 {
        let deadline = l.next_deadline_ns().unwrap();
        assert_eq!(deadline, period * 1_000_000);
        clock.advance_ns(deadline - clock.monotonic_ns());
        l.tick();
        assert_eq!(l.acknowledge(), Some(0xef));
        l.write_register(REG_EOI, 0);
        assert_eq!(l.read_register(REG_TIMER_CURRENT), 1_000_000, "reloaded");
    }
    clock.advance_ns(250_000);
    assert_eq!(l.read_register(REG_TIMER_CURRENT), 750_000);
    // Missing 5 periods gives one interrupt and the next deadline on
    // the original grid.
    clock.advance_ns(5_000_000);
    l.tick();
    assert_eq!(l.acknowledge(), Some(0xef));
    assert_eq!(l.pending_vector(), None);
    assert_eq!(l.next_deadline_ns(), Some(9_000_000));
}

#[test]
fn masked_timer_counts_without_interrupting() {
    let (mut l, clock) = enabled();
    l.write_register(REG_LVT_TIMER, LVT_MASKED | LVT_TIMER_PERIODIC | 0xef);
    l.write_register(REG_TIMER_DIVIDE, 0xb);
    l.write_register(REG_TIMER_INITIAL, 100);
    assert_eq!(l.next_deadline_ns(), None, "nothing to wake for");
    clock.advance_ns(250);
    assert_eq!(l.read_register(REG_TIMER_CURRENT), 50);
    // Unmasking does not replay expiries that happened while masked.
    l.write_register(REG_LVT_TIMER, LVT_TIMER_PERIODIC | 0xef);
    assert!(!l.is_requested(0xef));
    assert_eq!(l.next_deadline_ns(), Some(300));
}

#[test]
fn divide_change_keeps_the_count() {
    let (mut l, clock) = enabled();
    l.write_register(REG_LVT_TIMER, 0xe0);
    l.write_register(REG_TIMER_DIVIDE, 0xb);
    l.write_register(REG_TIMER_INITIAL, 100);
    clock.advance_ns(40);
    l.write_register(REG_TIMER_DIVIDE, 0x0); // by 2
    assert_eq!(l.read_register(REG_TIMER_CURRENT), 60);
    assert_eq!(l.next_deadline_ns(), Some(40 + 120));
}

#[test]
fn lint_pins() {
    let (mut l, _) = enabled();
    // LINT1 as NMI (SeaBIOS writes 0x8400).
    l.write_register(REG_LVT_LINT1, 0x8400);
    l.set_lint1(true);
    assert!(l.take_nmi());
    l.set_lint1(true);
    assert!(!l.take_nmi(), "edge only");
    // LINT0 fixed, edge.
    l.write_register(REG_LVT_LINT0, 0x41);
    assert!(!l.lint0_is_extint());
    l.set_lint0(true);
    assert!(l.is_requested(0x41));
    l.set_lint0(false);
    // LINT0 fixed, level: remote IRR until EOI, again while asserted.
    l.write_register(REG_LVT_LINT0, LVT_LEVEL_TRIGGERED | 0x42);
    l.set_lint0(true);
    assert!(l.is_requested(0x42));
    assert_ne!(l.read_register(REG_LVT_LINT0) & LVT_REMOTE_IRR, 0);
    assert_eq!(l.acknowledge(), Some(0x42));
    l.write_register(REG_EOI, 0);
    assert!(l.is_requested(0x42), "still asserted");
    assert_eq!(l.take_eois().vectors().collect::<Vec<_>>(), vec![0x42]);
    l.set_lint0(false);
    assert_eq!(l.acknowledge(), Some(0x42));
    l.write_register(REG_EOI, 0);
    assert_eq!(l.read_register(REG_LVT_LINT0) & LVT_REMOTE_IRR, 0);
    assert!(!l.is_requested(0x42));
}

#[test]
fn global_disable() {
    let (mut l, _) = enabled();
    l.write_register(REG_LVT_LINT0, 0x8700);
    l.set_base_msr(0xfee0_0000);
    assert_eq!(l.base_msr(), 0xfee0_0100, "BSP is read-only");
    assert!(!l.enabled());
    assert!(l.lint0_is_extint(), "INTR goes straight to the CPU");
    assert_eq!(l.read_register(REG_SVR) & SVR_APIC_ENABLED, 0);
    assert!(!l.accept_interrupt(0x40, false));
    assert_eq!(l.acknowledge(), None);
    l.set_lint1(true);
    assert!(l.take_nmi(), "LINT1 is NMI");
    l.set_base_msr(0xfee0_0800);
    assert!(l.hw_enabled());
    assert!(!l.enabled(), "still software-disabled");
}

/// A counter of the notifier's calls.
fn count_notifications(l: &mut Lapic) -> Arc<AtomicU32> {
    let count = Arc::new(AtomicU32::new(0));
    let c = count.clone();
    l.set_intr_notifier(move || {
        c.fetch_add(1, Ordering::SeqCst);
    });
    count
}

#[test]
fn notifier_wakes_on_new_interrupts() {
    let (mut l, _) = enabled();
    let count = count_notifications(&mut l);
    l.write_register(REG_TPR, 0x50);
    l.accept_interrupt(0x40, false);
    assert_eq!(count.load(Ordering::SeqCst), 0, "blocked by TPR");
    l.accept_interrupt(0x60, false);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    l.deliver_nmi();
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn mmio_widths_and_offsets() {
    let (l, _) = enabled();
    let lapic = Arc::new(Mutex::new(l));
    let mut mmio = LapicMmio::new(lapic.clone());
    let mut d = [0xaau8; 4];
    mmio.read(LAPIC_BASE, REG_VERSION, &mut d);
    assert_eq!(u32::from_le_bytes(d), LAPIC_VERSION);
    mmio.read(LAPIC_BASE, REG_VERSION + 4, &mut d);
    assert_eq!(d, [0; 4], "misaligned");
    let mut b = [0xaau8; 1];
    mmio.read(LAPIC_BASE, REG_VERSION, &mut b);
    assert_eq!(b, [0]);
    mmio.write(LAPIC_BASE, REG_TPR, &[0x20]);
    mmio.write(LAPIC_BASE, REG_TPR, &[0x20, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(crate::lock(&lapic).read_register(REG_TPR), 0);
    mmio.write(LAPIC_BASE, REG_TPR, &[0x20, 0, 0, 0]);
    assert_eq!(crate::lock(&lapic).read_register(REG_TPR), 0x20);
    // Nothing panics, whatever the guest does.
    for offset in (0..0x1010u64).step_by(4) {
        for len in [1usize, 2, 4, 8] {
            let mut buf = vec![0xff; len];
            mmio.read(LAPIC_BASE, offset, &mut buf);
            mmio.write(LAPIC_BASE, offset, &buf);
        }
    }
    mmio.read(LAPIC_BASE, u64::MAX, &mut d);
    mmio.write(LAPIC_BASE, u64::MAX - 15, &d);
}

/// The timer in TSC-deadline mode with vector 0xe5, unmasked.
fn tsc_deadline_mode() -> (Lapic, Arc<ManualClock>) {
    let (mut l, clock) = enabled();
    l.write_register(REG_LVT_TIMER, LVT_TIMER_TSC_DEADLINE | 0xe5);
    (l, clock)
}

#[test]
fn tsc_deadline_fires_once_and_clears() {
    let (mut l, clock) = tsc_deadline_mode();
    assert_eq!(l.read_register(REG_LVT_TIMER), 0x0004_00e5);
    assert_eq!(l.tsc_deadline_ns(), None, "disarmed until written");
    assert_eq!(l.next_deadline_ns(), None);
    l.set_tsc_deadline_ns(Some(5_000));
    assert_eq!(l.tsc_deadline_ns(), Some(5_000));
    assert_eq!(
        l.next_deadline_ns(),
        Some(5_000),
        "the timer thread wakes for it"
    );
    clock.advance_ns(4_999);
    l.tick();
    assert!(!l.is_requested(0xe5));
    assert_eq!(l.tsc_deadline_ns(), Some(5_000));
    clock.advance_ns(1);
    l.tick();
    assert!(l.is_requested(0xe5));
    assert_eq!(l.tsc_deadline_ns(), None, "the MSR reads 0 after it fires");
    assert_eq!(l.next_deadline_ns(), None);
    assert_eq!(l.acknowledge(), Some(0xe5));
    l.write_register(REG_EOI, 0);
    clock.advance_ns(1_000_000);
    l.tick();
    assert!(!l.is_requested(0xe5), "fires once");
    // Re-arming; a later write replaces the deadline.
    l.set_tsc_deadline_ns(Some(2_000_000));
    l.set_tsc_deadline_ns(Some(3_000_000));
    clock.advance_ns(1_000_000);
    l.tick();
    assert!(!l.is_requested(0xe5));
    clock.advance_ns(1_000_000);
    l.tick();
    assert!(l.is_requested(0xe5));
}

#[test]
fn tsc_deadline_in_the_past_fires_at_once() {
    let (mut l, clock) = tsc_deadline_mode();
    clock.advance_ns(10_000);
    l.set_tsc_deadline_ns(Some(9_000));
    assert!(l.is_requested(0xe5), "without waiting for a tick");
    assert_eq!(l.tsc_deadline_ns(), None);
    assert_eq!(l.acknowledge(), Some(0xe5));
    l.write_register(REG_EOI, 0);
    // The clock's origin (a TSC value before the offset) is a deadline too.
    l.set_tsc_deadline_ns(Some(0));
    assert!(l.is_requested(0xe5));
    l.acknowledge();
    l.write_register(REG_EOI, 0);
    l.set_tsc_deadline_ns(Some(10_000));
    assert!(l.is_requested(0xe5), "now counts as reached");
}

#[test]
fn tsc_deadline_disarm_and_mask() {
    let (mut l, clock) = tsc_deadline_mode();
    l.set_tsc_deadline_ns(Some(1_000));
    l.set_tsc_deadline_ns(None);
    assert_eq!(l.next_deadline_ns(), None);
    clock.advance_ns(2_000);
    l.tick();
    assert!(!l.is_requested(0xe5), "disarmed");
    // Masked: the deadline passes silently and still clears.
    l.write_register(REG_LVT_TIMER, LVT_MASKED | LVT_TIMER_TSC_DEADLINE | 0xe5);
    l.set_tsc_deadline_ns(Some(3_000));
    assert_eq!(l.next_deadline_ns(), None, "nothing to wake for");
    assert_eq!(l.tsc_deadline_ns(), Some(3_000));
    clock.advance_ns(1_000);
    assert_eq!(l.tsc_deadline_ns(), None);
    l.write_register(REG_LVT_TIMER, LVT_TIMER_TSC_DEADLINE | 0xe5);
    assert!(!l.is_requested(0xe5), "unmasking replays nothing");
}

#[test]
fn tsc_deadline_mode_ignores_the_counts() {
    let (mut l, clock) = tsc_deadline_mode();
    l.write_register(REG_TIMER_DIVIDE, 0xb);
    l.write_register(REG_TIMER_INITIAL, 1_000);
    assert_eq!(l.read_register(REG_TIMER_INITIAL), 0, "writes ignored");
    assert_eq!(l.read_register(REG_TIMER_CURRENT), 0);
    assert_eq!(l.next_deadline_ns(), None);
    l.set_tsc_deadline_ns(Some(500));
    l.write_register(REG_TIMER_DIVIDE, 0x3);
    assert_eq!(l.read_register(REG_TIMER_CURRENT), 0);
    assert_eq!(l.next_deadline_ns(), Some(500), "a divide change leaves it");
    clock.advance_ns(500);
    l.tick();
    assert!(l.is_requested(0xe5));
    assert_eq!(l.read_register(REG_TIMER_CURRENT), 0);
}

#[test]
fn tsc_deadline_msr_outside_its_mode() {
    let (mut l, clock) = enabled();
    l.write_register(REG_LVT_TIMER, 0xe5);
    l.set_tsc_deadline_ns(Some(100));
    assert_eq!(l.tsc_deadline_ns(), None, "reads 0");
    assert_eq!(l.next_deadline_ns(), None, "writes ignored");
    clock.advance_ns(1_000);
    l.tick();
    assert!(!l.is_requested(0xe5));
    // A one-shot count running is not disturbed.
    l.write_register(REG_TIMER_DIVIDE, 0xb);
    l.write_register(REG_TIMER_INITIAL, 100);
    l.set_tsc_deadline_ns(None);
    assert_eq!(l.next_deadline_ns(), Some(1_100));
}

#[test]
fn mode_changes_to_and_from_tsc_deadline_disarm() {
    let (mut l, clock) = enabled();
    l.write_register(REG_TIMER_DIVIDE, 0xb);
    l.write_register(REG_LVT_TIMER, 0xe5);
    l.write_register(REG_TIMER_INITIAL, 1_000);
    // One-shot to periodic keeps counting.
    l.write_register(REG_LVT_TIMER, LVT_TIMER_PERIODIC | 0xe5);
    assert_eq!(l.next_deadline_ns(), Some(1_000));
    assert_eq!(l.read_register(REG_TIMER_INITIAL), 1_000);
    // Periodic to TSC-deadline stops it.
    l.write_register(REG_LVT_TIMER, LVT_TIMER_TSC_DEADLINE | 0xe5);
    assert_eq!(l.next_deadline_ns(), None);
    assert_eq!(l.read_register(REG_TIMER_INITIAL), 0);
    assert_eq!(l.read_register(REG_TIMER_CURRENT), 0);
    clock.advance_ns(2_000);
    l.tick();
    assert!(!l.is_requested(0xe5));
    // An armed deadline is dropped when leaving the mode, and the old
    // count does not come back.
    l.set_tsc_deadline_ns(Some(5_000));
    l.write_register(REG_LVT_TIMER, 0xe5);
    assert_eq!(l.next_deadline_ns(), None);
    assert_eq!(l.read_register(REG_TIMER_INITIAL), 0);
    assert_eq!(l.read_register(REG_TIMER_CURRENT), 0);
    l.write_register(REG_LVT_TIMER, LVT_TIMER_TSC_DEADLINE | 0xe5);
    assert_eq!(l.tsc_deadline_ns(), None, "disarmed, not kept");
    // Masking in TSC-deadline mode is no mode change.
    l.set_tsc_deadline_ns(Some(6_000));
    l.write_register(REG_LVT_TIMER, LVT_MASKED | LVT_TIMER_TSC_DEADLINE | 0xe5);
    assert_eq!(l.tsc_deadline_ns(), Some(6_000));
    // Nor is software-disabling the APIC, which masks the entry.
    l.write_register(REG_SVR, 0xff);
    assert_eq!(l.tsc_deadline_ns(), Some(6_000));
    // Reset disarms.
    l.reset();
    assert_eq!(l.tsc_deadline_ns(), None);
}

#[test]
fn reserved_timer_mode_counts_as_one_shot() {
    let (mut l, clock) = enabled();
    l.write_register(REG_LVT_TIMER, LVT_TIMER_MODE_MASK | 0xe5);
    assert_eq!(l.read_register(REG_LVT_TIMER), 0x0006_00e5);
    l.write_register(REG_TIMER_DIVIDE, 0xb);
    l.write_register(REG_TIMER_INITIAL, 100);
    assert_eq!(l.next_deadline_ns(), Some(100));
    clock.advance_ns(100);
    l.tick();
    assert!(l.is_requested(0xe5));
    assert_eq!(l.next_deadline_ns(), None, "no reload");
    assert_eq!(l.tsc_deadline_ns(), None);
}

#[test]
fn notifier_wakes_when_an_eoi_or_a_lower_tpr_releases_a_requested_vector() {
    let (mut l, _) = enabled();
    let count = count_notifications(&mut l);
    l.accept_interrupt(0x31, false);
    assert_eq!(l.acknowledge(), Some(0x31));
    let woken = count.load(Ordering::SeqCst);
    // A second edge while the first is in service waits in the IRR (same
    // priority class): nothing to wake for yet.
    l.accept_interrupt(0x32, false);
    assert_eq!(l.pending_vector(), None);
    assert_eq!(count.load(Ordering::SeqCst), woken);
    // The EOI releases it: an idle CPU must hear of it now, not at the next
    // request (the serial line's lost THRE interrupt).
    l.write_register(REG_EOI, 0);
    assert_eq!(l.pending_vector(), Some(0x32));
    assert_eq!(count.load(Ordering::SeqCst), woken + 1);

    assert_eq!(l.acknowledge(), Some(0x32));
    l.write_register(REG_EOI, 0);
    l.write_register(REG_TPR, 0x50);
    l.accept_interrupt(0x45, false);
    let woken = count.load(Ordering::SeqCst);
    l.set_tpr_cr8(3);
    assert_eq!(count.load(Ordering::SeqCst), woken + 1, "CR8 lowered below the vector");
    l.write_register(REG_TPR, 0x60);
    l.write_register(REG_TPR, 0x00);
    assert_eq!(count.load(Ordering::SeqCst), woken + 2, "TPR lowered below the vector");
}
