//! The Intel 82093AA I/O APIC, with the EOI register of the later (version
//! 0x20, ICH-style) I/O APICs, delivering to popek's one [`Lapic`](crate::Lapic). Under
//! KVM the kernel's irqchip is used instead.
//!
//! Two MMIO registers, 32-bit accesses only (others read 0 and ignore
//! writes): IOREGSEL at +0x00 (bits 0-7 select an indirect register) and
//! IOWIN at +0x10 (the selected register), plus the EOI register at +0x40
//! (write a vector: as a LAPIC EOI broadcast would, it clears the remote IRR
//! of level-triggered entries with that vector).
//!
//! Indirect registers:
//!
//! * 0x00 IOAPICID: bits 24-27 writable, [`IOAPIC_DEFAULT_ID`] at reset.
//! * 0x01 IOAPICVER: [`IOAPIC_VERSION`] = 0x00170020 (24 pins, max
//!   redirection entry 23, version 0x20), read-only.
//! * 0x02 IOAPICARB: the arbitration ID, which the datasheet loads from the
//!   ID register; read-only.
//! * 0x10 + 2n, 0x11 + 2n (n = 0-23): redirection entry n, low then high
//!   dword. Vector (0-7), delivery mode (8-10), destination mode (11),
//!   delivery status (12, read-only, always idle: delivery is immediate),
//!   polarity (13), remote IRR (14, read-only), trigger mode (15), mask (16),
//!   destination (56-63). Other bits are reserved and read 0. Entries reset
//!   masked. Writing a low dword with edge trigger mode clears remote IRR
//!   (which Linux relies on for I/O APICs without the EOI register).
//!
//! Pins ([`IoApic::set_irq`], or an [`IoApicIrqLine`]) take the asserted
//! state of the line; the polarity bit is stored but, as in KVM and QEMU,
//! not applied. Per the datasheet, a masked pin ignores edges; a
//! level-triggered pin is sampled again when it is unmasked. An edge-
//! triggered entry delivers on each rising edge. A level-triggered entry
//! delivers while the line is asserted and remote IRR is clear, and sets
//! remote IRR when the LAPIC accepts it; [`IoApic::end_of_interrupt`] clears
//! remote IRR and delivers again if the line is still asserted.
//!
//! Delivery: fixed and lowest-priority messages go to the one LAPIC if the
//! destination matches its APIC ID (physical, 0xFF broadcasts) or its
//! logical destination; NMI latches the LAPIC's NMI. SMI, INIT and ExtINT
//! messages are logged and dropped: a PIC in virtual-wire mode reaches the
//! CPU through the LAPIC's LINT0 instead
//! ([`Lapic::lint0_is_extint`](crate::Lapic::lint0_is_extint)).
//!
//! Insert the [`IoApic`] itself on the MMIO bus at [`IOAPIC_BASE`], len
//! [`IOAPIC_LEN`]. Lock ordering (see [`crate::lapic`]): the IOAPIC locks the
//! LAPIC while holding its own lock; the LAPIC never locks the IOAPIC, it
//! queues level-triggered EOIs that are reported after its lock is released
//! ([`IoApic::connect_eoi`] wires that path).

use std::sync::{Arc, Mutex, Weak};

use emu_core::{BusDevice, IrqLine, SharedIrqLine};

use crate::lapic::{DeliveryMode, SharedLapic};

/// Where the machine inserts the IOAPIC on the MMIO bus.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// Length of its MMIO window.
pub const IOAPIC_LEN: u64 = 0x1000;
/// Number of input pins (GSIs 0-23).
pub const IOAPIC_PINS: usize = 24;
/// Version register: max redirection entry 23, version 0x20.
pub const IOAPIC_VERSION: u32 = 0x0017_0020;
/// The APIC ID after reset, which the MADT's I/O APIC entry must match.
pub const IOAPIC_DEFAULT_ID: u8 = 0;

/// IOREGSEL offset.
pub const IOREGSEL: u64 = 0x00;
/// IOWIN offset.
pub const IOWIN: u64 = 0x10;
/// EOI register offset.
pub const IOAPIC_EOI: u64 = 0x40;

const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARBITRATION: u32 = 0x02;
const REG_REDIRECTION_FIRST: u32 = 0x10;
const REG_REDIRECTION_LAST: u32 = REG_REDIRECTION_FIRST + 2 * IOAPIC_PINS as u32 - 1;

/// Redirection entry: masked.
pub const REDIR_MASKED: u64 = 1 << 16;
/// Redirection entry: level-triggered.
pub const REDIR_LEVEL_TRIGGERED: u64 = 1 << 15;
/// Redirection entry: remote IRR.
pub const REDIR_REMOTE_IRR: u64 = 1 << 14;
/// Redirection entry: logical destination mode.
pub const REDIR_LOGICAL: u64 = 1 << 11;
/// Low dword bits the guest can write: vector, delivery mode, destination
/// mode, polarity, trigger mode, mask.
const REDIR_LOW_WRITABLE: u32 = 0x0001_afff;
const REDIR_HIGH_WRITABLE: u32 = 0xff00_0000;
const ID_WRITABLE: u32 = 0x0f00_0000;

/// The I/O APIC.
pub struct IoApic {
    lapic: SharedLapic,
    id: u32,
    ioregsel: u32,
    redirection: [u64; IOAPIC_PINS],
    /// Asserted lines, pin 0 in bit 0.
    lines: u32,
}

impl std::fmt::Debug for IoApic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoApic")
            .field("id", &self.id)
            .field("ioregsel", &self.ioregsel)
            .field("redirection", &self.redirection)
            .field("lines", &self.lines)
            .finish()
    }
}

impl IoApic {
    /// An I/O APIC as after reset (ID [`IOAPIC_DEFAULT_ID`], every entry
    /// masked) delivering to `lapic`.
    pub fn new(lapic: SharedLapic) -> Self {
        Self {
            lapic,
            id: u32::from(IOAPIC_DEFAULT_ID) << 24,
            ioregsel: 0,
            redirection: [REDIR_MASKED; IOAPIC_PINS],
            lines: 0,
        }
    }

    /// Makes the LAPIC report level-triggered EOIs to `ioapic`'s
    /// [`IoApic::end_of_interrupt`]. The listener holds the IOAPIC weakly,
    /// so the two do not keep each other alive.
    pub fn connect_eoi(ioapic: &Arc<Mutex<IoApic>>) {
        let lapic = Arc::clone(&crate::lock(ioapic).lapic);
        let weak: Weak<Mutex<IoApic>> = Arc::downgrade(ioapic);
        crate::lock(&lapic).set_eoi_listener(move |vector| {
            if let Some(ioapic) = weak.upgrade() {
                crate::lock(&ioapic).end_of_interrupt(vector);
            }
        });
    }

    /// Returns every register to its reset value (lines keep their level).
    pub fn reset(&mut self) {
        self.id = u32::from(IOAPIC_DEFAULT_ID) << 24;
        self.ioregsel = 0;
        self.redirection = [REDIR_MASKED; IOAPIC_PINS];
    }

    /// Redirection entry `pin`, if it exists.
    pub fn redirection_entry(&self, pin: usize) -> Option<u64> {
        self.redirection.get(pin).copied()
    }

    /// Drives input `pin` (a GSI, 0-23); others are ignored. `level` is the
    /// asserted state.
    pub fn set_irq(&mut self, pin: u8, level: bool) {
        let index = usize::from(pin);
        if index >= IOAPIC_PINS {
            tracing::debug!("ioapic: set_irq({pin}) is out of range; ignored");
            return;
        }
        let bit = 1u32 << pin;
        let rising = level && self.lines & bit == 0;
        if level {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
        let entry = self.redirection[index];
        if entry & REDIR_MASKED != 0 {
            return;
        }
        if entry & REDIR_LEVEL_TRIGGERED != 0 {
            self.sample_level(index);
        } else if rising {
            self.deliver(index);
        }
    }

    /// An EOI for `vector` (from the LAPIC's EOI broadcast or the EOI
    /// register): clears remote IRR of level-triggered entries with that
    /// vector, and delivers again where the line is still asserted.
    pub fn end_of_interrupt(&mut self, vector: u8) {
        for index in 0..IOAPIC_PINS {
            let entry = self.redirection[index];
            if entry as u8 == vector
                && entry & REDIR_LEVEL_TRIGGERED != 0
                && entry & REDIR_REMOTE_IRR != 0
            {
                self.redirection[index] &= !REDIR_REMOTE_IRR;
                self.sample_level(index);
            }
        }
    }

    /// Delivers a level-triggered pin that is asserted, unmasked and not
    /// waiting for an EOI.
    fn sample_level(&mut self, index: usize) {
        let entry = self.redirection[index];
        let asserted = self.lines & (1 << index) != 0;
        if asserted
            && entry & REDIR_LEVEL_TRIGGERED != 0
            && entry & (REDIR_MASKED | REDIR_REMOTE_IRR) == 0
        {
            self.deliver(index);
        }
    }

    fn deliver(&mut self, index: usize) {
        let entry = self.redirection[index];
        let vector = entry as u8;
        let level = entry & REDIR_LEVEL_TRIGGERED != 0;
        let dest = (entry >> 56) as u8;
        let lapic = Arc::clone(&self.lapic);
        let mut lapic = crate::lock(&lapic);
        if !lapic.matches_destination(dest, entry & REDIR_LOGICAL != 0) {
            tracing::debug!("ioapic: pin {index} destination {dest:#x} matches no CPU");
            return;
        }
        match DeliveryMode::from_bits(entry) {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                if lapic.accept_interrupt(vector, level) && level {
                    self.redirection[index] |= REDIR_REMOTE_IRR;
                }
            }
            DeliveryMode::Nmi => lapic.deliver_nmi(),
            mode => tracing::debug!("ioapic: pin {index} delivery mode {mode:?} not delivered"),
        }
    }

    fn read_indirect(&self) -> u32 {
        match self.ioregsel {
            REG_ID | REG_ARBITRATION => self.id,
            REG_VERSION => IOAPIC_VERSION,
            sel @ REG_REDIRECTION_FIRST..=REG_REDIRECTION_LAST => {
                let entry = self.redirection[((sel - REG_REDIRECTION_FIRST) / 2) as usize];
                if sel % 2 == 0 {
                    entry as u32
                } else {
                    (entry >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    fn write_indirect(&mut self, value: u32) {
        match self.ioregsel {
            REG_ID => self.id = value & ID_WRITABLE,
            sel @ REG_REDIRECTION_FIRST..=REG_REDIRECTION_LAST => {
                let index = ((sel - REG_REDIRECTION_FIRST) / 2) as usize;
                let old = self.redirection[index];
                let (mut low, mut high) = (old as u32, (old >> 32) as u32);
                if sel % 2 == 0 {
                    low = (value & REDIR_LOW_WRITABLE) | (low & REDIR_REMOTE_IRR as u32);
                    if u64::from(low) & REDIR_LEVEL_TRIGGERED == 0 {
                        low &= !(REDIR_REMOTE_IRR as u32);
                    }
                } else {
                    high = value & REDIR_HIGH_WRITABLE;
                }
                self.redirection[index] = (u64::from(high) << 32) | u64::from(low);
                self.sample_level(index);
            }
            // Version and arbitration are read-only; the rest is reserved.
            _ => {}
        }
    }
}

impl BusDevice for IoApic {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let value = match (offset, data.len()) {
            (IOREGSEL, 4) => self.ioregsel,
            (IOWIN, 4) => self.read_indirect(),
            _ => 0,
        };
        if data.len() == 4 {
            data.copy_from_slice(&value.to_le_bytes());
        } else {
            data.fill(0);
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let value = u32::from_le_bytes(bytes);
        match offset {
            IOREGSEL => self.ioregsel = value & 0xff,
            IOWIN => self.write_indirect(value),
            IOAPIC_EOI => self.end_of_interrupt(value as u8),
            _ => {}
        }
    }
}

/// One input pin of an [`IoApic`], for wiring devices to it.
pub struct IoApicIrqLine {
    ioapic: Arc<Mutex<IoApic>>,
    pin: u8,
}

impl IoApicIrqLine {
    /// The line for GSI `pin` of `ioapic`.
    pub fn new(ioapic: Arc<Mutex<IoApic>>, pin: u8) -> Self {
        Self { ioapic, pin }
    }

    /// The same, ready to hand to a device.
    pub fn shared(ioapic: Arc<Mutex<IoApic>>, pin: u8) -> SharedIrqLine {
        Arc::new(Self::new(ioapic, pin))
    }
}

impl IrqLine for IoApicIrqLine {
    fn set_level(&self, high: bool) {
        crate::lock(&self.ioapic).set_irq(self.pin, high);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use emu_core::ManualClock;

    use super::*;
    use crate::lapic::{Lapic, LapicMmio, LAPIC_BASE, REG_EOI, REG_SVR};

    fn lapic() -> SharedLapic {
        let mut l = Lapic::new(ManualClock::new(0));
        l.write_register(REG_SVR, 0x1ff);
        Arc::new(Mutex::new(l))
    }

    fn rig() -> (IoApic, SharedLapic) {
        let l = lapic();
        (IoApic::new(l.clone()), l)
    }

    fn write_reg(io: &mut IoApic, reg: u32, value: u32) {
        io.write(IOAPIC_BASE, IOREGSEL, &reg.to_le_bytes());
        io.write(IOAPIC_BASE, IOWIN, &value.to_le_bytes());
    }

    fn read_reg(io: &mut IoApic, reg: u32) -> u32 {
        io.write(IOAPIC_BASE, IOREGSEL, &reg.to_le_bytes());
        let mut d = [0u8; 4];
        io.read(IOAPIC_BASE, IOWIN, &mut d);
        u32::from_le_bytes(d)
    }

    /// Programs pin `pin` with `low` (vector and flags) to APIC ID 0.
    fn route(io: &mut IoApic, pin: u32, low: u32) {
        write_reg(io, 0x11 + 2 * pin, 0);
        write_reg(io, 0x10 + 2 * pin, low);
    }

    fn requested(l: &SharedLapic, vector: u8) -> bool {
        crate::lock(l).is_requested(vector)
    }

    /// The CPU takes the interrupt and writes EOI through the MMIO page.
    fn service(l: &SharedLapic) -> Option<u8> {
        let v = crate::lock(l).acknowledge();
        LapicMmio::new(l.clone()).write(LAPIC_BASE, REG_EOI, &[0; 4]);
        v
    }

    #[test]
    fn id_version_arbitration() {
        let (mut io, _) = rig();
        assert_eq!(read_reg(&mut io, 0), 0);
        assert_eq!(read_reg(&mut io, 1), 0x0017_0020);
        write_reg(&mut io, 0, 0xffff_ffff);
        assert_eq!(read_reg(&mut io, 0), 0x0f00_0000);
        assert_eq!(read_reg(&mut io, 2), 0x0f00_0000);
        write_reg(&mut io, 1, 0);
        write_reg(&mut io, 2, 0);
        assert_eq!(read_reg(&mut io, 1), 0x0017_0020);
        assert_eq!(read_reg(&mut io, 0x40), 0, "beyond the table");
        let mut d = [0u8; 4];
        io.read(IOAPIC_BASE, IOREGSEL, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x40);
    }

    #[test]
    fn redirection_entries_by_halves() {
        let (mut io, _) = rig();
        for pin in 0..24 {
            assert_eq!(
                read_reg(&mut io, 0x10 + 2 * pin),
                0x0001_0000,
                "reset masked"
            );
            assert_eq!(read_reg(&mut io, 0x11 + 2 * pin), 0);
        }
        write_reg(&mut io, 0x10 + 2 * 5, 0xffff_ffff);
        write_reg(&mut io, 0x11 + 2 * 5, 0xffff_ffff);
        assert_eq!(
            read_reg(&mut io, 0x10 + 2 * 5),
            0x0001_afff,
            "status and remote IRR read-only"
        );
        assert_eq!(read_reg(&mut io, 0x11 + 2 * 5), 0xff00_0000);
        assert_eq!(io.redirection_entry(5), Some(0xff00_0000_0001_afff));
        write_reg(&mut io, 0x11 + 2 * 5, 0x0100_0000);
        assert_eq!(
            read_reg(&mut io, 0x10 + 2 * 5),
            0x0001_afff,
            "the low half stays"
        );
        assert_eq!(io.redirection_entry(4), Some(REDIR_MASKED));
        assert_eq!(io.redirection_entry(24), None);
    }

    #[test]
    fn masked_pins_do_not_deliver() {
        let (mut io, l) = rig();
        route(&mut io, 3, 0x0001_0033);
        io.set_irq(3, true);
        assert!(!requested(&l, 0x33));
        // Unmasking does not replay a lost edge.
        route(&mut io, 3, 0x33);
        assert!(!requested(&l, 0x33));
        io.set_irq(3, false);
        io.set_irq(3, true);
        assert!(requested(&l, 0x33));
    }

    #[test]
    fn edge_delivers_on_rising_edges() {
        let (mut io, l) = rig();
        route(&mut io, 4, 0x34);
        io.set_irq(4, true);
        assert_eq!(service(&l), Some(0x34));
        io.set_irq(4, true);
        assert!(!requested(&l, 0x34), "no new edge");
        io.set_irq(4, false);
        io.set_irq(4, true);
        assert!(requested(&l, 0x34));
        assert_eq!(
            read_reg(&mut io, 0x10 + 8) & (1 << 14),
            0,
            "no remote IRR for edge"
        );
    }

    #[test]
    fn level_sets_remote_irr_until_eoi() {
        let (io, l) = rig();
        let io = Arc::new(Mutex::new(io));
        IoApic::connect_eoi(&io);
        {
            let mut io = crate::lock(&io);
            route(&mut io, 10, 0x0000_8000 | 0x3a);
            io.set_irq(10, true);
            assert_ne!(read_reg(&mut io, 0x10 + 20) & (1 << 14), 0);
        }
        assert!(crate::lock(&l).is_requested(0x3a));
        assert_eq!(
            crate::lock(&l).read_register(crate::lapic::REG_TMR + 0x10),
            1 << 26
        );
        // Taken and EOId while still asserted: delivered again.
        assert_eq!(service(&l), Some(0x3a));
        assert!(requested(&l, 0x3a));
        assert_ne!(
            crate::lock(&io).redirection_entry(10).unwrap() & REDIR_REMOTE_IRR,
            0
        );
        // The line drops before this EOI: remote IRR clears, nothing more.
        crate::lock(&io).set_irq(10, false);
        assert_eq!(service(&l), Some(0x3a));
        assert!(!requested(&l, 0x3a));
        assert_eq!(
            crate::lock(&io).redirection_entry(10).unwrap() & REDIR_REMOTE_IRR,
            0
        );
    }

    #[test]
    fn level_waits_for_eoi_and_unmask() {
        let (mut io, l) = rig();
        route(&mut io, 9, 0x0001_8000 | 0x39); // masked, level
        io.set_irq(9, true);
        assert!(!requested(&l, 0x39));
        route(&mut io, 9, 0x0000_8000 | 0x39);
        assert!(requested(&l, 0x39), "sampled on unmask");
        assert_eq!(crate::lock(&l).acknowledge(), Some(0x39));
        // Asserting again while remote IRR is set does nothing.
        io.set_irq(9, true);
        assert!(!requested(&l, 0x39));
        // The EOI register.
        io.write(IOAPIC_BASE, IOAPIC_EOI, &0x39u32.to_le_bytes());
        assert!(requested(&l, 0x39));
        // Switching to edge clears remote IRR.
        route(&mut io, 9, 0x39);
        assert_eq!(io.redirection_entry(9).unwrap() & REDIR_REMOTE_IRR, 0);
    }

    #[test]
    fn remote_irr_only_when_accepted() {
        let (mut io, l) = rig();
        crate::lock(&l).write_register(REG_SVR, 0xff); // software-disabled
        route(&mut io, 11, 0x0000_8000 | 0x3b);
        io.set_irq(11, true);
        assert_eq!(io.redirection_entry(11).unwrap() & REDIR_REMOTE_IRR, 0);
    }

    #[test]
    fn destination_must_match() {
        let (mut io, l) = rig();
        write_reg(&mut io, 0x10 + 2, 0x32);
        write_reg(&mut io, 0x11 + 2, 0x0300_0000); // APIC ID 3
        io.set_irq(1, true);
        assert!(!requested(&l, 0x32));
        write_reg(&mut io, 0x11 + 2, 0xff00_0000); // broadcast
        io.set_irq(1, false);
        io.set_irq(1, true);
        assert!(requested(&l, 0x32));
        // Logical flat: LDR bit 0.
        crate::lock(&l).write_register(crate::lapic::REG_LDR, 0x0100_0000);
        write_reg(&mut io, 0x11 + 4, 0x0100_0000);
        write_reg(&mut io, 0x10 + 4, 0x0900 | 0x40); // lowest priority, logical
        io.set_irq(2, true);
        assert!(requested(&l, 0x40));
    }

    #[test]
    fn nmi_and_other_modes() {
        let (mut io, l) = rig();
        route(&mut io, 5, 0x0400);
        io.set_irq(5, true);
        assert!(crate::lock(&l).take_nmi());
        route(&mut io, 6, 0x0700 | 0x36);
        io.set_irq(6, true);
        route(&mut io, 7, 0x0500);
        io.set_irq(7, true);
        assert_eq!(crate::lock(&l).pending_vector(), None);
    }

    #[test]
    fn irq_line_wiring() {
        let (io, l) = rig();
        let io = Arc::new(Mutex::new(io));
        route(&mut crate::lock(&io), 4, 0x24);
        let line = IoApicIrqLine::shared(io.clone(), 4);
        line.pulse();
        assert!(requested(&l, 0x24));
        IoApicIrqLine::new(io.clone(), 200).set_level(true); // ignored
    }

    #[test]
    fn odd_accesses() {
        let (mut io, _) = rig();
        for offset in 0..0x48u64 {
            for len in [1usize, 2, 4, 8] {
                let mut d = vec![0xffu8; len];
                io.read(IOAPIC_BASE, offset, &mut d);
                io.write(IOAPIC_BASE, offset, &d);
            }
        }
        for sel in 0..=255u32 {
            write_reg(&mut io, sel, 0xffff_ffff);
            read_reg(&mut io, sel);
        }
        let mut d = [0xaau8; 2];
        io.read(IOAPIC_BASE, IOWIN, &mut d);
        assert_eq!(d, [0, 0]);
        io.set_irq(24, true);
        io.set_irq(255, true);
    }

    /// The machine's wiring: both on an MMIO bus, the guest programming
    /// them through it, a level interrupt round trip.
    #[test]
    fn wired_on_the_mmio_bus() {
        let (io, l) = rig();
        let io = Arc::new(Mutex::new(io));
        IoApic::connect_eoi(&io);
        let mut bus = emu_core::Bus::new();
        bus.insert(
            LapicMmio::shared(l.clone()),
            LAPIC_BASE,
            crate::lapic::LAPIC_LEN,
        )
        .unwrap();
        bus.insert(io.clone(), IOAPIC_BASE, IOAPIC_LEN).unwrap();
        bus.write(IOAPIC_BASE + IOREGSEL, &0x10u32.to_le_bytes());
        bus.write(IOAPIC_BASE + IOWIN, &(0x0000_8000u32 | 0x29).to_le_bytes()); // GSI 0
        let gsi0 = IoApicIrqLine::shared(io.clone(), 0);
        gsi0.set_level(true);
        let mut tmr = [0u8; 4];
        bus.read(LAPIC_BASE + crate::lapic::REG_TMR + 0x10, &mut tmr);
        assert_eq!(u32::from_le_bytes(tmr), 1 << 9);
        assert_eq!(crate::lock(&l).acknowledge(), Some(0x29));
        gsi0.set_level(false);
        bus.write(LAPIC_BASE + REG_EOI, &[0; 4]);
        bus.write(IOAPIC_BASE + IOREGSEL, &0x10u32.to_le_bytes());
        let mut low = [0u8; 4];
        bus.read(IOAPIC_BASE + IOWIN, &mut low);
        assert_eq!(
            u32::from_le_bytes(low),
            0x0000_8029,
            "remote IRR cleared by the EOI"
        );
    }

    /// A device thread raising a level interrupt while the vCPU writes EOIs
    /// through the MMIO page: the two lock orders must not deadlock.
    #[test]
    fn concurrent_irq_and_eoi_do_not_deadlock() {
        let (io, l) = rig();
        let io = Arc::new(Mutex::new(io));
        IoApic::connect_eoi(&io);
        route(&mut crate::lock(&io), 12, 0x0000_8000 | 0x3c);
        let line = IoApicIrqLine::shared(io.clone(), 12);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let device = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                line.set_level(true);
                line.set_level(false);
            }
        });
        let mut mmio = LapicMmio::new(l.clone());
        for _ in 0..20_000 {
            crate::lock(&l).acknowledge();
            mmio.write(LAPIC_BASE, REG_EOI, &[0; 4]);
        }
        stop.store(true, Ordering::SeqCst);
        device.join().unwrap();
    }
}
