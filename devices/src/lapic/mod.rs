//! A local APIC in xAPIC (MMIO) mode, as the Intel SDM Vol. 3A chapter 11
//! ("Advanced Programmable Interrupt Controller") describes it, for popek's
//! software CPU backends. Under KVM the kernel's irqchip is used instead.
//!
//! Registers, at their offsets in the 4 KiB page at [`LAPIC_BASE`]:
//!
//! * ID (0x20, bits 24-31, writable), version (0x30: [`LAPIC_VERSION`],
//!   version 0x14 with max LVT entry 5, i.e. timer, thermal, performance,
//!   LINT0, LINT1 and error; no CMCI, no EOI-broadcast suppression).
//! * TPR (0x80), APR (0x90) and PPR (0xA0): PPR is TPR when TPR[7:4] >=
//!   ISRV[7:4], else ISRV[7:4] << 4 (SDM 11.8.3.1); APR follows the SDM's
//!   P6/Pentium 4 formula. An interrupt is deliverable when the priority
//!   class of the highest IRR bit is above PPR[7:4].
//! * EOI (0xB0, write-only): clears the highest ISR bit. If that vector was
//!   accepted level-triggered (its TMR bit is set) the EOI is owed to the
//!   IOAPIC: see "EOI and lock ordering" below.
//! * LDR (0xD0, bits 24-31), DFR (0xE0, model in bits 28-31, the rest read
//!   as 1): logical destinations in the flat and cluster models.
//! * SVR (0xF0): spurious vector (bits 0-7), APIC software enable (bit 8),
//!   focus processor checking (bit 9, stored only). Clearing bit 8 masks every
//!   LVT entry, and they stay masked while the APIC is software-disabled;
//!   fixed interrupts are then dropped, IRR and ISR are kept.
//! * ISR, TMR, IRR (0x100, 0x180, 0x200: eight 32-bit words each, read-only).
//! * ESR (0x280): errors accumulate internally; a write (of any value) copies
//!   them into the readable ESR and clears them. Send illegal vector (bit 5,
//!   an ICR with vector 0-15), receive illegal vector (bit 6, an accepted or
//!   locally generated vector 0-15, which is then not delivered) and illegal
//!   register address (bit 7, an access to a reserved offset). Each error
//!   raises the LVT error interrupt when that entry is unmasked.
//! * ICR (0x300 low, 0x310 high): writing the low half sends the IPI,
//!   which completes at once (delivery status always reads idle). There is
//!   one CPU: fixed and lowest-priority IPIs reach this APIC when the
//!   shorthand is "self" or "all including self", or with no shorthand when
//!   the destination matches its ID (physical, 0xFF broadcasts) or its LDR
//!   (logical). NMI to self latches an NMI ([`Lapic::take_nmi`]). INIT and
//!   start-up IPIs and "all excluding self" have no target: they are logged
//!   and the last command is kept ([`Lapic::last_ipi`]).
//! * LVT timer, thermal, performance counter, LINT0, LINT1, error
//!   (0x320-0x370). Reset masks all of them except LINT0, which comes up as
//!   unmasked ExtINT: as in QEMU and KVM the bootstrap processor's LINT0
//!   passes the 8259's INTR through, so a guest that never touches the APIC
//!   (real-mode BIOS, DOS, test ROMs) still gets PIC interrupts. Nothing
//!   drives the thermal and performance entries. Delivery status reads 0;
//!   remote IRR (bit 14 of LINT0/1) is read-only.
//! * Timer: initial count (0x380), current count (0x390, read-only), divide
//!   configuration (0x3E0: bits 0, 1 and 3; divide by 1-128). The LVT timer's
//!   mode field (bits 17-18) selects one-shot (00), periodic (01) or
//!   TSC-deadline (10) mode; 11 is reserved, kept as written and counts as
//!   one-shot, as in KVM. See "TSC-deadline mode" below.
//!
//! Only aligned 32-bit accesses at 16-byte-aligned offsets reach a
//! register; other widths and offsets read 0 and ignore writes. The APIC base
//! MSR (IA32_APIC_BASE, 0x1B) belongs to the CPU, which stores it here
//! ([`Lapic::set_base_msr`]): bit 8 BSP (read-only, set), bit 11 global
//! enable, bits 12-51 the base. Relocating the base is recorded but the page
//! stays where the machine inserted it. Clearing the global enable
//! software-disables the APIC too; while it is clear the APIC takes no
//! interrupts and LINT0 is the CPU's INTR ([`Lapic::lint0_is_extint`]).
//!
//! # Timer clock
//!
//! The timer counts the APIC bus clock, [`LAPIC_BUS_FREQUENCY_HZ`] = 1 GHz
//! (1 ns per bus cycle before the divider, KVM's default), from the
//! monotonic [`emu_core::Clock`]. Like the PIT, counts are computed from the
//! time since the count was loaded; [`Lapic::tick`] delivers an expiry that
//! is due (several missed periods coalesce into one interrupt) and
//! [`Lapic::next_deadline_ns`] says when the next one is. Every register
//! access first catches up the same way.
//!
//! # TSC-deadline mode
//!
//! As the SDM's section 11.5.4.1 describes: in TSC-deadline mode the initial
//! count register ignores writes and reads 0, the current count reads 0, and
//! the timer is armed through IA32_TSC_DEADLINE ([`MSR_IA32_TSC_DEADLINE`]).
//! The TSC is the CPU's, so the APIC takes the deadline as a time on its
//! monotonic clock: the CPU converts the MSR value (its TSC runs at 1 GHz,
//! one tick per clock nanosecond plus an offset) and calls
//! [`Lapic::set_tsc_deadline_ns`], `None` for an MSR write of 0, which
//! disarms. When the clock reaches the deadline the timer interrupts once
//! (if the LVT entry is unmasked) and disarms, so the MSR reads 0 again
//! ([`Lapic::tsc_deadline_ns`] gives `None`); a deadline already past fires
//! at once. Outside TSC-deadline mode the MSR reads 0 and writes are
//! ignored, as in KVM. Changing the mode field into or out of TSC-deadline
//! mode disarms the timer (clearing the initial count and the deadline);
//! switching between one-shot and periodic keeps the count going. CPUID
//! may advertise TSC-deadline (leaf 1, ECX bit 24).
//!
//! # The CPU's side
//!
//! Before each instruction boundary where interrupts are open the CPU asks,
//! in this order: [`Lapic::take_nmi`]; if [`Lapic::lint0_is_extint`] and the
//! PIC has INTR, the PIC's vector; else [`Lapic::pending_vector`] and
//! [`Lapic::acknowledge`]. CR8 reads and writes go to [`Lapic::tpr_cr8`] and
//! [`Lapic::set_tpr_cr8`]. [`Lapic::set_intr_notifier`] wakes a halted vCPU.
//!
//! # EOI and lock ordering
//!
//! The machine shares the APIC as `Arc<Mutex<Lapic>>` ([`SharedLapic`]) and
//! inserts a [`LapicMmio`] on the MMIO bus at [`LAPIC_BASE`], len
//! [`LAPIC_LEN`]. The rules that make deadlock impossible:
//!
//! 1. The IOAPIC locks the LAPIC while holding its own lock (IOAPIC ->
//!    LAPIC), to deliver.
//! 2. Nothing locks the IOAPIC (or any other device) while holding the
//!    LAPIC's lock. So a level-triggered EOI is not reported from inside the
//!    EOI write: the LAPIC queues it, and whoever holds the lock takes it
//!    with [`Lapic::take_eois`] and calls [`PendingEois::deliver`] after
//!    unlocking. [`LapicMmio`] does this for guest MMIO writes; a backend that
//!    writes registers directly must do the same.
//! 3. The EOI listener ([`Lapic::set_eoi_listener`], wired by
//!    [`crate::IoApic::connect_eoi`]) and the interrupt notifier run without
//!    (listener) or with (notifier) the LAPIC locked; the notifier must not
//!    lock any device.

use std::sync::{Arc, Mutex};

use emu_core::{BusDevice, SharedClock};

/// Where the machine inserts the APIC page on the MMIO bus.
pub const LAPIC_BASE: u64 = 0xfee0_0000;
/// Length of the APIC page.
pub const LAPIC_LEN: u64 = 0x1000;
/// The APIC timer's input clock (before the divider).
pub const LAPIC_BUS_FREQUENCY_HZ: u64 = 1_000_000_000;
/// Version register: version 0x14 (integrated xAPIC), max LVT entry 5.
pub const LAPIC_VERSION: u32 = 0x0005_0014;

/// Local APIC ID register.
pub const REG_ID: u64 = 0x20;
/// Version register.
pub const REG_VERSION: u64 = 0x30;
/// Task priority register.
pub const REG_TPR: u64 = 0x80;
/// Arbitration priority register.
pub const REG_APR: u64 = 0x90;
/// Processor priority register.
pub const REG_PPR: u64 = 0xa0;
/// End-of-interrupt register.
pub const REG_EOI: u64 = 0xb0;
/// Logical destination register.
pub const REG_LDR: u64 = 0xd0;
/// Destination format register.
pub const REG_DFR: u64 = 0xe0;
/// Spurious interrupt vector register.
pub const REG_SVR: u64 = 0xf0;
/// First in-service register word.
pub const REG_ISR: u64 = 0x100;
/// First trigger mode register word.
pub const REG_TMR: u64 = 0x180;
/// First interrupt request register word.
pub const REG_IRR: u64 = 0x200;
/// Error status register.
pub const REG_ESR: u64 = 0x280;
/// Interrupt command register, low half (writing it sends).
pub const REG_ICR_LOW: u64 = 0x300;
/// Interrupt command register, high half (destination).
pub const REG_ICR_HIGH: u64 = 0x310;
/// LVT timer register.
pub const REG_LVT_TIMER: u64 = 0x320;
/// LVT thermal sensor register.
pub const REG_LVT_THERMAL: u64 = 0x330;
/// LVT performance monitoring counters register.
pub const REG_LVT_PERF: u64 = 0x340;
/// LVT LINT0 register.
pub const REG_LVT_LINT0: u64 = 0x350;
/// LVT LINT1 register.
pub const REG_LVT_LINT1: u64 = 0x360;
/// LVT error register.
pub const REG_LVT_ERROR: u64 = 0x370;
/// Timer initial count register.
pub const REG_TIMER_INITIAL: u64 = 0x380;
/// Timer current count register.
pub const REG_TIMER_CURRENT: u64 = 0x390;
/// Timer divide configuration register.
pub const REG_TIMER_DIVIDE: u64 = 0x3e0;

/// IA32_APIC_BASE: this is the bootstrap processor.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE: APIC global enable.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE: the page base (bits 12-51).
pub const APIC_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// SVR: APIC software enable.
pub const SVR_APIC_ENABLED: u32 = 1 << 8;
const SVR_WRITABLE: u32 = 0x3ff;

/// ESR: an ICR write carried a vector below 16.
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR: a vector below 16 was received or generated locally.
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
/// ESR: an access to a reserved register.
pub const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

/// LVT: the entry is masked.
pub const LVT_MASKED: u32 = 1 << 16;
/// LVT LINT0/1: remote IRR (level-triggered fixed interrupt in service).
pub const LVT_REMOTE_IRR: u32 = 1 << 14;
/// LVT LINT0/1: level-triggered.
pub const LVT_LEVEL_TRIGGERED: u32 = 1 << 15;
/// LVT timer mode field value for periodic mode (bits 17-18).
pub const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// LVT timer mode field value for TSC-deadline mode.
pub const LVT_TIMER_TSC_DEADLINE: u32 = 2 << 17;
/// LVT timer mode field (bits 17-18).
pub const LVT_TIMER_MODE_MASK: u32 = 3 << 17;
/// The IA32_TSC_DEADLINE MSR, which the CPU handles through
/// [`Lapic::set_tsc_deadline_ns`] and [`Lapic::tsc_deadline_ns`].
pub const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;

const LVT_TIMER: usize = 0;
const LVT_LINT0: usize = 3;
const LVT_LINT1: usize = 4;
const LVT_ERROR: usize = 5;
const LVT_COUNT: usize = 6;
/// Writable bits per LVT entry: timer (vector, mask, mode), thermal and
/// perf (vector, delivery mode, mask), LINT0/1 (vector, delivery mode,
/// polarity, trigger mode, mask), error (vector, mask).
const LVT_WRITABLE: [u32; LVT_COUNT] = [
    0x0007_00ff,
    0x0001_07ff,
    0x0001_07ff,
    0x0001_a7ff,
    0x0001_a7ff,
    0x0001_00ff,
];
/// ICR low: vector, delivery mode, destination mode, level, trigger mode,
/// shorthand.
const ICR_LOW_WRITABLE: u32 = 0x000c_cfff;
const DIVIDE_WRITABLE: u32 = 0xb;
const NS_PER_BUS_CYCLE: u64 = 1_000_000_000 / LAPIC_BUS_FREQUENCY_HZ;

/// The delivery mode field (bits 8-10) of an LVT entry, ICR or IOAPIC
/// redirection entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Deliver the vector.
    Fixed,
    /// Deliver the vector to the lowest-priority target (with one CPU, the
    /// same as fixed).
    LowestPriority,
    /// System management interrupt.
    Smi,
    /// Non-maskable interrupt; the vector is ignored.
    Nmi,
    /// INIT.
    Init,
    /// Start-up IPI.
    StartUp,
    /// The vector comes from the 8259A (an INTA cycle).
    ExtInt,
    /// Mode 3, reserved.
    Reserved,
}

impl DeliveryMode {
    /// The mode in bits 8-10 of `value`.
    pub fn from_bits(value: u64) -> Self {
        match (value >> 8) & 7 {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            4 => Self::Nmi,
            5 => Self::Init,
            6 => Self::StartUp,
            7 => Self::ExtInt,
            _ => Self::Reserved,
        }
    }
}

type Notifier = Box<dyn Fn() + Send + Sync>;
/// Called with the vector of each level-triggered EOI.
pub type EoiListener = Arc<dyn Fn(u8) + Send + Sync>;
/// The APIC as the machine shares it.
pub type SharedLapic = Arc<Mutex<Lapic>>;

/// 256 bits, one per vector.
type VectorSet = [u32; 8];

fn set_bit(set: &mut VectorSet, vector: u8) {
    set[usize::from(vector >> 5)] |= 1 << (vector & 31);
}

fn clear_bit(set: &mut VectorSet, vector: u8) {
    set[usize::from(vector >> 5)] &= !(1 << (vector & 31));
}

fn test_bit(set: &VectorSet, vector: u8) -> bool {
    set[usize::from(vector >> 5)] & (1 << (vector & 31)) != 0
}

fn highest(set: &VectorSet) -> Option<u8> {
    (0u8..8)
        .rev()
        .find(|&i| set[usize::from(i)] != 0)
        .map(|i| i * 32 + (31 - set[usize::from(i)].leading_zeros() as u8))
}

/// Level-triggered EOIs the LAPIC owes the IOAPIC, taken out of the LAPIC
/// with [`Lapic::take_eois`] so that they can be reported after its lock is
/// released.
#[must_use = "call deliver() after unlocking the LAPIC, or level interrupts stay blocked"]
pub struct PendingEois {
    vectors: VectorSet,
    listener: Option<EoiListener>,
}

impl PendingEois {
    /// Whether there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.vectors.iter().all(|w| *w == 0)
    }

    /// The vectors, lowest first.
    pub fn vectors(&self) -> impl Iterator<Item = u8> + '_ {
        (0u8..=255).filter(|&v| test_bit(&self.vectors, v))
    }

    /// Calls the EOI listener for each vector. Must be called without the
    /// LAPIC's lock held.
    pub fn deliver(self) {
        if let Some(listener) = &self.listener {
            for vector in self.vectors() {
                listener(vector);
            }
        }
    }
}

impl std::fmt::Debug for PendingEois {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.vectors()).finish()
    }
}

/// One local APIC (xAPIC mode).
pub struct Lapic {
    clock: SharedClock,
    base_msr: u64,
    id: u32,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: VectorSet,
    tmr: VectorSet,
    irr: VectorSet,
    esr: u32,
    esr_pending: u32,
    icr_low: u32,
    icr_high: u32,
    lvt: [u32; LVT_COUNT],
    timer_initial: u32,
    timer_divide: u32,
    /// A time at which the current count was `timer_ref_count`.
    timer_ref_ns: u64,
    timer_ref_count: u32,
    /// The next expiry; `None` when stopped or after a one-shot expiry. In
    /// TSC-deadline mode, the armed deadline.
    timer_next_ns: Option<u64>,
    lint_level: [bool; 2],
    nmi_pending: bool,
    pending_eois: VectorSet,
    last_ipi: Option<u64>,
    intr_notifier: Option<Notifier>,
    eoi_listener: Option<EoiListener>,
}

impl std::fmt::Debug for Lapic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lapic")
            .field("base_msr", &self.base_msr)
            .field("id", &self.id)
            .field("tpr", &self.tpr)
            .field("svr", &self.svr)
            .field("isr", &self.isr)
            .field("irr", &self.irr)
            .field("lvt", &self.lvt)
            .field("timer_initial", &self.timer_initial)
            .finish()
    }
}

impl Lapic {
    /// An APIC as after power-on, with APIC ID 0, globally enabled at
    /// [`LAPIC_BASE`] as the bootstrap processor, software-disabled
    /// (SVR 0xFF), LVT entries masked except LINT0 (ExtINT), timer counted
    /// from `clock`.
    pub fn new(clock: SharedClock) -> Self {
        let mut lapic = Self {
            clock,
            base_msr: 0,
            id: 0,
            tpr: 0,
            ldr: 0,
            dfr: 0,
            svr: 0,
            isr: [0; 8],
            tmr: [0; 8],
            irr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr_low: 0,
            icr_high: 0,
            lvt: [0; LVT_COUNT],
            timer_initial: 0,
            timer_divide: 0,
            timer_ref_ns: 0,
            timer_ref_count: 0,
            timer_next_ns: None,
            lint_level: [false; 2],
            nmi_pending: false,
            pending_eois: [0; 8],
            last_ipi: None,
            intr_notifier: None,
            eoi_listener: None,
        };
        lapic.reset();
        lapic
    }

    /// Returns every register to its power-on value (INIT-style reset of
    /// the whole APIC, ID 0); the clock, notifier and EOI listener stay.
    pub fn reset(&mut self) {
        self.base_msr = LAPIC_BASE | APIC_BASE_ENABLE | APIC_BASE_BSP;
        self.id = 0;
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = 0xffff_ffff;
        self.svr = 0xff;
        self.isr = [0; 8];
        self.tmr = [0; 8];
        self.irr = [0; 8];
        self.esr = 0;
        self.esr_pending = 0;
        self.icr_low = 0;
        self.icr_high = 0;
        self.lvt = [LVT_MASKED; LVT_COUNT];
        // ExtINT, unmasked: the PIC reaches the BSP until the guest says
        // otherwise.
        self.lvt[LVT_LINT0] = 0x700;
        self.timer_initial = 0;
        self.timer_divide = 0;
        self.timer_ref_ns = 0;
        self.timer_ref_count = 0;
        self.timer_next_ns = None;
        self.nmi_pending = false;
        self.pending_eois = [0; 8];
        self.last_ipi = None;
    }

    /// Calls `notify` whenever an interrupt or NMI becomes pending, so a
    /// vCPU blocked in `hlt` can be woken. It runs with the LAPIC locked
    /// (and possibly the IOAPIC) and must not lock any device.
    pub fn set_intr_notifier(&mut self, notify: impl Fn() + Send + Sync + 'static) {
        self.intr_notifier = Some(Box::new(notify));
    }

    /// Sets the function told about each EOI of a level-triggered vector
    /// (the IOAPIC's [`crate::IoApic::end_of_interrupt`]). It is only ever
    /// called by [`PendingEois::deliver`], outside the LAPIC's lock.
    pub fn set_eoi_listener(&mut self, listener: impl Fn(u8) + Send + Sync + 'static) {
        self.eoi_listener = Some(Arc::new(listener));
    }

    /// Takes the level-triggered EOIs written since the last call, to be
    /// delivered once the LAPIC's lock is released.
    pub fn take_eois(&mut self) -> PendingEois {
        PendingEois {
            vectors: std::mem::take(&mut self.pending_eois),
            listener: self.eoi_listener.clone(),
        }
    }

    /// IA32_APIC_BASE as the CPU last wrote it.
    pub fn base_msr(&self) -> u64 {
        self.base_msr
    }

    /// Stores IA32_APIC_BASE (the CPU has already checked reserved bits).
    /// Clearing the global enable also software-disables the APIC.
    pub fn set_base_msr(&mut self, value: u64) {
        self.catch_up();
        let was_deliverable = self.pending_vector().is_some();
        let was_enabled = self.hw_enabled();
        self.base_msr =
            (value & (APIC_BASE_ENABLE | APIC_BASE_ADDR_MASK)) | (self.base_msr & APIC_BASE_BSP);
        if value & APIC_BASE_ADDR_MASK != LAPIC_BASE {
            tracing::debug!(
                "lapic: base moved to {:#x}; the page stays at {LAPIC_BASE:#x}",
                value & APIC_BASE_ADDR_MASK
            );
        }
        if was_enabled && !self.hw_enabled() {
            self.software_disable();
        }
        self.notify_if_now_deliverable(was_deliverable);
    }

    /// The APIC ID (bits 24-31 of the ID register).
    pub fn apic_id(&self) -> u8 {
        (self.id >> 24) as u8
    }

    /// Whether IA32_APIC_BASE's global enable is set.
    pub fn hw_enabled(&self) -> bool {
        self.base_msr & APIC_BASE_ENABLE != 0
    }

    /// Whether the APIC takes interrupts: globally and software enabled.
    pub fn enabled(&self) -> bool {
        self.hw_enabled() && self.svr & SVR_APIC_ENABLED != 0
    }

    /// CR8: TPR bits 7-4.
    pub fn tpr_cr8(&self) -> u8 {
        ((self.tpr >> 4) & 0xf) as u8
    }

    /// A write to CR8: sets TPR to `value[3:0] << 4`.
    pub fn set_tpr_cr8(&mut self, value: u8) {
        let was_deliverable = self.pending_vector().is_some();
        self.tpr = u32::from(value & 0xf) << 4;
        self.notify_if_now_deliverable(was_deliverable);
    }

    /// The processor priority.
    pub fn ppr(&self) -> u8 {
        let tpr = self.tpr as u8;
        let isrv = highest(&self.isr).unwrap_or(0);
        if tpr >> 4 >= isrv >> 4 {
            tpr
        } else {
            isrv & 0xf0
        }
    }

    fn apr(&self) -> u8 {
        let tpr = self.tpr as u8;
        let tpr_class = tpr >> 4;
        let isr_class = highest(&self.isr).unwrap_or(0) >> 4;
        let irr_class = highest(&self.irr).unwrap_or(0) >> 4;
        if tpr_class >= irr_class && tpr_class > isr_class {
            tpr
        } else {
            (tpr_class & isr_class).max(irr_class) << 4
        }
    }

    /// Whether `vector` is set in the IRR.
    pub fn is_requested(&self, vector: u8) -> bool {
        test_bit(&self.irr, vector)
    }

    /// Whether `vector` is set in the ISR.
    pub fn is_in_service(&self, vector: u8) -> bool {
        test_bit(&self.isr, vector)
    }

    /// The spurious-interrupt vector (SVR bits 0-7).
    pub fn spurious_vector(&self) -> u8 {
        self.svr as u8
    }

    /// The last ICR command written (high half in bits 32-63).
    pub fn last_ipi(&self) -> Option<u64> {
        self.last_ipi
    }

    /// Whether `dest` selects this APIC: physical mode matches the APIC ID
    /// or the 0xFF broadcast; logical mode matches the LDR in the flat or
    /// cluster model that DFR selects.
    pub fn matches_destination(&self, dest: u8, logical: bool) -> bool {
        if !logical {
            return dest == 0xff || dest == self.apic_id();
        }
        let ldr = (self.ldr >> 24) as u8;
        match self.dfr >> 28 {
            0xf => ldr & dest != 0,
            0x0 => {
                let cluster_matches = dest >> 4 == 0xf || dest >> 4 == ldr >> 4;
                cluster_matches && dest & ldr & 0xf != 0
            }
            _ => false,
        }
    }

    /// An interrupt from the IOAPIC, a self-IPI or a local source: sets its
    /// IRR bit (and its TMR bit if `level_triggered`). Returns whether the
    /// APIC accepted it: interrupts are dropped while the APIC is disabled,
    /// and vectors 0-15 are refused with an ESR error.
    pub fn accept_interrupt(&mut self, vector: u8, level_triggered: bool) -> bool {
        if !self.enabled() {
            return false;
        }
        if vector < 16 {
            self.raise_error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return false;
        }
        self.request(vector, level_triggered);
        true
    }

    fn request(&mut self, vector: u8, level_triggered: bool) {
        set_bit(&mut self.irr, vector);
        if level_triggered {
            set_bit(&mut self.tmr, vector);
        } else {
            clear_bit(&mut self.tmr, vector);
        }
        if self.pending_vector().is_some() {
            self.notify();
        }
    }

    fn notify(&self) {
        if let Some(notify) = &self.intr_notifier {
            notify();
        }
    }

    /// Notifies when a vector already in the IRR has just become
    /// deliverable: an EOI, a lower TPR or an enable lowered the priority
    /// that held it back. Without this the CPU would not look again until
    /// the next request, which an idle guest may not make for a long time.
    fn notify_if_now_deliverable(&self, was_deliverable: bool) {
        if !was_deliverable && self.pending_vector().is_some() {
            self.notify();
        }
    }

    /// An NMI from the IOAPIC or a LINT pin in NMI mode.
    pub fn deliver_nmi(&mut self) {
        self.nmi_pending = true;
        self.notify();
    }

    /// Whether an NMI is waiting.
    pub fn nmi_pending(&self) -> bool {
        self.nmi_pending
    }

    /// Takes a waiting NMI.
    pub fn take_nmi(&mut self) -> bool {
        std::mem::take(&mut self.nmi_pending)
    }

    /// The vector the CPU would get now: the highest IRR bit whose priority
    /// class is above PPR's, if the APIC is enabled.
    pub fn pending_vector(&self) -> Option<u8> {
        if !self.enabled() {
            return None;
        }
        let vector = highest(&self.irr)?;
        (vector >> 4 > self.ppr() >> 4).then_some(vector)
    }

    /// The CPU's interrupt acknowledge: moves the highest deliverable IRR
    /// bit into the ISR and returns its vector. With nothing deliverable
    /// (the TPR rose, say) it returns the spurious vector, which sets no ISR
    /// bit, as the hardware does; `None` when the APIC is globally disabled.
    pub fn acknowledge(&mut self) -> Option<u8> {
        if !self.hw_enabled() {
            return None;
        }
        match self.pending_vector() {
            Some(vector) => {
                clear_bit(&mut self.irr, vector);
                set_bit(&mut self.isr, vector);
                Some(vector)
            }
            None => Some(self.spurious_vector()),
        }
    }

    /// Whether the CPU should take interrupts from the 8259A on INTR: the
    /// APIC is globally disabled, or LINT0 is unmasked in ExtINT mode.
    pub fn lint0_is_extint(&self) -> bool {
        let lvt = self.lvt[LVT_LINT0];
        !self.hw_enabled()
            || (lvt & LVT_MASKED == 0
                && DeliveryMode::from_bits(u64::from(lvt)) == DeliveryMode::ExtInt)
    }

    /// Drives the LINT0 pin. In fixed mode it requests the LVT vector (on
    /// a rising edge, or while high and remote IRR is clear if
    /// level-triggered), in NMI mode a rising edge latches an NMI, in
    /// ExtINT mode a rising edge only wakes the CPU, which then asks the PIC.
    /// `level` is the asserted state: the polarity bit is stored, not applied.
    pub fn set_lint0(&mut self, level: bool) {
        self.set_lint(0, level);
    }

    /// Drives the LINT1 pin (usually NMI), as [`Lapic::set_lint0`]. With the
    /// APIC globally disabled a rising edge is an NMI.
    pub fn set_lint1(&mut self, level: bool) {
        self.set_lint(1, level);
    }

    fn set_lint(&mut self, pin: usize, level: bool) {
        let Some(slot) = self.lint_level.get_mut(pin) else {
            return;
        };
        let rising = level && !*slot;
        *slot = level;
        if !self.hw_enabled() {
            // LINT0 is INTR and LINT1 is NMI.
            if rising {
                if pin == 1 {
                    self.deliver_nmi();
                } else {
                    self.notify();
                }
            }
            return;
        }
        let lvt = self.lvt[LVT_LINT0 + pin];
        if lvt & LVT_MASKED != 0 {
            return;
        }
        match DeliveryMode::from_bits(u64::from(lvt)) {
            DeliveryMode::Fixed if lvt & LVT_LEVEL_TRIGGERED != 0 => self.sample_lint_level(pin),
            DeliveryMode::Fixed if rising => {
                self.deliver_local(lvt as u8, false);
            }
            DeliveryMode::Nmi if rising => self.deliver_nmi(),
            DeliveryMode::ExtInt if rising => self.notify(),
            _ => {}
        }
    }

    /// A level-triggered fixed LINT pin requests its vector while asserted,
    /// unmasked and not already in service.
    fn sample_lint_level(&mut self, pin: usize) {
        let index = LVT_LINT0 + pin;
        let lvt = self.lvt[index];
        let asserted = self.lint_level.get(pin).copied().unwrap_or(false);
        if !asserted
            || lvt & (LVT_MASKED | LVT_REMOTE_IRR) != 0
            || lvt & LVT_LEVEL_TRIGGERED == 0
            || DeliveryMode::from_bits(u64::from(lvt)) != DeliveryMode::Fixed
        {
            return;
        }
        if self.deliver_local(lvt as u8, true) {
            self.lvt[index] |= LVT_REMOTE_IRR;
        }
    }

    /// Delivers a locally generated vector (LVT or self-IPI).
    fn deliver_local(&mut self, vector: u8, level_triggered: bool) -> bool {
        self.accept_interrupt(vector, level_triggered)
    }

    fn raise_error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let lvt = self.lvt[LVT_ERROR];
        if lvt & LVT_MASKED != 0 || !self.enabled() {
            return;
        }
        let vector = lvt as u8;
        if vector < 16 {
            // Not delivered, and not reported through the error LVT again.
            self.esr_pending |= ESR_RECEIVE_ILLEGAL_VECTOR;
            return;
        }
        self.request(vector, false);
    }

    fn software_disable(&mut self) {
        self.svr &= !SVR_APIC_ENABLED;
        for lvt in &mut self.lvt {
            *lvt |= LVT_MASKED;
        }
    }

    fn eoi(&mut self) {
        let Some(vector) = highest(&self.isr) else {
            return;
        };
        clear_bit(&mut self.isr, vector);
        if !test_bit(&self.tmr, vector) {
            return;
        }
        for pin in 0..2 {
            let index = LVT_LINT0 + pin;
            if self.lvt[index] & LVT_REMOTE_IRR != 0 && self.lvt[index] as u8 == vector {
                self.lvt[index] &= !LVT_REMOTE_IRR;
                self.sample_lint_level(pin);
            }
        }
        set_bit(&mut self.pending_eois, vector);
    }

    fn write_svr(&mut self, value: u32) {
        self.svr = value & SVR_WRITABLE;
        if value & SVR_APIC_ENABLED == 0 {
            self.software_disable();
        }
    }

    fn write_lvt(&mut self, index: usize, value: u32) {
        let Some(&writable) = LVT_WRITABLE.get(index) else {
            return;
        };
        let old = self.lvt[index];
        let mut new = (value & writable) | (old & LVT_REMOTE_IRR);
        if self.svr & SVR_APIC_ENABLED == 0 {
            new |= LVT_MASKED;
        }
        if new & LVT_LEVEL_TRIGGERED == 0 {
            new &= !LVT_REMOTE_IRR;
        }
        self.lvt[index] = new;
        if index == LVT_TIMER
            && (old & LVT_TIMER_MODE_MASK == LVT_TIMER_TSC_DEADLINE)
                != (new & LVT_TIMER_MODE_MASK == LVT_TIMER_TSC_DEADLINE)
        {
            // Entering or leaving TSC-deadline mode disarms the timer.
            self.timer_initial = 0;
            self.timer_ref_count = 0;
            self.timer_next_ns = None;
        }
        if index == LVT_LINT0 || index == LVT_LINT1 {
            self.sample_lint_level(index - LVT_LINT0);
        }
    }

    fn write_icr_low(&mut self, value: u32) {
        self.icr_low = value & ICR_LOW_WRITABLE;
        let command = (u64::from(self.icr_high) << 32) | u64::from(self.icr_low);
        self.last_ipi = Some(command);
        let vector = value as u8;
        let logical = value & (1 << 11) != 0;
        let to_self = match (value >> 18) & 3 {
            0 => self.matches_destination((self.icr_high >> 24) as u8, logical),
            1 | 2 => true,
            _ => false,
        };
        match DeliveryMode::from_bits(u64::from(value)) {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                if vector < 16 {
                    self.raise_error(ESR_SEND_ILLEGAL_VECTOR);
                } else if to_self {
                    self.deliver_local(vector, false);
                }
            }
            DeliveryMode::Nmi if to_self => self.deliver_nmi(),
            mode => {
                tracing::debug!("lapic: IPI {command:#x} ({mode:?}) has no target on a single CPU")
            }
        }
    }

    fn timer_divisor(&self) -> u64 {
        let code = (self.timer_divide & 3) | ((self.timer_divide >> 1) & 4);
        if code == 7 {
            1
        } else {
            2 << code
        }
    }

    fn ns_per_count(&self) -> u64 {
        self.timer_divisor() * NS_PER_BUS_CYCLE
    }

    fn timer_period_ns(&self) -> u64 {
        u64::from(self.timer_initial) * self.ns_per_count()
    }

    fn timer_periodic(&self) -> bool {
        self.lvt[LVT_TIMER] & LVT_TIMER_MODE_MASK == LVT_TIMER_PERIODIC
    }

    fn timer_tsc_deadline(&self) -> bool {
        self.lvt[LVT_TIMER] & LVT_TIMER_MODE_MASK == LVT_TIMER_TSC_DEADLINE
    }

    fn current_count(&self, now: u64) -> u32 {
        if self.timer_tsc_deadline() {
            return 0;
        }
        let Some(next) = self.timer_next_ns else {
            return 0;
        };
        let ns_per_count = self.ns_per_count();
        if now < next {
            let counted = now.saturating_sub(self.timer_ref_ns) / ns_per_count;
            return u32::try_from(u64::from(self.timer_ref_count).saturating_sub(counted))
                .unwrap_or(0);
        }
        // An expiry not yet caught up with.
        let period = self.timer_period_ns();
        if !self.timer_periodic() || period == 0 {
            return 0;
        }
        let into_period = (now - next) % period;
        u32::try_from(u64::from(self.timer_initial).saturating_sub(into_period / ns_per_count))
            .unwrap_or(0)
    }

    /// Counts `count` down from `now`.
    fn timer_load(&mut self, now: u64, count: u32) {
        self.timer_ref_ns = now;
        self.timer_ref_count = count;
        self.timer_next_ns =
            (count != 0).then(|| now.saturating_add(u64::from(count) * self.ns_per_count()));
    }

    fn write_timer_initial(&mut self, now: u64, value: u32) {
        if self.timer_tsc_deadline() {
            return;
        }
        self.timer_initial = value;
        self.timer_load(now, value);
    }

    fn write_timer_divide(&mut self, now: u64, value: u32) {
        let current = self.current_count(now);
        self.timer_divide = value & DIVIDE_WRITABLE;
        if self.timer_next_ns.is_some() && !self.timer_tsc_deadline() {
            // Keep the current count; count on at the new rate.
            self.timer_load(now, current);
        }
    }

    fn catch_up(&mut self) {
        let now = self.clock.monotonic_ns();
        self.timer_catch_up(now);
    }

    fn timer_catch_up(&mut self, now: u64) {
        let Some(next) = self.timer_next_ns else {
            return;
        };
        if now < next {
            return;
        }
        let period = self.timer_period_ns();
        if self.timer_periodic() && period > 0 {
            // Reload at the last expiry; missed periods coalesce.
            let last_expiry = next.saturating_add((now - next) / period * period);
            self.timer_ref_ns = last_expiry;
            self.timer_ref_count = self.timer_initial;
            self.timer_next_ns = Some(last_expiry.saturating_add(period));
        } else {
            self.timer_next_ns = None;
        }
        let lvt = self.lvt[LVT_TIMER];
        if lvt & LVT_MASKED == 0 {
            self.deliver_local(lvt as u8, false);
        }
    }

    /// Delivers a timer expiry that is due. Call it at
    /// [`Lapic::next_deadline_ns`].
    pub fn tick(&mut self) {
        self.catch_up();
    }

    /// A write to IA32_TSC_DEADLINE, as the monotonic clock time at which
    /// the timer fires; `None` (the MSR written with 0) disarms it. Ignored
    /// unless the timer is in TSC-deadline mode. A deadline at or before
    /// now fires at once (a masked timer just disarms).
    pub fn set_tsc_deadline_ns(&mut self, deadline_ns: Option<u64>) {
        let now = self.clock.monotonic_ns();
        self.timer_catch_up(now);
        if !self.timer_tsc_deadline() {
            return;
        }
        self.timer_next_ns = deadline_ns;
        self.timer_catch_up(now);
    }

    /// IA32_TSC_DEADLINE as the monotonic clock time of the armed deadline;
    /// `None` (the MSR reads 0) when disarmed, after the deadline has fired,
    /// or outside TSC-deadline mode. Delivers an expiry that is due first.
    pub fn tsc_deadline_ns(&mut self) -> Option<u64> {
        self.catch_up();
        if self.timer_tsc_deadline() {
            self.timer_next_ns
        } else {
            None
        }
    }

    /// The monotonic time of the next timer interrupt (the armed TSC
    /// deadline in TSC-deadline mode), if the timer is running and unmasked;
    /// already past when one is waiting for [`Lapic::tick`].
    pub fn next_deadline_ns(&self) -> Option<u64> {
        if self.lvt[LVT_TIMER] & LVT_MASKED != 0 {
            return None;
        }
        self.timer_next_ns
    }

    /// Reads the register at `offset` in the APIC page (16-byte aligned;
    /// anything else reads 0).
    pub fn read_register(&mut self, offset: u64) -> u32 {
        if offset % 16 != 0 || offset >= LAPIC_LEN {
            return 0;
        }
        let now = self.clock.monotonic_ns();
        self.timer_catch_up(now);
        let word = ((offset >> 4) & 7) as usize;
        match offset {
            REG_ID => self.id,
            REG_VERSION => LAPIC_VERSION,
            REG_TPR => self.tpr,
            REG_APR => u32::from(self.apr()),
            REG_PPR => u32::from(self.ppr()),
            REG_EOI => 0,
            REG_LDR => self.ldr,
            REG_DFR => self.dfr,
            REG_SVR => self.svr,
            0x100..=0x170 => self.isr[word],
            0x180..=0x1f0 => self.tmr[word],
            0x200..=0x270 => self.irr[word],
            REG_ESR => self.esr,
            REG_ICR_LOW => self.icr_low,
            REG_ICR_HIGH => self.icr_high,
            REG_LVT_TIMER..=REG_LVT_ERROR => self.lvt[((offset - REG_LVT_TIMER) >> 4) as usize],
            REG_TIMER_INITIAL => self.timer_initial,
            REG_TIMER_CURRENT => self.current_count(now),
            REG_TIMER_DIVIDE => self.timer_divide,
            _ => {
                self.raise_error(ESR_ILLEGAL_REGISTER);
                0
            }
        }
    }

    /// Writes the register at `offset` in the APIC page (16-byte aligned;
    /// anything else is ignored). A level-triggered EOI is queued for
    /// [`Lapic::take_eois`].
    pub fn write_register(&mut self, offset: u64, value: u32) {
        if offset % 16 != 0 || offset >= LAPIC_LEN {
            return;
        }
        let now = self.clock.monotonic_ns();
        self.timer_catch_up(now);
        let was_deliverable = self.pending_vector().is_some();
        match offset {
            REG_ID => self.id = value & 0xff00_0000,
            REG_TPR => self.tpr = value & 0xff,
            REG_EOI => self.eoi(),
            REG_LDR => self.ldr = value & 0xff00_0000,
            REG_DFR => self.dfr = value | 0x0fff_ffff,
            REG_SVR => self.write_svr(value),
            REG_ESR => self.esr = std::mem::take(&mut self.esr_pending),
            REG_ICR_LOW => self.write_icr_low(value),
            REG_ICR_HIGH => self.icr_high = value & 0xff00_0000,
            REG_LVT_TIMER..=REG_LVT_ERROR => {
                self.write_lvt(((offset - REG_LVT_TIMER) >> 4) as usize, value);
            }
            REG_TIMER_INITIAL => self.write_timer_initial(now, value),
            REG_TIMER_DIVIDE => self.write_timer_divide(now, value),
            // Read-only registers ignore writes.
            REG_VERSION | REG_APR | REG_PPR | REG_TIMER_CURRENT | 0x100..=0x270 => {}
            _ => self.raise_error(ESR_ILLEGAL_REGISTER),
        }
        self.notify_if_now_deliverable(was_deliverable);
    }
}

/// The APIC page as a bus device: insert at [`LAPIC_BASE`], len
/// [`LAPIC_LEN`], on the MMIO bus. Writes report level-triggered EOIs to
/// the listener after releasing the LAPIC's lock.
pub struct LapicMmio {
    lapic: SharedLapic,
}

impl LapicMmio {
    /// The page of `lapic`.
    pub fn new(lapic: SharedLapic) -> Self {
        Self { lapic }
    }

    /// The same, ready to insert on a bus.
    pub fn shared(lapic: SharedLapic) -> emu_core::SharedDevice {
        Arc::new(Mutex::new(Self::new(lapic)))
    }
}

impl std::fmt::Debug for LapicMmio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LapicMmio").finish_non_exhaustive()
    }
}

/// The register an access reaches: only aligned dword accesses do.
fn register_offset(offset: u64, len: usize) -> Option<u64> {
    (len == 4 && offset % 16 == 0 && offset < LAPIC_LEN).then_some(offset)
}

impl BusDevice for LapicMmio {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        match register_offset(offset, data.len()) {
            Some(offset) => {
                let value = crate::lock(&self.lapic).read_register(offset);
                data.copy_from_slice(&value.to_le_bytes());
            }
            None => data.fill(0),
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let (Some(offset), Ok(bytes)) = (
            register_offset(offset, data.len()),
            <[u8; 4]>::try_from(data),
        ) else {
            return;
        };
        let eois = {
            let mut lapic = crate::lock(&self.lapic);
            lapic.write_register(offset, u32::from_le_bytes(bytes));
            lapic.take_eois()
        };
        eois.deliver();
    }
}

#[cfg(test)]
mod tests;
