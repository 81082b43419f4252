//! The ACPI fixed-hardware registers the FADT points at, PIIX4-style in I/O
//! space (ACPI 6.x section 4.8):
//!
//! * PM1a_EVT_BLK at 0x600: PM1 status (2 bytes, write 1 to clear) at +0 and
//!   PM1 enable (2 bytes) at +2.
//! * PM1a_CNT_BLK at 0x604 (2 bytes): SCI_EN (bit 0), SLP_TYP (bits 10-12),
//!   SLP_EN (bit 13, write-only). Writing SLP_EN with SLP_TYP =
//!   [`SLP_TYP_S5`] powers the machine off; other sleep states are not
//!   supported and are ignored. There is no SMI command port (the FADT's
//!   SMI_CMD is 0), so the machine is always in ACPI mode and SCI_EN reads 1.
//! * PM_TMR_BLK at 0x608 (4 bytes): the 24-bit power management timer at
//!   3.579545 MHz, counted from the [`emu_core::Clock`]. TMR_STS is set when
//!   bit 23 of the timer changes.
//!
//! The SCI is driven high while a status bit is set whose enable bit is set
//! (power button, RTC, timer overflow once the guest reads the status);
//! [`AcpiPm::power_button`] presses the power button for a graceful
//! shutdown.
//!
//! Inserted at 0x600, len 12 ([`ACPI_PM_BASE`], [`ACPI_PM_LEN`]). The
//! registers accept accesses of any width at any offset: each byte lands in
//! its own lane of the register it belongs to.

use std::sync::Arc;

use emu_core::{BusDevice, MachineControl, SharedClock, SharedIrqLine, StopReason};

/// PM1a event block: PM1 status then PM1 enable.
pub const PM1A_EVT_BLK: u16 = 0x600;
/// Length of the PM1 event block (FADT PM1_EVT_LEN).
pub const PM1_EVT_LEN: u8 = 4;
/// PM1a control block.
pub const PM1A_CNT_BLK: u16 = 0x604;
/// Length of the PM1 control block (FADT PM1_CNT_LEN).
pub const PM1_CNT_LEN: u8 = 2;
/// The PM timer.
pub const PM_TMR_BLK: u16 = 0x608;
/// Length of the PM timer block (FADT PM_TMR_LEN).
pub const PM_TMR_LEN: u8 = 4;
/// Where the device is inserted on the I/O bus.
pub const ACPI_PM_BASE: u64 = PM1A_EVT_BLK as u64;
/// How many ports it covers.
pub const ACPI_PM_LEN: u64 = 12;
/// The SCI's ISA IRQ, as the FADT's SCI_INT should say.
pub const SCI_IRQ: u8 = 9;
/// The SLP_TYP value of S5 (soft off); the DSDT's `_S5` package must
/// declare the same value.
pub const SLP_TYP_S5: u16 = 5;
/// The PM timer frequency.
pub const PM_TIMER_FREQUENCY_HZ: u64 = 3_579_545;

/// PM1 status: the timer's bit 23 changed.
pub const PM1_STS_TMR: u16 = 1 << 0;
/// PM1 status: the power button was pressed.
pub const PM1_STS_PWRBTN: u16 = 1 << 8;
/// PM1 status: the RTC alarm fired.
pub const PM1_STS_RTC: u16 = 1 << 10;
/// PM1 status: the machine woke.
pub const PM1_STS_WAK: u16 = 1 << 15;
/// PM1 control: SCI (rather than SMI) delivery of power management events.
pub const PM1_CNT_SCI_EN: u16 = 1 << 0;
/// PM1 control: enter the sleep state in SLP_TYP.
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;
const PM1_CNT_SLP_TYP_SHIFT: u16 = 10;
const PM1_CNT_SLP_TYP_MASK: u16 = 0x7 << PM1_CNT_SLP_TYP_SHIFT;

/// Status bits this device can set, and the enable bits that go with them.
const PM1_EVENTS: u16 = PM1_STS_TMR | PM1_STS_PWRBTN | PM1_STS_RTC;
/// Status bits the guest can clear (write 1).
const PM1_STS_CLEARABLE: u16 = 0x8f31;
/// Control bits the guest can change: SLP_TYP and GBL_RLS (bit 2).
const PM1_CNT_WRITABLE: u16 = PM1_CNT_SLP_TYP_MASK | 0x0004;

const NS_PER_SEC: u128 = 1_000_000_000;
const TIMER_MASK: u64 = 0x00ff_ffff;

/// The PM1a event/control registers and the PM timer.
pub struct AcpiPm {
    clock: SharedClock,
    control: Arc<MachineControl>,
    sci: SharedIrqLine,
    status: u16,
    enable: u16,
    pm1_control: u16,
    /// Timer bit 23 and above when TMR_STS was last cleared.
    timer_epoch: u64,
    sci_level: bool,
}

impl std::fmt::Debug for AcpiPm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcpiPm")
            .field("status", &self.status)
            .field("enable", &self.enable)
            .field("pm1_control", &self.pm1_control)
            .finish()
    }
}

impl AcpiPm {
    /// The registers, counting the timer from `clock`, powering off through
    /// `control` and raising the SCI on `sci` (ISA IRQ [`SCI_IRQ`],
    /// level-triggered).
    pub fn new(clock: SharedClock, control: Arc<MachineControl>, sci: SharedIrqLine) -> Self {
        let mut pm = Self {
            clock,
            control,
            sci,
            status: 0,
            enable: 0,
            pm1_control: PM1_CNT_SCI_EN,
            timer_epoch: 0,
            sci_level: false,
        };
        pm.timer_epoch = pm.timer_ticks() >> 23;
        pm
    }

    /// Presses the power button: sets PWRBTN_STS, raising the SCI if the
    /// guest enabled it. An ACPI guest answers by shutting down.
    pub fn power_button(&mut self) {
        self.status |= PM1_STS_PWRBTN;
        self.update_sci();
    }

    fn timer_ticks(&self) -> u64 {
        let ticks =
            u128::from(self.clock.monotonic_ns()) * u128::from(PM_TIMER_FREQUENCY_HZ) / NS_PER_SEC;
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    /// The 24-bit PM timer value.
    pub fn timer(&self) -> u32 {
        (self.timer_ticks() & TIMER_MASK) as u32
    }

    fn refresh_timer_status(&mut self) {
        if self.timer_ticks() >> 23 != self.timer_epoch {
            self.status |= PM1_STS_TMR;
        }
    }

    fn update_sci(&mut self) {
        let level =
            self.pm1_control & PM1_CNT_SCI_EN != 0 && self.status & self.enable & PM1_EVENTS != 0;
        if level != self.sci_level {
            self.sci_level = level;
            self.sci.set_level(level);
        }
    }

    /// The register containing `port`, its first port, and its value.
    fn register_at(&mut self, port: u64) -> Option<(u64, u32)> {
        let evt = u64::from(PM1A_EVT_BLK);
        let cnt = u64::from(PM1A_CNT_BLK);
        let tmr = u64::from(PM_TMR_BLK);
        match port {
            p if p >= evt && p < evt + 2 => {
                self.refresh_timer_status();
                Some((evt, u32::from(self.status)))
            }
            p if p >= evt + 2 && p < evt + 4 => Some((evt + 2, u32::from(self.enable))),
            // SLP_EN is write-only.
            p if p >= cnt && p < cnt + 2 => Some((cnt, u32::from(self.pm1_control))),
            p if p >= tmr && p < tmr + 4 => Some((tmr, self.timer())),
            _ => None,
        }
    }

    fn read_port(&mut self, port: u64) -> u8 {
        match self.register_at(port) {
            Some((start, value)) => (value >> ((port - start) * 8)) as u8,
            None => 0xff,
        }
    }

    fn write_register(&mut self, start: u64, value: u16, lanes: u16) {
        if start == u64::from(PM1A_EVT_BLK) {
            let cleared = value & lanes & PM1_STS_CLEARABLE;
            self.status &= !cleared;
            if cleared & PM1_STS_TMR != 0 {
                self.timer_epoch = self.timer_ticks() >> 23;
            }
        } else if start == u64::from(PM1A_EVT_BLK) + 2 {
            self.enable = (self.enable & !lanes) | (value & lanes);
        } else if start == u64::from(PM1A_CNT_BLK) {
            let writable = lanes & PM1_CNT_WRITABLE;
            self.pm1_control = (self.pm1_control & !writable) | (value & writable);
            if value & lanes & PM1_CNT_SLP_EN != 0 {
                let slp_typ = (value & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT;
                if slp_typ == SLP_TYP_S5 {
                    tracing::debug!("acpi: S5 requested");
                    self.control.request_stop(StopReason::PowerOff);
                } else {
                    tracing::debug!("acpi: sleep state SLP_TYP={slp_typ} not supported");
                }
            }
        }
        self.update_sci();
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        let port = base.wrapping_add(offset);
        for (i, byte) in (0u64..).zip(data.iter_mut()) {
            *byte = self.read_port(port.wrapping_add(i));
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        // Gather the bytes per register so that a word write to PM1_CNT
        // sees SLP_TYP and SLP_EN together.
        let port = base.wrapping_add(offset);
        let mut current: Option<(u64, u16, u16)> = None;
        for (i, &byte) in (0u64..).zip(data.iter()) {
            let p = port.wrapping_add(i);
            let Some((start, _)) = self.register_at(p) else {
                continue;
            };
            let shift = (p - start) * 8;
            if shift >= 16 {
                continue; // the read-only timer's upper bytes
            }
            match &mut current {
                Some((s, value, lanes)) if *s == start => {
                    *value |= u16::from(byte) << shift;
                    *lanes |= 0xff << shift;
                }
                _ => {
                    if let Some((s, value, lanes)) = current.take() {
                        self.write_register(s, value, lanes);
                    }
                    current = Some((start, u16::from(byte) << shift, 0xff << shift));
                }
            }
        }
        if let Some((s, value, lanes)) = current {
            self.write_register(s, value, lanes);
        }
    }
}

#[cfg(test)]
mod tests {
    use emu_core::{ManualClock, RecordingIrq};

    use super::*;

    struct Rig {
        pm: AcpiPm,
        clock: Arc<ManualClock>,
        control: Arc<MachineControl>,
        sci: Arc<RecordingIrq>,
    }

    fn rig() -> Rig {
        let clock = ManualClock::new(0);
        let control = MachineControl::new();
        let sci = Arc::new(RecordingIrq::default());
        let pm = AcpiPm::new(clock.clone(), control.clone(), sci.clone());
        Rig {
            pm,
            clock,
            control,
            sci,
        }
    }

    fn inw(pm: &mut AcpiPm, port: u16) -> u16 {
        let mut b = [0u8; 2];
        pm.read(ACPI_PM_BASE, u64::from(port) - ACPI_PM_BASE, &mut b);
        u16::from_le_bytes(b)
    }

    fn outw(pm: &mut AcpiPm, port: u16, value: u16) {
        pm.write(
            ACPI_PM_BASE,
            u64::from(port) - ACPI_PM_BASE,
            &value.to_le_bytes(),
        );
    }

    fn inl(pm: &mut AcpiPm, port: u16) -> u32 {
        let mut b = [0u8; 4];
        pm.read(ACPI_PM_BASE, u64::from(port) - ACPI_PM_BASE, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn s5_powers_off() {
        let mut r = rig();
        assert_eq!(inw(&mut r.pm, PM1A_CNT_BLK), PM1_CNT_SCI_EN);
        outw(&mut r.pm, PM1A_CNT_BLK, (SLP_TYP_S5 << 10) | PM1_CNT_SLP_EN);
        assert_eq!(r.control.stop_reason(), Some(StopReason::PowerOff));
        assert_eq!(inw(&mut r.pm, PM1A_CNT_BLK) & PM1_CNT_SLP_EN, 0);
    }

    #[test]
    fn slp_typ_without_slp_en_or_other_states_do_nothing() {
        let mut r = rig();
        outw(&mut r.pm, PM1A_CNT_BLK, SLP_TYP_S5 << 10);
        assert_eq!(r.control.stop_reason(), None);
        assert_eq!(
            inw(&mut r.pm, PM1A_CNT_BLK),
            (SLP_TYP_S5 << 10) | PM1_CNT_SCI_EN
        );
        outw(&mut r.pm, PM1A_CNT_BLK, (3 << 10) | PM1_CNT_SLP_EN);
        assert_eq!(r.control.stop_reason(), None);
        // Byte writes: SLP_TYP first, then SLP_EN in the high byte.
        r.pm.write(ACPI_PM_BASE, 4, &[0x00]);
        r.pm.write(ACPI_PM_BASE, 5, &[((SLP_TYP_S5 << 2) | 0x20) as u8]);
        assert_eq!(r.control.stop_reason(), Some(StopReason::PowerOff));
    }

    #[test]
    fn sci_en_is_read_only() {
        let mut r = rig();
        outw(&mut r.pm, PM1A_CNT_BLK, 0);
        assert_eq!(
            inw(&mut r.pm, PM1A_CNT_BLK) & PM1_CNT_SCI_EN,
            PM1_CNT_SCI_EN
        );
    }

    #[test]
    fn status_is_write_one_to_clear_and_drives_sci() {
        let mut r = rig();
        r.pm.power_button();
        assert_eq!(inw(&mut r.pm, PM1A_EVT_BLK), PM1_STS_PWRBTN);
        assert!(!r.sci.level(), "not enabled");
        outw(&mut r.pm, PM1A_EVT_BLK + 2, PM1_STS_PWRBTN);
        assert_eq!(inw(&mut r.pm, PM1A_EVT_BLK + 2), PM1_STS_PWRBTN);
        assert!(r.sci.level());
        outw(&mut r.pm, PM1A_EVT_BLK, 0);
        assert_eq!(
            inw(&mut r.pm, PM1A_EVT_BLK),
            PM1_STS_PWRBTN,
            "writing 0 keeps it"
        );
        outw(&mut r.pm, PM1A_EVT_BLK, PM1_STS_PWRBTN);
        assert_eq!(inw(&mut r.pm, PM1A_EVT_BLK), 0);
        assert!(!r.sci.level());
    }

    #[test]
    fn pm_timer_counts_at_3_579545_mhz_and_wraps_at_24_bits() {
        let mut r = rig();
        assert_eq!(inl(&mut r.pm, PM_TMR_BLK), 0);
        r.clock.advance_ns(1_000_000);
        assert_eq!(inl(&mut r.pm, PM_TMR_BLK), 3579);
        r.clock.advance_ns(999_000_000);
        assert_eq!(inl(&mut r.pm, PM_TMR_BLK), 3_579_545);
        // 2^24 ticks is about 4.69 s.
        r.clock.advance_ns(4_000_000_000);
        let t = inl(&mut r.pm, PM_TMR_BLK);
        assert!(t < 1 << 24);
        assert_eq!(u64::from(t), (5 * PM_TIMER_FREQUENCY_HZ) & TIMER_MASK);
        let mut b = [0u8; 1];
        r.pm.read(ACPI_PM_BASE, 11, &mut b);
        assert_eq!(b, [0], "the top byte of a 24-bit timer is zero");
        r.pm.write(ACPI_PM_BASE, 8, &[0, 0, 0, 0]);
        assert!(inl(&mut r.pm, PM_TMR_BLK) > 0, "read-only");
    }

    #[test]
    fn timer_status_on_bit23_change() {
        let mut r = rig();
        assert_eq!(inw(&mut r.pm, PM1A_EVT_BLK) & PM1_STS_TMR, 0);
        r.clock.advance_ns(2_400_000_000); // past 2^23 ticks
        assert_eq!(inw(&mut r.pm, PM1A_EVT_BLK) & PM1_STS_TMR, PM1_STS_TMR);
        outw(&mut r.pm, PM1A_EVT_BLK, PM1_STS_TMR);
        assert_eq!(inw(&mut r.pm, PM1A_EVT_BLK) & PM1_STS_TMR, 0);
    }

    #[test]
    fn odd_accesses() {
        let mut r = rig();
        let mut d = [0u8; 8];
        r.pm.read(ACPI_PM_BASE, 6, &mut d);
        assert_eq!(&d[..2], &[0xff, 0xff]);
        r.pm.write(ACPI_PM_BASE, 0, &[0xff; 12]);
        r.pm.write(u64::MAX, 1, &[0xff; 4]);
        r.pm.read(u64::MAX, 1, &mut d);
        assert_eq!(r.control.stop_reason(), None, "SLP_TYP 7 is not S5");
        r.pm.write(
            ACPI_PM_BASE,
            3,
            &[0x01, 0x00, (SLP_TYP_S5 << 2) as u8 | 0x20],
        );
        assert_eq!(r.control.stop_reason(), Some(StopReason::PowerOff));
    }
}
