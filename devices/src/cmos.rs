//! The Motorola MC146818 real-time clock and its 128 bytes of CMOS RAM
//! (index port 0x70, data port 0x71, IRQ 8), as on a PC/AT.
//!
//! * Index port: bits 6-0 select the register; bit 7 masks NMI on a PC and
//!   does not take part in the selection. It reads back as all ones (it is
//!   write-only on real chipsets).
//! * Registers 0-9 and the century byte (0x32) read the guest's date and
//!   time: the host's UTC wall clock (like QEMU's default `-rtc base=utc`)
//!   sampled once at construction and advanced by the monotonic clock, plus
//!   an offset the guest changes by writing the time registers. Values are
//!   BCD or binary per register B's DM bit, and the hour is 24-hour or
//!   12-hour with bit 7 meaning PM per its 24/12 bit.
//! * While register B's SET bit is set, updates are inhibited: the time
//!   registers hold what was there or what the guest writes, and clearing SET
//!   starts the clock from them. Setting SET also clears UIE (datasheet).
//! * Register A: UIP (read-only) is set during the last 244 us before each
//!   update; DV2-0 (time base, 010 = running) and RS3-0 (periodic rate) are
//!   writable. Periodic and update interrupts need DV = 010.
//! * Register C: IRQF, PF, AF, UF; reading it returns and clears them and
//!   lowers IRQ8. IRQF = PF·PIE + AF·AIE + UF·UIE, and IRQ8 is driven high
//!   while IRQF is set. Register D reads VRT (valid RAM and time).
//! * Alarm registers 1, 3, 5 match any value when their top two bits are set.
//!
//! [`Cmos::tick`] raises the interrupts that became due; call it at
//! [`Cmos::next_deadline_ns`]. Port accesses catch up first as well, so
//! flags read from register C are current.
//!
//! [`Cmos::new`] fills the bytes firmware reads as QEMU's `pc_cmos_init`
//! does (memory sizes, CPU count, equipment, boot order, checksum).
//!
//! Inserted at 0x70, len 2; wider accesses are split into byte accesses.

use emu_core::{BusDevice, SharedClock, SharedIrqLine};

/// The index port.
pub const CMOS_BASE: u64 = 0x70;
/// Ports at [`CMOS_BASE`].
pub const CMOS_LEN: u64 = 2;
/// The RTC's ISA IRQ.
pub const RTC_IRQ: u8 = 8;

const REG_SECONDS: u8 = 0x00;
const REG_SECONDS_ALARM: u8 = 0x01;
const REG_MINUTES: u8 = 0x02;
const REG_MINUTES_ALARM: u8 = 0x03;
const REG_HOURS: u8 = 0x04;
const REG_HOURS_ALARM: u8 = 0x05;
const REG_DAY_OF_WEEK: u8 = 0x06;
const REG_DAY_OF_MONTH: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

const REG_A_UIP: u8 = 0x80;
const REG_A_DV_MASK: u8 = 0x70;
const REG_A_DV_RUNNING: u8 = 0x20;
const REG_A_RS_MASK: u8 = 0x0f;
const REG_B_SET: u8 = 0x80;
const REG_B_PIE: u8 = 0x40;
const REG_B_AIE: u8 = 0x20;
const REG_B_UIE: u8 = 0x10;
const REG_B_DM_BINARY: u8 = 0x04;
const REG_B_24_HOUR: u8 = 0x02;
const REG_C_IRQF: u8 = 0x80;
const REG_C_PF: u8 = 0x40;
const REG_C_AF: u8 = 0x20;
const REG_C_UF: u8 = 0x10;
const REG_D_VRT: u8 = 0x80;

/// The 32.768 kHz time base.
const TIME_BASE_HZ: i128 = 32_768;
const NS_PER_SEC: i128 = 1_000_000_000;
/// UIP is set this long before each update.
const UPDATE_IN_PROGRESS_NS: i128 = 244_000;
const ALARM_DONT_CARE: u8 = 0xc0;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The guest memory the firmware's CMOS bytes describe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CmosMemoryLayout {
    /// RAM below 4 GiB, including the first MiB.
    pub below_4g_bytes: u64,
    /// RAM mapped from 4 GiB up.
    pub above_4g_bytes: u64,
    /// Number of CPUs.
    pub cpus: u8,
}

/// A calendar date and time of day (proleptic Gregorian, UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    pub year: i64,
    /// 1-12.
    pub month: u8,
    /// 1-31.
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// 0 = Sunday.
    pub weekday: u8,
}

impl DateTime {
    /// The civil date and time `seconds` after 1970-01-01 00:00:00 UTC.
    pub fn from_unix(seconds: i64) -> Self {
        let days = seconds.div_euclid(86_400);
        let second_of_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: (second_of_day / 3600) as u8,
            minute: (second_of_day / 60 % 60) as u8,
            second: (second_of_day % 60) as u8,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as u8,
        }
    }

    /// Seconds since the Unix epoch. Out-of-range fields (as a guest may
    /// write) are folded in arithmetically rather than rejected.
    pub fn to_unix(&self) -> i64 {
        let days = days_from_civil(self.year, self.month.clamp(1, 12), self.day);
        days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date; `month` is 1-12.
/// Years are counted from March so that the leap day falls last.
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let month = i64::from(month);
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u8;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u8, day)
}

fn to_bcd(value: u8) -> u8 {
    let v = value % 100;
    ((v / 10) << 4) | (v % 10)
}

fn from_bcd(value: u8) -> u8 {
    (value >> 4) * 10 + (value & 0x0f)
}

/// The MC146818 RTC and CMOS RAM.
pub struct Cmos {
    clock: SharedClock,
    irq: SharedIrqLine,
    index: u8,
    nmi_disabled: bool,
    regs: [u8; 128],
    /// Guest time in ns since the Unix epoch = monotonic ns + this.
    guest_offset_ns: i128,
    /// Interrupt sources have been evaluated up to this monotonic time.
    checked_until_ns: u64,
    irq_level: bool,
}

impl std::fmt::Debug for Cmos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cmos")
            .field("index", &self.index)
            .field("guest_offset_ns", &self.guest_offset_ns)
            .finish()
    }
}

impl Cmos {
    /// An RTC at the host's current UTC time, raising IRQ 8 on `irq8`, with
    /// the firmware's memory and equipment bytes filled from `mem`.
    pub fn new(clock: SharedClock, irq8: SharedIrqLine, mem: CmosMemoryLayout) -> Self {
        let now_ns = clock.monotonic_ns();
        let wall_ns = i128::from(clock.unix_seconds()) * NS_PER_SEC;
        let mut regs = [0u8; 128];
        regs[usize::from(REG_A)] = REG_A_DV_RUNNING | 0x06; // 1024 Hz periodic rate
        regs[usize::from(REG_B)] = REG_B_24_HOUR;
        regs[usize::from(REG_D)] = REG_D_VRT;
        let mut cmos = Self {
            clock,
            irq: irq8,
            index: 0,
            nmi_disabled: false,
            regs,
            guest_offset_ns: wall_ns - i128::from(now_ns),
            checked_until_ns: now_ns,
            irq_level: false,
        };
        cmos.fill_firmware_bytes(&mem);
        cmos
    }

    fn fill_firmware_bytes(&mut self, mem: &CmosMemoryLayout) {
        let below = mem.below_4g_bytes;
        let base_kib = (below / KIB).min(640);
        self.set_u16(0x15, base_kib as u16);
        let extended_kib = (below.saturating_sub(MIB) / KIB).min(0xffff);
        self.set_u16(0x17, extended_kib as u16);
        self.set_u16(0x30, extended_kib as u16);
        let above_16m = (below.saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff);
        self.set_u16(0x34, above_16m as u16);
        let above_4g = mem.above_4g_bytes / (64 * KIB);
        self.regs[0x5b] = above_4g as u8;
        self.regs[0x5c] = (above_4g >> 8) as u8;
        self.regs[0x5d] = (above_4g >> 16) as u8;
        self.regs[0x5f] = mem.cpus.saturating_sub(1);
        // No floppy drives.
        self.regs[0x10] = 0;
        // Equipment: FPU present, PS/2 mouse present, EGA/VGA display.
        self.regs[0x14] = 0x06;
        // Boot order: hard disk first (QEMU's encoding: 1 floppy, 2 disk).
        self.regs[0x3d] = 0x02;
        self.regs[0x38] = 0x00;
        let checksum: u16 = self.regs[0x10..=0x2d].iter().map(|&b| u16::from(b)).sum();
        self.regs[0x2e] = (checksum >> 8) as u8;
        self.regs[0x2f] = checksum as u8;
    }

    fn set_u16(&mut self, reg: usize, value: u16) {
        let [low, high] = value.to_le_bytes();
        if let Some(bytes) = self.regs.get_mut(reg..reg + 2) {
            bytes.copy_from_slice(&[low, high]);
        }
    }

    /// Whether the guest has masked NMI through bit 7 of the index port.
    pub fn nmi_disabled(&self) -> bool {
        self.nmi_disabled
    }

    /// Raises the interrupts that became due since the last call.
    pub fn tick(&mut self) {
        let now = self.clock.monotonic_ns();
        self.catch_up(now);
    }

    /// The monotonic time at which the next enabled interrupt is due. None
    /// while IRQ8 is already raised: nothing new can be signalled until the
    /// guest reads register C, which a port access handles.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        if self.irq_level || !self.time_base_running() {
            return None;
        }
        let from = self.guest_ns(self.checked_until_ns);
        let b = self.regs[usize::from(REG_B)];
        let mut next: Option<i128> = None;
        if b & REG_B_PIE != 0 {
            if let Some(period) = self.periodic_cycles() {
                let cycle = (from * TIME_BASE_HZ).div_euclid(NS_PER_SEC);
                let boundary = (cycle.div_euclid(period) + 1) * period;
                next = Some(ceil_div(boundary * NS_PER_SEC, TIME_BASE_HZ));
            }
        }
        if b & (REG_B_UIE | REG_B_AIE) != 0 && b & REG_B_SET == 0 {
            let second = (from.div_euclid(NS_PER_SEC) + 1) * NS_PER_SEC;
            next = Some(next.map_or(second, |n| n.min(second)));
        }
        next.map(|guest| u64::try_from((guest - self.guest_offset_ns).max(0)).unwrap_or(u64::MAX))
    }

    fn guest_ns(&self, monotonic_ns: u64) -> i128 {
        i128::from(monotonic_ns) + self.guest_offset_ns
    }

    fn time_base_running(&self) -> bool {
        self.regs[usize::from(REG_A)] & REG_A_DV_MASK == REG_A_DV_RUNNING
    }

    fn updates_enabled(&self) -> bool {
        self.time_base_running() && self.regs[usize::from(REG_B)] & REG_B_SET == 0
    }

    /// The periodic interrupt's period in 32.768 kHz cycles, per RS3-0.
    fn periodic_cycles(&self) -> Option<i128> {
        match self.regs[usize::from(REG_A)] & REG_A_RS_MASK {
            0 => None,
            // Rates 1 and 2 repeat rates 8 and 9 with a 32.768 kHz base.
            1 => Some(128),
            2 => Some(256),
            rs => Some(1 << (rs - 1)),
        }
    }

    /// Sets the flags for the periodic, update and alarm events in
    /// (checked_until, now] and updates IRQ8.
    fn catch_up(&mut self, now: u64) {
        if now > self.checked_until_ns && self.time_base_running() {
            let from = self.guest_ns(self.checked_until_ns);
            let to = self.guest_ns(now);
            if let Some(period) = self.periodic_cycles() {
                let cycle_from = (from * TIME_BASE_HZ).div_euclid(NS_PER_SEC);
                let cycle_to = (to * TIME_BASE_HZ).div_euclid(NS_PER_SEC);
                if cycle_to.div_euclid(period) > cycle_from.div_euclid(period) {
                    self.regs[usize::from(REG_C)] |= REG_C_PF;
                }
            }
            let second_to = to.div_euclid(NS_PER_SEC);
            if self.updates_enabled() && second_to > from.div_euclid(NS_PER_SEC) {
                self.regs[usize::from(REG_C)] |= REG_C_UF;
                // Missed seconds coalesce: the alarm is compared with the
                // latest one only.
                if self.alarm_matches(second_to as i64) {
                    self.regs[usize::from(REG_C)] |= REG_C_AF;
                }
            }
        }
        self.checked_until_ns = self.checked_until_ns.max(now);
        self.update_irq();
    }

    fn alarm_matches(&self, unix_seconds: i64) -> bool {
        let time = DateTime::from_unix(unix_seconds);
        let matches = |alarm_reg: u8, value: u8| {
            let alarm = self.regs[usize::from(alarm_reg)];
            alarm & ALARM_DONT_CARE == ALARM_DONT_CARE || alarm == value
        };
        matches(REG_SECONDS_ALARM, self.encode(time.second))
            && matches(REG_MINUTES_ALARM, self.encode(time.minute))
            && matches(REG_HOURS_ALARM, self.encode_hour(time.hour))
    }

    fn update_irq(&mut self) {
        let c = self.regs[usize::from(REG_C)];
        let enabled = self.regs[usize::from(REG_B)] & (REG_B_PIE | REG_B_AIE | REG_B_UIE);
        // The enable bits line up with the flags they gate.
        let irqf = c & enabled & (REG_C_PF | REG_C_AF | REG_C_UF) != 0;
        if irqf {
            self.regs[usize::from(REG_C)] |= REG_C_IRQF;
        } else {
            self.regs[usize::from(REG_C)] &= !REG_C_IRQF;
        }
        if irqf != self.irq_level {
            self.irq_level = irqf;
            self.irq.set_level(irqf);
        }
    }

    fn binary_mode(&self) -> bool {
        self.regs[usize::from(REG_B)] & REG_B_DM_BINARY != 0
    }

    fn encode(&self, value: u8) -> u8 {
        if self.binary_mode() {
            value
        } else {
            to_bcd(value)
        }
    }

    fn decode(&self, value: u8) -> u8 {
        if self.binary_mode() {
            value
        } else {
            from_bcd(value)
        }
    }

    fn encode_hour(&self, hour: u8) -> u8 {
        if self.regs[usize::from(REG_B)] & REG_B_24_HOUR != 0 {
            return self.encode(hour);
        }
        let pm = if hour >= 12 { 0x80 } else { 0 };
        let hour12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(hour12) | pm
    }

    fn decode_hour(&self, value: u8) -> u8 {
        if self.regs[usize::from(REG_B)] & REG_B_24_HOUR != 0 {
            return self.decode(value);
        }
        let pm = value & 0x80 != 0;
        self.decode(value & 0x7f) % 12 + if pm { 12 } else { 0 }
    }

    fn is_time_register(reg: u8) -> bool {
        matches!(
            reg,
            REG_SECONDS
                | REG_MINUTES
                | REG_HOURS
                | REG_DAY_OF_WEEK
                | REG_DAY_OF_MONTH
                | REG_MONTH
                | REG_YEAR
                | REG_CENTURY
        )
    }

    /// Writes the current time into the time registers, unless SET holds
    /// them.
    fn refresh_time_registers(&mut self, now: u64) {
        if self.regs[usize::from(REG_B)] & REG_B_SET != 0 {
            return;
        }
        let seconds = self.guest_ns(now).div_euclid(NS_PER_SEC);
        let time = DateTime::from_unix(i64::try_from(seconds).unwrap_or(0));
        let fields = [
            (REG_SECONDS, self.encode(time.second)),
            (REG_MINUTES, self.encode(time.minute)),
            (REG_HOURS, self.encode_hour(time.hour)),
            (REG_DAY_OF_WEEK, self.encode(time.weekday + 1)),
            (REG_DAY_OF_MONTH, self.encode(time.day)),
            (REG_MONTH, self.encode(time.month)),
            (REG_YEAR, self.encode(time.year.rem_euclid(100) as u8)),
            (
                REG_CENTURY,
                self.encode(time.year.div_euclid(100).rem_euclid(100) as u8),
            ),
        ];
        for (reg, value) in fields {
            self.regs[usize::from(reg)] = value;
        }
    }

    /// Restarts the clock from the time registers, keeping the position
    /// within the second when `keep_subsecond`.
    fn set_time_from_registers(&mut self, now: u64, keep_subsecond: bool) {
        self.catch_up(now);
        let reg = |r: u8| self.regs[usize::from(r)];
        let year =
            i64::from(self.decode(reg(REG_CENTURY))) * 100 + i64::from(self.decode(reg(REG_YEAR)));
        let time = DateTime {
            year,
            month: self.decode(reg(REG_MONTH)),
            day: self.decode(reg(REG_DAY_OF_MONTH)),
            hour: self.decode_hour(reg(REG_HOURS)),
            minute: self.decode(reg(REG_MINUTES)),
            second: self.decode(reg(REG_SECONDS)),
            weekday: 0,
        };
        let subsecond = if keep_subsecond {
            self.guest_ns(now).rem_euclid(NS_PER_SEC)
        } else {
            0
        };
        let guest_ns = i128::from(time.to_unix()) * NS_PER_SEC + subsecond;
        self.guest_offset_ns = guest_ns - i128::from(now);
    }

    fn read_register(&mut self, now: u64, reg: u8) -> u8 {
        match reg {
            REG_A => {
                let mut a = self.regs[usize::from(REG_A)] & !REG_A_UIP;
                let into_second = self.guest_ns(now).rem_euclid(NS_PER_SEC);
                if self.updates_enabled() && into_second >= NS_PER_SEC - UPDATE_IN_PROGRESS_NS {
                    a |= REG_A_UIP;
                }
                a
            }
            REG_C => {
                let c = self.regs[usize::from(REG_C)];
                self.regs[usize::from(REG_C)] = 0;
                self.update_irq();
                c
            }
            REG_D => REG_D_VRT,
            r if Self::is_time_register(r) => {
                self.refresh_time_registers(now);
                self.regs[usize::from(r)]
            }
            r => self.regs.get(usize::from(r)).copied().unwrap_or(0xff),
        }
    }

    fn write_register(&mut self, now: u64, reg: u8, value: u8) {
        match reg {
            REG_A => {
                self.regs[usize::from(REG_A)] = value & !REG_A_UIP;
            }
            REG_B => self.write_register_b(now, value),
            // Read-only.
            REG_C | REG_D => {}
            r if Self::is_time_register(r) => {
                if self.regs[usize::from(REG_B)] & REG_B_SET != 0 {
                    self.regs[usize::from(r)] = value;
                } else {
                    self.refresh_time_registers(now);
                    self.regs[usize::from(r)] = value;
                    self.set_time_from_registers(now, true);
                }
            }
            r => {
                if let Some(byte) = self.regs.get_mut(usize::from(r)) {
                    *byte = value;
                }
            }
        }
        self.update_irq();
    }

    fn write_register_b(&mut self, now: u64, value: u8) {
        let old = self.regs[usize::from(REG_B)];
        let mut new = value;
        if new & REG_B_SET != 0 {
            new &= !REG_B_UIE;
            if old & REG_B_SET == 0 {
                // Freeze the time as of now, in the new format.
                self.regs[usize::from(REG_B)] = new & !REG_B_SET;
                self.refresh_time_registers(now);
            }
        }
        self.regs[usize::from(REG_B)] = new;
        if old & REG_B_SET != 0 && new & REG_B_SET == 0 {
            self.set_time_from_registers(now, false);
        }
    }
}

fn ceil_div(a: i128, b: i128) -> i128 {
    -((-a).div_euclid(b))
}

impl BusDevice for Cmos {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        let now = self.clock.monotonic_ns();
        self.catch_up(now);
        let port = base.wrapping_add(offset);
        for (i, byte) in (0u64..).zip(data.iter_mut()) {
            *byte = match port.wrapping_add(i) {
                0x71 => self.read_register(now, self.index),
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let now = self.clock.monotonic_ns();
        self.catch_up(now);
        let port = base.wrapping_add(offset);
        for (i, &byte) in (0u64..).zip(data.iter()) {
            match port.wrapping_add(i) {
                0x70 => {
                    self.index = byte & 0x7f;
                    self.nmi_disabled = byte & 0x80 != 0;
                }
                0x71 => self.write_register(now, self.index, byte),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use emu_core::{Clock, ManualClock, NullIrq, RecordingIrq};

    use super::*;

    /// 2026-11-21 05:00:00 UTC, a Saturday.
    const NOV_21_2026_0500: u64 = 1_795_237_200;
    /// 2000-02-29 00:00:00 UTC, a Tuesday.
    const FEB_29_2000: u64 = 951_782_400;
    const MS: u64 = 1_000_000;

    fn cmos_at(unix: u64) -> (Cmos, Arc<ManualClock>, Arc<RecordingIrq>) {
        let clock = ManualClock::new(unix);
        let irq = Arc::new(RecordingIrq::default());
        let mem = CmosMemoryLayout {
            below_4g_bytes: 128 * MIB,
            above_4g_bytes: 0,
            cpus: 1,
        };
        (Cmos::new(clock.clone(), irq.clone(), mem), clock, irq)
    }

    fn read(cmos: &mut Cmos, reg: u8) -> u8 {
        cmos.write(CMOS_BASE, 0, &[reg]);
        let mut b = [0u8];
        cmos.read(CMOS_BASE, 1, &mut b);
        b[0]
    }

    fn write(cmos: &mut Cmos, reg: u8, value: u8) {
        cmos.write(CMOS_BASE, 0, &[reg, value]);
    }

    fn memory_bytes(mem: CmosMemoryLayout) -> [u8; 128] {
        let cmos = Cmos::new(ManualClock::new(0), Arc::new(NullIrq), mem);
        cmos.regs
    }

    #[test]
    fn civil_date_conversion_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        let t = DateTime::from_unix(FEB_29_2000 as i64);
        assert_eq!((t.year, t.month, t.day, t.weekday), (2000, 2, 29, 2));
        let t = DateTime::from_unix(NOV_21_2026_0500 as i64 + 59);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2026, 11, 21, 5, 0, 59)
        );
        assert_eq!(t.weekday, 6);
        assert_eq!(DateTime::from_unix(-1).year, 1969);
        assert_eq!(DateTime::from_unix(-1).second, 59);
        for days in [-800_000i64, -1, 0, 10_957, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn bcd_time_by_default() {
        let (mut cmos, _, _) = cmos_at(NOV_21_2026_0500 + 7 * 60 + 42);
        assert_eq!(read(&mut cmos, REG_SECONDS), 0x42);
        assert_eq!(read(&mut cmos, REG_MINUTES), 0x07);
        assert_eq!(read(&mut cmos, REG_HOURS), 0x05);
        assert_eq!(read(&mut cmos, REG_DAY_OF_WEEK), 0x07);
        assert_eq!(read(&mut cmos, REG_DAY_OF_MONTH), 0x21);
        assert_eq!(read(&mut cmos, REG_MONTH), 0x11);
        assert_eq!(read(&mut cmos, REG_YEAR), 0x26);
        assert_eq!(read(&mut cmos, REG_CENTURY), 0x20);
    }

    #[test]
    fn binary_time_with_dm_set() {
        let (mut cmos, clock, _) = cmos_at(FEB_29_2000 + 23 * 3600 + 59 * 60 + 59);
        write(&mut cmos, REG_B, REG_B_24_HOUR | REG_B_DM_BINARY);
        assert_eq!(read(&mut cmos, REG_SECONDS), 59);
        assert_eq!(read(&mut cmos, REG_HOURS), 23);
        assert_eq!(read(&mut cmos, REG_DAY_OF_MONTH), 29);
        assert_eq!(read(&mut cmos, REG_MONTH), 2);
        assert_eq!(read(&mut cmos, REG_YEAR), 0);
        assert_eq!(read(&mut cmos, REG_CENTURY), 20);
        clock.advance_ns(1_000_000_000);
        assert_eq!(read(&mut cmos, REG_DAY_OF_MONTH), 1);
        assert_eq!(read(&mut cmos, REG_MONTH), 3);
        assert_eq!(read(&mut cmos, REG_SECONDS), 0);
    }

    #[test]
    fn twelve_hour_mode_sets_pm_bit() {
        let (mut cmos, _, _) = cmos_at(NOV_21_2026_0500 + 12 * 3600);
        write(&mut cmos, REG_B, 0);
        assert_eq!(read(&mut cmos, REG_HOURS), 0x85, "17:00 is 5 PM");
        write(&mut cmos, REG_B, REG_B_DM_BINARY);
        assert_eq!(read(&mut cmos, REG_HOURS), 0x85);
        let (mut cmos, _, _) = cmos_at(NOV_21_2026_0500 - 5 * 3600);
        write(&mut cmos, REG_B, 0);
        assert_eq!(read(&mut cmos, REG_HOURS), 0x12, "midnight is 12 AM");
        let (mut cmos, _, _) = cmos_at(NOV_21_2026_0500 + 7 * 3600);
        write(&mut cmos, REG_B, 0);
        assert_eq!(read(&mut cmos, REG_HOURS), 0x92, "noon is 12 PM");
    }

    #[test]
    fn guest_sets_time_with_set_bit() {
        let (mut cmos, clock, _) = cmos_at(NOV_21_2026_0500);
        write(&mut cmos, REG_B, REG_B_SET | REG_B_24_HOUR);
        clock.advance_ns(3_000_000_000);
        assert_eq!(read(&mut cmos, REG_SECONDS), 0x00, "updates inhibited");
        write(&mut cmos, REG_YEAR, 0x99);
        write(&mut cmos, REG_CENTURY, 0x19);
        write(&mut cmos, REG_MONTH, 0x12);
        write(&mut cmos, REG_DAY_OF_MONTH, 0x31);
        write(&mut cmos, REG_HOURS, 0x23);
        write(&mut cmos, REG_MINUTES, 0x59);
        write(&mut cmos, REG_SECONDS, 0x58);
        write(&mut cmos, REG_B, REG_B_24_HOUR);
        clock.advance_ns(2_500_000_000);
        assert_eq!(read(&mut cmos, REG_SECONDS), 0x00);
        assert_eq!(read(&mut cmos, REG_YEAR), 0x00);
        assert_eq!(read(&mut cmos, REG_CENTURY), 0x20);
        assert_eq!(read(&mut cmos, REG_MONTH), 0x01);
        // A write while running adjusts the offset at once.
        write(&mut cmos, REG_MINUTES, 0x30);
        assert_eq!(read(&mut cmos, REG_MINUTES), 0x30);
        assert_eq!(read(&mut cmos, REG_HOURS), 0x00);
    }

    #[test]
    fn memory_bytes_128m() {
        let r = memory_bytes(CmosMemoryLayout {
            below_4g_bytes: 128 * MIB,
            above_4g_bytes: 0,
            cpus: 2,
        });
        assert_eq!(u16::from_le_bytes([r[0x15], r[0x16]]), 640);
        // 127 MiB above the first one does not fit the 16-bit KiB count.
        assert_eq!(u16::from_le_bytes([r[0x17], r[0x18]]), 0xffff);
        assert_eq!(u16::from_le_bytes([r[0x30], r[0x31]]), 0xffff);
        assert_eq!(u16::from_le_bytes([r[0x34], r[0x35]]), (112 * 16) as u16);
        assert_eq!(&r[0x5b..=0x5d], &[0, 0, 0]);
        assert_eq!(r[0x5f], 1);
        assert_eq!(r[0x10], 0);
        assert_eq!(r[0x14], 0x06);
        assert_eq!(r[0x3d], 0x02);
    }

    #[test]
    fn memory_bytes_32m_and_small() {
        let r = memory_bytes(CmosMemoryLayout {
            below_4g_bytes: 32 * MIB,
            above_4g_bytes: 0,
            cpus: 1,
        });
        assert_eq!(u16::from_le_bytes([r[0x17], r[0x18]]), 31 * 1024);
        assert_eq!(u16::from_le_bytes([r[0x34], r[0x35]]), 16 * 16);
        let r = memory_bytes(CmosMemoryLayout {
            below_4g_bytes: 512 * KIB,
            above_4g_bytes: 0,
            cpus: 1,
        });
        assert_eq!(u16::from_le_bytes([r[0x15], r[0x16]]), 512);
        assert_eq!(u16::from_le_bytes([r[0x17], r[0x18]]), 0);
        assert_eq!(u16::from_le_bytes([r[0x34], r[0x35]]), 0);
    }

    #[test]
    fn memory_bytes_4g_and_6g() {
        // 4 GiB guest: 3 GiB below the PCI hole, 1 GiB above 4 GiB.
        let r = memory_bytes(CmosMemoryLayout {
            below_4g_bytes: 3 * 1024 * MIB,
            above_4g_bytes: 1024 * MIB,
            cpus: 4,
        });
        assert_eq!(u16::from_le_bytes([r[0x17], r[0x18]]), 0xffff);
        assert_eq!(u16::from_le_bytes([r[0x30], r[0x31]]), 0xffff);
        assert_eq!(
            u16::from_le_bytes([r[0x34], r[0x35]]),
            ((3072 - 16) * 16) as u16
        );
        assert_eq!(&r[0x5b..=0x5d], &[0x00, 0x40, 0x00]);
        assert_eq!(r[0x5f], 3);
        let r = memory_bytes(CmosMemoryLayout {
            below_4g_bytes: 3 * 1024 * MIB,
            above_4g_bytes: 3 * 1024 * MIB,
            cpus: 1,
        });
        assert_eq!(&r[0x5b..=0x5d], &[0x00, 0xc0, 0x00]);
        // Beyond 4 GiB of low RAM (never on a PC) the 64 KiB count caps.
        let r = memory_bytes(CmosMemoryLayout {
            below_4g_bytes: 8 * 1024 * MIB,
            above_4g_bytes: 0,
            cpus: 0,
        });
        assert_eq!(u16::from_le_bytes([r[0x34], r[0x35]]), 0xffff);
        assert_eq!(r[0x5f], 0);
    }

    #[test]
    fn checksum_covers_0x10_to_0x2d() {
        let r = memory_bytes(CmosMemoryLayout {
            below_4g_bytes: 128 * MIB,
            above_4g_bytes: 0,
            cpus: 1,
        });
        let sum: u16 = r[0x10..=0x2d].iter().map(|&b| u16::from(b)).sum();
        assert_ne!(sum, 0);
        assert_eq!(u16::from_be_bytes([r[0x2e], r[0x2f]]), sum);
    }

    #[test]
    fn nmi_bit_does_not_select_registers() {
        let (mut cmos, _, _) = cmos_at(NOV_21_2026_0500);
        cmos.write(CMOS_BASE, 0, &[0x80 | REG_B]);
        assert!(cmos.nmi_disabled());
        let mut b = [0u8];
        cmos.read(CMOS_BASE, 1, &mut b);
        assert_eq!(b[0], REG_B_24_HOUR);
        cmos.write(CMOS_BASE, 0, &[0x80 | 0x40]);
        cmos.write(CMOS_BASE, 1, &[0x5a]);
        assert_eq!(read(&mut cmos, 0x40), 0x5a);
        assert!(!cmos.nmi_disabled());
        cmos.read(CMOS_BASE, 0, &mut b);
        assert_eq!(b[0], 0xff, "the index port is write-only");
    }

    #[test]
    fn registers_a_and_d() {
        let (mut cmos, clock, _) = cmos_at(NOV_21_2026_0500);
        assert_eq!(read(&mut cmos, REG_A), 0x26);
        assert_eq!(read(&mut cmos, REG_D), 0x80);
        write(&mut cmos, REG_D, 0);
        assert_eq!(read(&mut cmos, REG_D), 0x80);
        clock.advance_ns(1_000_000_000 - 244_000 - 1);
        assert_eq!(read(&mut cmos, REG_A) & REG_A_UIP, 0);
        clock.advance_ns(1);
        assert_eq!(read(&mut cmos, REG_A) & REG_A_UIP, REG_A_UIP);
        assert_eq!(
            read(&mut cmos, REG_SECONDS),
            0x00,
            "registers change at the update"
        );
        clock.advance_ns(244_000);
        assert_eq!(read(&mut cmos, REG_A) & REG_A_UIP, 0);
        assert_eq!(read(&mut cmos, REG_SECONDS), 0x01);
        write(&mut cmos, REG_A, 0xff);
        assert_eq!(read(&mut cmos, REG_A) & 0x7f, 0x7f);
    }

    #[test]
    fn register_c_clears_on_read_and_lowers_irq() {
        let (mut cmos, clock, irq) = cmos_at(NOV_21_2026_0500);
        write(&mut cmos, REG_B, REG_B_24_HOUR | REG_B_UIE);
        clock.advance_ns(1_000_000_000);
        cmos.tick();
        assert!(irq.level());
        assert_eq!(cmos.next_deadline_ns(), None);
        assert_eq!(read(&mut cmos, REG_C), REG_C_IRQF | REG_C_UF | REG_C_PF);
        assert!(!irq.level());
        assert_eq!(read(&mut cmos, REG_C), 0);
        assert_eq!(cmos.next_deadline_ns(), Some(2_000_000_000));
    }

    #[test]
    fn periodic_interrupt_edges() {
        let (mut cmos, clock, irq) = cmos_at(NOV_21_2026_0500);
        write(&mut cmos, REG_B, REG_B_24_HOUR | REG_B_PIE);
        // RS = 6: 1024 Hz, a period of 976.5625 us.
        assert_eq!(cmos.next_deadline_ns(), Some(976_563));
        for i in 1..=8u64 {
            let deadline = cmos.next_deadline_ns().unwrap();
            clock.advance_ns(deadline - clock.monotonic_ns());
            cmos.tick();
            assert!(irq.level());
            assert_eq!(
                read(&mut cmos, REG_C) & (REG_C_IRQF | REG_C_PF),
                REG_C_IRQF | REG_C_PF
            );
            assert_eq!(u64::from(irq.rising_edges()), i);
        }
        // No PIE: PF still sets, IRQ8 stays low.
        write(&mut cmos, REG_B, REG_B_24_HOUR);
        assert_eq!(cmos.next_deadline_ns(), None);
        clock.advance_ns(MS);
        cmos.tick();
        assert!(!irq.level());
        assert_eq!(read(&mut cmos, REG_C), REG_C_PF);
        // Rate 15: 2 Hz.
        write(&mut cmos, REG_A, 0x2f);
        write(&mut cmos, REG_B, REG_B_24_HOUR | REG_B_PIE);
        let now = clock.monotonic_ns();
        assert_eq!(cmos.next_deadline_ns(), Some(500_000_000.max(now)));
        // Divider held in reset: no periodic interrupt.
        write(&mut cmos, REG_A, 0x6f);
        assert_eq!(cmos.next_deadline_ns(), None);
    }

    #[test]
    fn alarm_interrupt() {
        let (mut cmos, clock, irq) = cmos_at(NOV_21_2026_0500);
        write(&mut cmos, REG_SECONDS_ALARM, 0x03);
        write(&mut cmos, REG_MINUTES_ALARM, 0xc0);
        write(&mut cmos, REG_HOURS_ALARM, 0xff);
        write(&mut cmos, REG_B, REG_B_24_HOUR | REG_B_AIE);
        for _ in 0..2 {
            clock.advance_ns(cmos.next_deadline_ns().unwrap() - clock.monotonic_ns());
            cmos.tick();
            assert!(!irq.level());
        }
        clock.advance_ns(cmos.next_deadline_ns().unwrap() - clock.monotonic_ns());
        cmos.tick();
        assert!(irq.level());
        assert_eq!(
            read(&mut cmos, REG_C) & (REG_C_IRQF | REG_C_AF),
            REG_C_IRQF | REG_C_AF
        );
    }

    #[test]
    fn set_bit_clears_uie() {
        let (mut cmos, _, _) = cmos_at(NOV_21_2026_0500);
        write(&mut cmos, REG_B, REG_B_SET | REG_B_UIE | REG_B_24_HOUR);
        assert_eq!(read(&mut cmos, REG_B), REG_B_SET | REG_B_24_HOUR);
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let (mut cmos, _, _) = cmos_at(0);
        let mut d = [0u8; 4];
        cmos.read(CMOS_BASE, 0, &mut d);
        cmos.write(CMOS_BASE, 1, &[0xff, 0xff, 0xff, 0xff]);
        cmos.read(u64::MAX, 1, &mut d);
        // Garbage in the time registers while SET is held.
        write(&mut cmos, REG_B, REG_B_SET);
        for reg in [0u8, 2, 4, 6, 7, 8, 9, 0x32] {
            write(&mut cmos, reg, 0xff);
        }
        write(&mut cmos, REG_B, 0);
        for reg in 0..0x80u8 {
            read(&mut cmos, reg);
        }
        write(&mut cmos, REG_B, REG_B_DM_BINARY);
        for reg in [0u8, 2, 4, 7, 8, 9, 0x32] {
            write(&mut cmos, reg, 0xff);
        }
        read(&mut cmos, REG_YEAR);
    }
}
