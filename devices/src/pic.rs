//! The PC/AT pair of Intel 8259A programmable interrupt controllers, with
//! the PIIX edge/level control registers (ELCR).
//!
//! The slave's INT output drives the master's IR2, giving ISA IRQs 0-15 with
//! IRQ2 reserved for the cascade. Each chip follows the 8259A datasheet:
//!
//! * ICW1 (A0=0, D4=1) restarts initialization: IMR and ISR cleared, IR7
//!   lowest priority, special mask mode off, IRR readback selected, the edge
//!   sense latches reset. ICW2 gives the vector base (bits 7-3); ICW3 is
//!   expected unless ICW1 said single mode; ICW4 only if ICW1.IC4 was set
//!   (auto-EOI and special fully nested mode).
//! * OCW1 (A0=1) writes the IMR.
//! * OCW2 (A0=0, D4-3=00): non-specific / specific EOI, rotate on
//!   (non-)specific EOI, set/clear rotate in auto-EOI mode, set priority.
//! * OCW3 (A0=0, D4-3=01): IRR/ISR readback select, poll command, special
//!   mask mode.
//! * Edge-triggered inputs latch a rising edge into the IRR; level-triggered
//!   ones (ICW1.LTIM, or the ELCR bit) follow the input level, so a line still
//!   high after EOI interrupts again.
//! * An acknowledge with no request pending yields the spurious IR7 vector
//!   (IRQ7 on the master, IRQ15 on the slave, after the master's IR2 was
//!   granted) without setting an ISR bit on the chip that had nothing.
//!
//! ELCR (0x4D0 master, 0x4D1 slave) marks inputs level-triggered; IRQ 0, 1,
//! 2, 8 and 13 are always edge-triggered on PIIX.
//!
//! [`DualPic`] is inserted at 0x20 (len 2), 0xA0 (len 2) and 0x4D0 (len 2);
//! it decodes the absolute port. Wider accesses are split into byte
//! accesses at consecutive ports.

use std::sync::{Arc, Mutex};

use emu_core::{BusDevice, IrqLine, SharedIrqLine};

/// The master 8259A's ports.
pub const PIC_MASTER_BASE: u64 = 0x20;
/// The slave 8259A's ports.
pub const PIC_SLAVE_BASE: u64 = 0xa0;
/// Ports per 8259A.
pub const PIC_PORT_LEN: u64 = 2;
/// The edge/level control registers (master, then slave).
pub const ELCR_BASE: u64 = 0x4d0;
/// Ports of the ELCR pair.
pub const ELCR_LEN: u64 = 2;

/// The master input the slave's INT output drives.
const CASCADE_IRQ: u8 = 2;
/// ELCR bits that can be set: IRQ 0, 1 and 2 are edge-only.
const MASTER_ELCR_WRITABLE: u8 = 0xf8;
/// ELCR bits that can be set: IRQ 8 and 13 are edge-only.
const SLAVE_ELCR_WRITABLE: u8 = 0xde;

const ICW1_IC4: u8 = 0x01;
const ICW1_SNGL: u8 = 0x02;
const ICW1_LTIM: u8 = 0x08;
const ICW1_SELECT: u8 = 0x10;
const OCW3_SELECT: u8 = 0x08;
const ICW4_AEOI: u8 = 0x02;
const ICW4_SFNM: u8 = 0x10;

/// Where an 8259A is in its initialization sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InitStep {
    Ready,
    Icw2,
    Icw3,
    Icw4,
}

/// One 8259A.
#[derive(Debug)]
struct Pic8259 {
    is_master: bool,
    /// The current level of each IR input, for edge detection and for
    /// level-triggered requests.
    input_level: u8,
    irr: u8,
    isr: u8,
    imr: u8,
    /// The IR that has the highest priority (0 after ICW1; rotation moves it).
    highest_priority_ir: u8,
    vector_base: u8,
    read_isr: bool,
    poll: bool,
    special_mask: bool,
    init: InitStep,
    icw4_expected: bool,
    single: bool,
    level_triggered_all: bool,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    elcr: u8,
    elcr_writable: u8,
}

impl Pic8259 {
    fn new(is_master: bool) -> Self {
        Self {
            is_master,
            input_level: 0,
            irr: 0,
            isr: 0,
            imr: 0,
            highest_priority_ir: 0,
            vector_base: 0,
            read_isr: false,
            poll: false,
            special_mask: false,
            init: InitStep::Ready,
            icw4_expected: false,
            single: false,
            level_triggered_all: false,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            special_fully_nested: false,
            elcr: 0,
            elcr_writable: if is_master {
                MASTER_ELCR_WRITABLE
            } else {
                SLAVE_ELCR_WRITABLE
            },
        }
    }

    /// The inputs that are level-triggered.
    fn level_mask(&self) -> u8 {
        if self.level_triggered_all {
            0xff
        } else {
            self.elcr
        }
    }

    fn set_input(&mut self, ir: u8, high: bool) {
        let bit = 1u8 << (ir & 7);
        let was_high = self.input_level & bit != 0;
        if high {
            self.input_level |= bit;
        } else {
            self.input_level &= !bit;
        }
        if self.level_mask() & bit != 0 {
            if high {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if high && !was_high {
            self.irr |= bit;
        }
    }

    /// Re-derives level-triggered requests after the trigger mode changed.
    fn resync_level_requests(&mut self) {
        let level = self.level_mask();
        self.irr = (self.irr & !level) | (self.input_level & level);
    }

    /// The priority (0 = highest) of the highest-priority IR set in `mask`.
    fn best_priority(&self, mask: u8) -> Option<u8> {
        (0u8..8).find(|p| mask & (1 << ((p + self.highest_priority_ir) & 7)) != 0)
    }

    fn ir_of_priority(&self, priority: u8) -> u8 {
        (priority + self.highest_priority_ir) & 7
    }

    /// The IR this chip would raise INT for, if any: the highest-priority
    /// unmasked request above everything in service.
    fn pending_ir(&self) -> Option<u8> {
        let requested = self.best_priority(self.irr & !self.imr)?;
        let mut in_service = self.isr;
        if self.special_mask {
            // Masked levels in service do not block others (datasheet:
            // special mask mode enables all unmasked levels).
            in_service &= !self.imr;
        }
        if self.special_fully_nested && self.is_master {
            // The slave may interrupt again while its cascade is in service.
            in_service &= !(1 << CASCADE_IRQ);
        }
        let current = self.best_priority(in_service).unwrap_or(8);
        (requested < current).then(|| self.ir_of_priority(requested))
    }

    /// The INTA sequence for `ir`: set ISR (unless auto-EOI) and clear an
    /// edge-triggered request.
    fn acknowledge_ir(&mut self, ir: u8) {
        let bit = 1u8 << (ir & 7);
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.highest_priority_ir = (ir + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
        if self.level_mask() & bit == 0 {
            self.irr &= !bit;
        }
    }

    fn vector(&self, ir: u8) -> u8 {
        self.vector_base | (ir & 7)
    }

    fn write_command(&mut self, value: u8) {
        if value & ICW1_SELECT != 0 {
            self.write_icw1(value);
        } else if value & OCW3_SELECT != 0 {
            self.write_ocw3(value);
        } else {
            self.write_ocw2(value);
        }
    }

    fn write_icw1(&mut self, value: u8) {
        self.imr = 0;
        self.isr = 0;
        self.highest_priority_ir = 0;
        self.read_isr = false;
        self.poll = false;
        self.special_mask = false;
        self.auto_eoi = false;
        self.rotate_on_auto_eoi = false;
        self.special_fully_nested = false;
        self.icw4_expected = value & ICW1_IC4 != 0;
        self.single = value & ICW1_SNGL != 0;
        self.level_triggered_all = value & ICW1_LTIM != 0;
        // The edge sense latches are reset: an edge input must go low and
        // high again; a level input that is high still requests.
        self.irr = self.input_level & self.level_mask();
        self.init = InitStep::Icw2;
    }

    fn write_ocw2(&mut self, value: u8) {
        let level = value & 7;
        match value >> 5 {
            // Non-specific EOI, optionally rotating.
            0b001 | 0b101 => {
                if let Some(priority) = self.best_priority(self.isr) {
                    let ir = self.ir_of_priority(priority);
                    self.isr &= !(1 << ir);
                    if value >> 5 == 0b101 {
                        self.highest_priority_ir = (ir + 1) & 7;
                    }
                }
            }
            // Specific EOI, optionally rotating.
            0b011 | 0b111 => {
                self.isr &= !(1 << level);
                if value >> 5 == 0b111 {
                    self.highest_priority_ir = (level + 1) & 7;
                }
            }
            0b100 => self.rotate_on_auto_eoi = true,
            0b000 => self.rotate_on_auto_eoi = false,
            // Set priority: `level` becomes the lowest.
            0b110 => self.highest_priority_ir = (level + 1) & 7,
            _ => {}
        }
    }

    fn write_ocw3(&mut self, value: u8) {
        if value & 0x04 != 0 {
            self.poll = true;
        }
        if value & 0x02 != 0 {
            self.read_isr = value & 0x01 != 0;
        }
        if value & 0x40 != 0 {
            self.special_mask = value & 0x20 != 0;
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.init {
            InitStep::Ready => self.imr = value,
            InitStep::Icw2 => {
                self.vector_base = value & 0xf8;
                self.init = if !self.single {
                    InitStep::Icw3
                } else if self.icw4_expected {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                };
            }
            // The cascade wiring is fixed; ICW3's contents do not matter.
            InitStep::Icw3 => {
                self.init = if self.icw4_expected {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                };
            }
            InitStep::Icw4 => {
                self.auto_eoi = value & ICW4_AEOI != 0;
                self.special_fully_nested = value & ICW4_SFNM != 0;
                self.init = InitStep::Ready;
            }
        }
    }

    /// A read of the A0=0 port: the poll word after a poll command,
    /// otherwise IRR or ISR as OCW3 selected.
    fn read_command(&mut self) -> u8 {
        if self.poll {
            self.poll = false;
            return match self.pending_ir() {
                Some(ir) => {
                    self.acknowledge_ir(ir);
                    0x80 | ir
                }
                None => 0,
            };
        }
        if self.read_isr {
            self.isr
        } else {
            self.irr
        }
    }

    fn write_elcr(&mut self, value: u8) {
        self.elcr = value & self.elcr_writable;
        self.resync_level_requests();
    }
}

type IntrNotifier = Box<dyn Fn() + Send + Sync>;

/// The master/slave 8259A pair of a PC, with its ELCR.
pub struct DualPic {
    master: Pic8259,
    slave: Pic8259,
    intr: bool,
    intr_notifier: Option<IntrNotifier>,
}

impl std::fmt::Debug for DualPic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DualPic")
            .field("master", &self.master)
            .field("slave", &self.slave)
            .field("intr", &self.intr)
            .finish()
    }
}

impl Default for DualPic {
    fn default() -> Self {
        Self::new()
    }
}

impl DualPic {
    /// Both chips as after power-on: uninitialized, nothing masked, vector
    /// bases 0 until the guest's ICW2.
    pub fn new() -> Self {
        Self {
            master: Pic8259::new(true),
            slave: Pic8259::new(false),
            intr: false,
            intr_notifier: None,
        }
    }

    /// Calls `notify` whenever the INTR output rises, so a run loop blocked
    /// in `hlt` (or a vCPU in another thread) can be woken. It runs with the
    /// PIC locked and must not lock the PIC itself.
    pub fn set_intr_notifier(&mut self, notify: impl Fn() + Send + Sync + 'static) {
        self.intr_notifier = Some(Box::new(notify));
    }

    /// Drives ISA IRQ `irq` (0-15). IRQ2 is the cascade input and cannot be
    /// driven; out-of-range numbers are ignored.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            CASCADE_IRQ => tracing::debug!("pic: IRQ2 is the cascade input; ignored"),
            0..=7 => self.master.set_input(irq, level),
            8..=15 => self.slave.set_input(irq - 8, level),
            _ => tracing::debug!("pic: set_irq({irq}) is out of range; ignored"),
        }
        self.update();
    }

    /// The INTR output to the CPU.
    pub fn has_interrupt(&self) -> bool {
        self.intr
    }

    /// The CPU's interrupt acknowledge cycle: returns the vector and moves
    /// the request into service, on the slave too when the master grants
    /// IR2. With nothing pending this yields the spurious IRQ7 (or IRQ15)
    /// vector.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.pending_ir() {
            Some(CASCADE_IRQ) => {
                self.master.acknowledge_ir(CASCADE_IRQ);
                match self.slave.pending_ir() {
                    Some(ir) => {
                        self.slave.acknowledge_ir(ir);
                        self.slave.vector(ir)
                    }
                    None => self.slave.vector(7),
                }
            }
            Some(ir) => {
                self.master.acknowledge_ir(ir);
                self.master.vector(ir)
            }
            None => self.master.vector(7),
        };
        self.update();
        vector
    }

    /// The edge/level control registers, IRQ 0 in bit 0.
    pub fn elcr(&self) -> u16 {
        u16::from(self.master.elcr) | (u16::from(self.slave.elcr) << 8)
    }

    /// Propagates the slave's INT to the master's IR2 and recomputes INTR.
    fn update(&mut self) {
        let slave_int = self.slave.pending_ir().is_some();
        self.master.set_input(CASCADE_IRQ, slave_int);
        let intr = self.master.pending_ir().is_some();
        let rose = intr && !self.intr;
        self.intr = intr;
        if rose {
            if let Some(notify) = &self.intr_notifier {
                notify();
            }
        }
    }

    fn read_port(&mut self, port: u64) -> u8 {
        let value = match port {
            0x20 => self.master.read_command(),
            0x21 => self.master.imr,
            0xa0 => self.slave.read_command(),
            0xa1 => self.slave.imr,
            0x4d0 => self.master.elcr,
            0x4d1 => self.slave.elcr,
            _ => return 0xff,
        };
        // A poll read acknowledges.
        self.update();
        value
    }

    fn write_port(&mut self, port: u64, value: u8) {
        match port {
            0x20 => self.master.write_command(value),
            0x21 => self.master.write_data(value),
            0xa0 => self.slave.write_command(value),
            0xa1 => self.slave.write_data(value),
            0x4d0 => self.master.write_elcr(value),
            0x4d1 => self.slave.write_elcr(value),
            _ => return,
        }
        self.update();
    }
}

impl BusDevice for DualPic {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        let port = base.wrapping_add(offset);
        for (i, byte) in (0u64..).zip(data.iter_mut()) {
            *byte = self.read_port(port.wrapping_add(i));
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let port = base.wrapping_add(offset);
        for (i, &byte) in (0u64..).zip(data.iter()) {
            self.write_port(port.wrapping_add(i), byte);
        }
    }
}

/// One ISA IRQ input of a [`DualPic`], for wiring devices to it.
pub struct PicIrqLine {
    pic: Arc<Mutex<DualPic>>,
    irq: u8,
}

impl PicIrqLine {
    /// The line for ISA IRQ `irq` of `pic`.
    pub fn new(pic: Arc<Mutex<DualPic>>, irq: u8) -> Self {
        Self { pic, irq }
    }

    /// The same, ready to hand to a device.
    pub fn shared(pic: Arc<Mutex<DualPic>>, irq: u8) -> SharedIrqLine {
        Arc::new(Self::new(pic, irq))
    }
}

impl IrqLine for PicIrqLine {
    fn set_level(&self, high: bool) {
        crate::lock(&self.pic).set_irq(self.irq, high);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn outb(pic: &mut DualPic, port: u64, value: u8) {
        pic.write(port, 0, &[value]);
    }

    fn inb(pic: &mut DualPic, port: u64) -> u8 {
        let mut b = [0u8];
        pic.read(port, 0, &mut b);
        b[0]
    }

    /// Linux's init_8259A: vectors 0x20/0x28, cascade on IR2, 8086 mode.
    fn linux_pic() -> DualPic {
        let mut pic = DualPic::new();
        outb(&mut pic, 0x21, 0xff);
        outb(&mut pic, 0xa1, 0xff);
        outb(&mut pic, 0x20, 0x11);
        outb(&mut pic, 0x21, 0x20);
        outb(&mut pic, 0x21, 0x04);
        outb(&mut pic, 0x21, 0x01);
        outb(&mut pic, 0xa0, 0x11);
        outb(&mut pic, 0xa1, 0x28);
        outb(&mut pic, 0xa1, 0x02);
        outb(&mut pic, 0xa1, 0x01);
        outb(&mut pic, 0x21, 0x00);
        outb(&mut pic, 0xa1, 0x00);
        pic
    }

    fn eoi_master(pic: &mut DualPic) {
        outb(pic, 0x20, 0x20);
    }

    #[test]
    fn linux_init_sequence_sets_vector_bases() {
        let mut pic = linux_pic();
        assert_eq!(inb(&mut pic, 0x21), 0);
        pic.set_irq(0, true);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x20);
        assert!(!pic.has_interrupt());
        eoi_master(&mut pic);
        pic.set_irq(14, true);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x2e);
    }

    #[test]
    fn icw1_clears_mask_and_needs_new_edge() {
        let mut pic = linux_pic();
        outb(&mut pic, 0x21, 0xff);
        pic.set_irq(3, true);
        outb(&mut pic, 0x20, 0x11);
        assert_eq!(inb(&mut pic, 0x20), 0, "edge sense latch reset");
        outb(&mut pic, 0x21, 0x20);
        outb(&mut pic, 0x21, 0x04);
        outb(&mut pic, 0x21, 0x01);
        assert_eq!(inb(&mut pic, 0x21), 0, "ICW1 clears the IMR");
        assert!(!pic.has_interrupt());
        pic.set_irq(3, false);
        pic.set_irq(3, true);
        assert_eq!(pic.acknowledge(), 0x23);
    }

    #[test]
    fn lower_irq_has_priority_and_nests() {
        let mut pic = linux_pic();
        pic.set_irq(4, true);
        pic.set_irq(1, true);
        assert_eq!(pic.acknowledge(), 0x21);
        // IRQ4 is lower priority than IRQ1 in service: blocked.
        assert!(!pic.has_interrupt());
        // IRQ0 is higher: it nests.
        pic.set_irq(0, true);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x20);
        eoi_master(&mut pic); // ends IRQ0, the highest in service
        assert!(!pic.has_interrupt());
        eoi_master(&mut pic); // ends IRQ1
        assert_eq!(pic.acknowledge(), 0x24);
    }

    #[test]
    fn specific_eoi_clears_that_level() {
        let mut pic = linux_pic();
        pic.set_irq(5, true);
        pic.set_irq(6, true);
        pic.acknowledge();
        outb(&mut pic, 0x20, 0x0b); // OCW3: read ISR
        assert_eq!(inb(&mut pic, 0x20), 0x20);
        outb(&mut pic, 0x20, 0x60 | 5); // specific EOI for IR5
        assert_eq!(inb(&mut pic, 0x20), 0);
        assert_eq!(pic.acknowledge(), 0x26);
    }

    #[test]
    fn irr_and_isr_readback() {
        let mut pic = linux_pic();
        outb(&mut pic, 0x21, 0x08); // mask IR3
        pic.set_irq(3, true);
        pic.set_irq(4, true);
        outb(&mut pic, 0x20, 0x0a); // OCW3: read IRR
        assert_eq!(inb(&mut pic, 0x20), 0x18);
        assert_eq!(pic.acknowledge(), 0x24);
        assert_eq!(inb(&mut pic, 0x20), 0x08, "IRR still selected");
        outb(&mut pic, 0x20, 0x0b);
        assert_eq!(inb(&mut pic, 0x20), 0x10);
    }

    #[test]
    fn masking_blocks_and_unmasking_delivers() {
        let mut pic = linux_pic();
        outb(&mut pic, 0x21, 0x01);
        pic.set_irq(0, true);
        assert!(!pic.has_interrupt());
        outb(&mut pic, 0x21, 0x00);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x20);
        eoi_master(&mut pic);
        // Masking the cascade blocks the whole slave.
        outb(&mut pic, 0x21, 0x04);
        pic.set_irq(12, true);
        assert!(!pic.has_interrupt());
        outb(&mut pic, 0x21, 0x00);
        assert!(pic.has_interrupt());
    }

    #[test]
    fn cascade_delivers_slave_vector_and_needs_both_eois() {
        let mut pic = linux_pic();
        pic.set_irq(12, true);
        assert_eq!(pic.acknowledge(), 0x2c);
        outb(&mut pic, 0x20, 0x0b);
        outb(&mut pic, 0xa0, 0x0b);
        assert_eq!(inb(&mut pic, 0x20), 0x04);
        assert_eq!(inb(&mut pic, 0xa0), 0x10);
        pic.set_irq(12, false);
        pic.set_irq(11, true);
        // IR3 of the slave outranks IR4, but the master's IR2 is in service.
        assert!(!pic.has_interrupt());
        outb(&mut pic, 0xa0, 0x20);
        eoi_master(&mut pic);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x2b);
    }

    #[test]
    fn edge_input_latches_a_pulse() {
        let mut pic = linux_pic();
        pic.set_irq(4, true);
        pic.set_irq(4, false);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x24);
        eoi_master(&mut pic);
        assert!(!pic.has_interrupt(), "one edge, one interrupt");
        // Holding the line high gives no second interrupt without an edge.
        pic.set_irq(4, true);
        pic.acknowledge();
        eoi_master(&mut pic);
        pic.set_irq(4, true);
        assert!(!pic.has_interrupt());
    }

    #[test]
    fn level_input_retriggers_after_eoi() {
        let mut pic = linux_pic();
        outb(&mut pic, 0x4d1, 0x08); // IRQ11 level-triggered
        assert_eq!(inb(&mut pic, 0x4d1), 0x08);
        pic.set_irq(11, true);
        assert_eq!(pic.acknowledge(), 0x2b);
        outb(&mut pic, 0xa0, 0x20);
        eoi_master(&mut pic);
        assert!(pic.has_interrupt(), "still high: interrupts again");
        assert_eq!(pic.acknowledge(), 0x2b);
        pic.set_irq(11, false); // the handler services the device
        outb(&mut pic, 0xa0, 0x20);
        eoi_master(&mut pic);
        assert!(!pic.has_interrupt());
        // A level request withdrawn before the acknowledge leaves nothing.
        outb(&mut pic, 0x4d0, 0x20); // IRQ5 level-triggered
        pic.set_irq(5, true);
        assert!(pic.has_interrupt());
        pic.set_irq(5, false);
        assert!(!pic.has_interrupt());
    }

    #[test]
    fn elcr_edge_only_bits_stay_clear() {
        let mut pic = DualPic::new();
        pic.write(ELCR_BASE, 0, &[0xff, 0xff]);
        assert_eq!(pic.elcr(), 0xdef8);
        let mut w = [0u8; 2];
        pic.read(ELCR_BASE, 0, &mut w);
        assert_eq!(w, [0xf8, 0xde]);
    }

    #[test]
    fn spurious_irq7_and_irq15() {
        let mut pic = linux_pic();
        assert_eq!(pic.acknowledge(), 0x27);
        outb(&mut pic, 0x20, 0x0b);
        assert_eq!(inb(&mut pic, 0x20), 0, "spurious IRQ7 sets no ISR bit");
        // A slave request that goes away after the master latched IR2.
        outb(&mut pic, 0x4d1, 0x08);
        pic.set_irq(11, true);
        outb(&mut pic, 0x4d1, 0x00); // back to edge: the request stays latched
        pic.set_irq(11, false);
        outb(&mut pic, 0xa1, 0x08); // mask it on the slave
        assert!(pic.has_interrupt(), "the master latched the cascade edge");
        assert_eq!(pic.acknowledge(), 0x2f);
        assert_eq!(inb(&mut pic, 0x20), 0x04, "master IR2 goes in service");
        outb(&mut pic, 0xa0, 0x0b);
        assert_eq!(inb(&mut pic, 0xa0), 0, "slave ISR untouched");
    }

    #[test]
    fn auto_eoi_leaves_isr_clear() {
        let mut pic = DualPic::new();
        outb(&mut pic, 0x20, 0x11);
        outb(&mut pic, 0x21, 0x08);
        outb(&mut pic, 0x21, 0x04);
        outb(&mut pic, 0x21, 0x03); // 8086 mode, auto-EOI
        pic.set_irq(1, true);
        assert_eq!(pic.acknowledge(), 0x09);
        outb(&mut pic, 0x20, 0x0b);
        assert_eq!(inb(&mut pic, 0x20), 0);
        pic.set_irq(3, true);
        assert_eq!(pic.acknowledge(), 0x0b, "nothing in service blocks IR3");
    }

    #[test]
    fn rotation_and_set_priority() {
        let mut pic = linux_pic();
        pic.set_irq(3, true);
        pic.set_irq(5, true);
        assert_eq!(pic.acknowledge(), 0x23);
        outb(&mut pic, 0x20, 0xa0); // rotate on non-specific EOI: IR3 lowest
        pic.set_irq(1, true);
        // Priority order is now 4,5,6,7,0,1,2,3.
        assert_eq!(pic.acknowledge(), 0x25);
        outb(&mut pic, 0x20, 0x20);
        outb(&mut pic, 0x20, 0xc0 | 6); // set priority: IR6 lowest, IR7 highest
        pic.set_irq(7, true);
        assert_eq!(pic.acknowledge(), 0x27);
        outb(&mut pic, 0x20, 0x20);
        assert_eq!(pic.acknowledge(), 0x21);
    }

    #[test]
    fn poll_mode_reads_and_acknowledges() {
        let mut pic = linux_pic();
        outb(&mut pic, 0x20, 0x0c); // OCW3: poll
        assert_eq!(inb(&mut pic, 0x20), 0x00, "nothing pending");
        pic.set_irq(6, true);
        outb(&mut pic, 0x20, 0x0c);
        assert_eq!(inb(&mut pic, 0x20), 0x86);
        assert!(!pic.has_interrupt(), "the poll read acknowledged IR6");
        outb(&mut pic, 0x20, 0x0b);
        assert_eq!(inb(&mut pic, 0x20), 0x40);
    }

    #[test]
    fn special_mask_mode_admits_lower_levels() {
        let mut pic = linux_pic();
        pic.set_irq(2 + 1, true);
        assert_eq!(pic.acknowledge(), 0x23);
        pic.set_irq(5, true);
        assert!(!pic.has_interrupt());
        outb(&mut pic, 0x21, 0x08); // mask IR3 (in service)
        outb(&mut pic, 0x20, 0x68); // OCW3: set special mask mode
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x25);
        outb(&mut pic, 0x20, 0x48); // clear special mask mode
        outb(&mut pic, 0x20, 0x0b);
        assert_eq!(inb(&mut pic, 0x20), 0x28);
    }

    #[test]
    fn intr_notifier_fires_on_rising_intr() {
        let mut pic = linux_pic();
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        pic.set_intr_notifier(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        pic.set_irq(4, true);
        pic.set_irq(3, true);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn pic_irq_line_drives_the_pic() {
        let pic = Arc::new(Mutex::new(linux_pic()));
        let line = PicIrqLine::shared(pic.clone(), 9);
        line.pulse();
        let mut pic = crate::lock(&pic);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x29);
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let mut pic = linux_pic();
        pic.set_irq(200, true);
        pic.set_irq(2, true);
        assert!(!pic.has_interrupt());
        let mut d = [0u8; 4];
        pic.read(0x21, 0, &mut d);
        assert_eq!(d, [0, 0xff, 0xff, 0xff]);
        pic.write(0x21, 0, &[0xff, 1, 2, 3]);
        pic.read(u64::MAX, 5, &mut d);
        pic.write(u64::MAX, 5, &d);
        assert_eq!(inb(&mut pic, 0x21), 0xff);
    }
}
