//! Memory access: segment checks turn an offset into a linear address, the
//! soft TLB (or a page walk) turns that into a host pointer, and whatever
//! is not RAM or ROM goes to the MMIO bus.

use crate::cpu::{cr0, flags, seg};
use crate::mmu::{self, Access, PagingMode, Requester};

use super::fault::{vector, Fault, R};
use super::Interpreter;

const PAGE: u64 = 4096;

impl Interpreter {
    pub(crate) fn paging_mode(&self) -> PagingMode {
        PagingMode { cr0: self.s.cr0, cr3: self.s.cr3, cr4: self.s.cr4, efer: self.s.efer }
    }

    pub(crate) fn in_64bit_mode(&self) -> bool {
        self.s.long_mode() && self.s.segs[seg::CS].l != 0
    }

    pub(crate) fn protected_mode(&self) -> bool {
        self.s.cr0 & cr0::PE != 0
    }

    pub(crate) fn vm86(&self) -> bool {
        self.protected_mode() && self.s.rflags & flags::VM != 0
    }

    /// Whether data accesses count as user-mode accesses for paging.
    #[inline]
    fn user_access(&self) -> bool {
        self.s.cpl() == 3
    }

    /// Whether an access may use (and fill) the soft TLB: every explicit
    /// one, and implicit supervisor accesses (descriptor tables, the TSS)
    /// unless SMAP is on. Those are then plain supervisor accesses (the
    /// supervisor set); under SMAP they differ from explicit ones with
    /// EFLAGS.AC set, which the TLB does not tell apart. Interrupt and
    /// exception delivery walked the page tables for every descriptor
    /// read before.
    #[inline]
    fn tlb_usable(&self, implicit: bool) -> bool {
        !implicit || self.s.cr4 & crate::mmu::cr4::SMAP == 0
    }

    /// Checks a data access of `size` bytes at `offset` in segment `sreg`
    /// and returns its linear address.
    #[inline]
    pub(crate) fn linear(&self, sreg: usize, offset: u64, size: u64, access: Access) -> R<u64> {
        let sg = &self.s.segs[sreg];
        let fault = |code| if sreg == seg::SS { Fault::ss(code) } else { Fault::gp(code) };
        if self.in_64bit_mode() {
            let base = if sreg == seg::FS || sreg == seg::GS { sg.base } else { 0 };
            let lin = base.wrapping_add(offset);
            if !is_canonical(lin) || !is_canonical(lin.wrapping_add(size - 1)) {
                return Err(fault(0));
            }
            return Ok(lin);
        }
        if self.protected_mode() && !self.vm86() {
            if sg.unusable != 0 || sg.present == 0 {
                return Err(fault(0));
            }
            let code = sg.type_ & 0x8 != 0;
            let ok = match access {
                Access::Write => !code && sg.type_ & 0x2 != 0,
                Access::Read => !code || sg.type_ & 0x2 != 0,
                Access::Execute => code,
            };
            if !ok {
                return Err(fault(0));
            }
        }
        let last = offset.wrapping_add(size - 1);
        let expand_down = sg.type_ & 0xc == 0x4 && self.protected_mode();
        let in_limit = if expand_down {
            let upper = if sg.db != 0 { 0xffff_ffff } else { 0xffff };
            offset > u64::from(sg.limit) && last <= upper && last >= offset
        } else {
            last <= u64::from(sg.limit) && last >= offset
        };
        if !in_limit {
            return Err(fault(0));
        }
        Ok(sg.base.wrapping_add(offset) & 0xffff_ffff)
    }

    /// The host pointer for `linear` when it is RAM (or ROM, for reads),
    /// filling the TLB; `None` for MMIO. Raises #PF.
    fn translate(&mut self, linear: u64, access: Access, implicit: bool) -> R<(u64, Option<*mut u8>)> {
        let user = !implicit && self.user_access();
        let who = Requester { user, ac: self.s.rflags & flags::AC != 0, implicit };
        let t = match mmu::translate(&self.mem, &self.paging_mode(), linear, access, who) {
            Ok(t) => t,
            Err(pf) => {
                self.s.cr2 = linear;
                return Err(Fault::pf(pf.error_code));
            }
        };
        let phys_page = t.phys & !(PAGE - 1);
        let host = self.mem.host_range(phys_page, PAGE);
        let rom = host.is_some() && !self.mem.ram_regions().iter().any(|r| phys_page >= r.guest_start && phys_page < r.guest_end());
        // A page holding cached code gets no write tag: its writes come
        // back here and through `code_write`, which drops the code they
        // overwrite.
        let code_page = self.code.is_code_page(phys_page >> 12);
        if self.tlb_usable(implicit) {
            self.tlb.fill(linear, host.unwrap_or(std::ptr::null_mut()), phys_page >> 12, &t, user, rom, code_page);
        }
        if rom && access == Access::Write {
            // Writes to ROM are dropped, as on the real bus.
            return Ok((t.phys, None));
        }
        Ok((t.phys, host.map(|h| {
            // SAFETY: `host` maps the whole page holding `t.phys`.
            unsafe { h.add((t.phys & (PAGE - 1)) as usize) }
        })))
    }

    /// Reads `size` (1..=8) bytes at a linear address.
    pub(crate) fn read_linear(&mut self, linear: u64, size: usize, access: Access) -> R<u64> {
        self.read_linear_as(linear, size, access, false)
    }

    /// Reads for an implicit supervisor access (descriptor tables, TSS).
    pub(crate) fn read_linear_implicit(&mut self, linear: u64, size: usize) -> R<u64> {
        self.read_linear_as(linear, size, Access::Read, true)
    }

    fn read_linear_as(&mut self, linear: u64, size: usize, access: Access, implicit: bool) -> R<u64> {
        let user = !implicit && self.user_access();
        if (linear & (PAGE - 1)) as usize + size <= PAGE as usize {
            if self.tlb_usable(implicit) {
                if let Some(p) = self.tlb.lookup(linear, access, user) {
                    return Ok(read_host(p, size));
                }
            }
            let (phys, host) = self.translate(linear, access, implicit)?;
            return Ok(match host {
                Some(p) => read_host(p, size),
                None => self.read_mmio(phys, size),
            });
        }
        // Crossing a page: byte by byte, both pages checked first.
        self.translate(linear, access, implicit)?;
        self.translate(second_page(linear, size), access, implicit)?;
        let mut v = 0u64;
        for i in (0..size).rev() {
            v = v << 8 | self.read_linear_as(linear.wrapping_add(i as u64), 1, access, implicit)?;
        }
        Ok(v)
    }

    /// Writes `size` (1..=8) bytes at a linear address.
    pub(crate) fn write_linear(&mut self, linear: u64, size: usize, value: u64) -> R<()> {
        self.write_linear_as(linear, size, value, false)
    }

    /// Writes for an implicit supervisor access (descriptor accessed bits,
    /// TSS busy bits).
    pub(crate) fn write_linear_implicit(&mut self, linear: u64, size: usize, value: u64) -> R<()> {
        self.write_linear_as(linear, size, value, true)
    }

    fn write_linear_as(&mut self, linear: u64, size: usize, value: u64, implicit: bool) -> R<()> {
        let user = !implicit && self.user_access();
        if (linear & (PAGE - 1)) as usize + size <= PAGE as usize {
            if self.tlb_usable(implicit) {
                if let Some(p) = self.tlb.lookup(linear, Access::Write, user) {
                    self.journal_write(linear, p, size);
                    write_host(p, size, value);
                    return Ok(());
                }
            }
            let (phys, host) = self.translate(linear, Access::Write, implicit)?;
            match host {
                Some(p) => {
                    self.code_write(phys, p, size);
                    self.journal_write(linear, p, size);
                    write_host(p, size, value);
                }
                None => self.write_mmio(phys, size, value),
            }
            return Ok(());
        }
        self.translate(linear, Access::Write, implicit)?;
        self.translate(second_page(linear, size), Access::Write, implicit)?;
        for i in 0..size {
            self.write_linear_as(linear.wrapping_add(i as u64), 1, value >> (8 * i), implicit)?;
        }
        Ok(())
    }

    /// Drops the cached code that a write of `size` bytes at guest-physical
    /// `phys` (host address `host`, within one page) overwrites; the
    /// generation moves when any goes.
    fn code_write(&mut self, phys: u64, host: *mut u8, size: usize) {
        let page = phys >> 12;
        if self.code.is_code_page(page) {
            let host = host as u64;
            self.code.invalidate_range(page, host & !(PAGE - 1), host & (PAGE - 1), size as u64);
        }
    }

    /// Everything `write_mem` does before it writes: the segment, alignment
    /// and page checks, with the TLB filled and the cached code the write
    /// overwrites dropped, as the write would drop it. Whether the bytes are all RAM
    /// (false for MMIO and ROM, which only `write_mem` may write).
    pub(crate) fn prepare_write(&mut self, sreg: usize, offset: u64, size: usize) -> R<bool> {
        let lin = self.linear(sreg, offset, size as u64, Access::Write)?;
        if self.s.rflags & flags::AC != 0 {
            self.check_alignment(lin, size)?;
        }
        self.probe_write(lin, size)
    }

    /// Checks that a write of `size` bytes at `linear` would succeed,
    /// without writing (for instructions that must not fault half-way),
    /// filling the TLB and dropping the cached code it overwrites as the
    /// write would; whether every byte is RAM (not MMIO or ROM). A TLB hit
    /// for writing is RAM without cached code.
    pub(crate) fn probe_write(&mut self, linear: u64, size: usize) -> R<bool> {
        let user = self.user_access();
        let mut ram = true;
        let last = linear.wrapping_add(size as u64 - 1);
        let in_first = if last >> 12 == linear >> 12 { size } else { (PAGE - (linear & (PAGE - 1))) as usize };
        if self.tlb.lookup(linear, Access::Write, user).is_none() {
            let (phys, host) = self.translate(linear, Access::Write, false)?;
            if let Some(p) = host {
                self.code_write(phys, p, in_first);
            }
            ram &= host.is_some();
        }
        if last >> 12 != linear >> 12 && self.tlb.lookup(last, Access::Write, user).is_none() {
            let (phys, host) = self.translate(second_page(linear, size), Access::Write, false)?;
            if let Some(p) = host {
                self.code_write(phys, p, size - in_first);
            }
            ram &= host.is_some();
        }
        Ok(ram)
    }

    fn read_mmio(&mut self, phys: u64, size: usize) -> u64 {
        let mut buf = [0u8; 8];
        super::bump(&self.counters.mmio);
        self.mmio.read(phys, &mut buf[..size]);
        self.drop_code_written_by_devices();
        u64::from_le_bytes(buf)
    }

    fn write_mmio(&mut self, phys: u64, size: usize, value: u64) {
        super::bump(&self.counters.mmio);
        self.mmio.write(phys, &value.to_le_bytes()[..size]);
        self.drop_code_written_by_devices();
    }

    /// Drops the cached code under what devices wrote to memory (DMA, as
    /// fw_cfg's) since the last look: called after every port and MMIO
    /// access, the only way a device runs on the vCPU's thread. Code the
    /// CPU is running is dropped as a guest store would drop it.
    pub(crate) fn drop_code_written_by_devices(&mut self) {
        let Some(writes) = self.mem.take_device_writes() else { return };
        if writes.all {
            self.flush_code();
            return;
        }
        for (addr, len) in writes.ranges {
            let end = addr.saturating_add(len);
            let mut at = addr;
            while at < end {
                let in_page = (PAGE - (at & (PAGE - 1))).min(end - at);
                if let Some(host) = self.mem.host_range(at, in_page) {
                    self.code_write(at, host, in_page as usize);
                }
                at += in_page;
            }
        }
    }

    /// Reads through segment `sreg`.
    #[inline]
    pub(crate) fn read_mem(&mut self, sreg: usize, offset: u64, size: usize) -> R<u64> {
        let lin = self.linear(sreg, offset, size as u64, Access::Read)?;
        if self.s.rflags & flags::AC != 0 {
            self.check_alignment(lin, size)?;
        }
        // The common case inline: within one page and in the TLB.
        if (lin & (PAGE - 1)) as usize + size <= PAGE as usize {
            if let Some(p) = self.tlb.lookup(lin, Access::Read, self.user_access()) {
                return Ok(read_host(p, size));
            }
        }
        self.read_linear(lin, size, Access::Read)
    }

    /// Writes through segment `sreg`.
    #[inline]
    pub(crate) fn write_mem(&mut self, sreg: usize, offset: u64, size: usize, value: u64) -> R<()> {
        let lin = self.linear(sreg, offset, size as u64, Access::Write)?;
        if self.s.rflags & flags::AC != 0 {
            self.check_alignment(lin, size)?;
        }
        if (lin & (PAGE - 1)) as usize + size <= PAGE as usize {
            if let Some(p) = self.tlb.lookup(lin, Access::Write, self.user_access()) {
                self.journal_write(lin, p, size);
                write_host(p, size, value);
                return Ok(());
            }
        }
        self.write_linear(lin, size, value)
    }

    /// For a bulk string operation: how many of `count` elements of `size`
    /// bytes from `offset` in segment `sreg`, going up (or down), lie in
    /// the page of the first, and the first one's host address, when the
    /// TLB holds that page for `access`. `None` sends the caller to the
    /// element-by-element path, which raises whatever the first element
    /// must raise: a TLB miss, MMIO, a write to a page holding code, an
    /// element across pages, a segment or canonical check failing anywhere
    /// in the span, alignment checking on, or a lockstep run journaling
    /// writes.
    pub(crate) fn bulk_span(&self, sreg: usize, offset: u64, size: usize, count: u64, down: bool, access: Access) -> Option<(*mut u8, u64)> {
        if self.s.rflags & flags::AC != 0 || (access == Access::Write && self.journaling()) {
            return None;
        }
        let lin = self.linear(sreg, offset, size as u64, access).ok()?;
        let in_page = lin & (PAGE - 1);
        let room = match down {
            false => (PAGE - in_page) / size as u64,
            true if in_page + size as u64 <= PAGE => in_page / size as u64 + 1,
            true => 0,
        };
        let elements = count.min(room);
        if elements == 0 {
            return None;
        }
        let span = elements * size as u64;
        let lowest = if down { offset.checked_sub(span - size as u64)? } else { offset };
        self.linear(sreg, lowest, span, access).ok()?;
        let host = self.tlb.lookup(lin, access, self.user_access())?;
        Some((host, elements))
    }

    /// #AC: CR0.AM, EFLAGS.AC and CPL 3 together enable alignment checks.
    fn check_alignment(&self, lin: u64, size: usize) -> R<()> {
        if size > 1
            && lin & (size as u64 - 1) != 0
            && self.s.cr0 & (1 << 18) != 0
            && self.s.rflags & flags::AC != 0
            && self.s.cpl() == 3
        {
            return Err(Fault::exception(vector::AC).with_zero_code());
        }
        Ok(())
    }

}

impl Fault {
    /// The same exception with error code 0.
    pub(crate) fn with_zero_code(self) -> Self {
        match self {
            Fault::Exception(mut e) => {
                e.error_code = Some(0);
                Fault::Exception(e)
            }
            other => other,
        }
    }
}

/// Whether a 64-bit address is canonical (48-bit virtual addresses).
pub(crate) fn is_canonical(addr: u64) -> bool {
    ((addr as i64) << 16 >> 16) as u64 == addr
}

#[inline]
pub(super) fn read_host(p: *mut u8, size: usize) -> u64 {
    // SAFETY: `p..p+size` lies inside one guest page of a live mapping
    // (the TLB or the walk found it). Unaligned loads of the access's own
    // width (a plain memcpy call for a variable size would dominate);
    // guest memory may change under us, which only changes the value.
    unsafe {
        match size {
            1 => u64::from(p.read()),
            2 => u64::from(u16::from_le(p.cast::<u16>().read_unaligned())),
            4 => u64::from(u32::from_le(p.cast::<u32>().read_unaligned())),
            8 => u64::from_le(p.cast::<u64>().read_unaligned()),
            _ => {
                let mut buf = [0u8; 8];
                std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), size.min(8));
                u64::from_le_bytes(buf)
            }
        }
    }
}

#[inline]
pub(super) fn write_host(p: *mut u8, size: usize, value: u64) {
    // SAFETY: as in `read_host`; the TLB gives write tags only to
    // writable RAM pages.
    unsafe {
        match size {
            1 => p.write(value as u8),
            2 => p.cast::<u16>().write_unaligned((value as u16).to_le()),
            4 => p.cast::<u32>().write_unaligned((value as u32).to_le()),
            8 => p.cast::<u64>().write_unaligned(value.to_le()),
            _ => {
                let bytes = value.to_le_bytes();
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, size.min(8));
            }
        }
    }
}

/// The first byte of the second page an access of `size` at `linear`
/// touches: where a page-crossing access faults (CR2), as hardware reports
/// it (the host's SIGSEGV address for such a read is that page's start).
fn second_page(linear: u64, size: usize) -> u64 {
    linear.wrapping_add(size as u64 - 1) & !(PAGE - 1)
}
