//! Hardware task switching (SDM Vol. 3A, chapter 7): JMP and CALL to a TSS
//! descriptor or a task gate, interrupts and exceptions through a task gate
//! in the IDT, and IRET with NT set. Only 32-bit TSSs are switched to and
//! from; long mode has no task switching (its far transfers never get
//! here).
//!
//! The switch checks the new TSS, reads its image and saves the current
//! task before the commit point, so a fault up to there leaves the old
//! task as it was. After the commit point (TR, CR0.TS, CR3, the registers
//! and EFLAGS loaded) the segment descriptors are checked and loaded, and
//! a fault there is raised in the context of the new task, as the SDM says
//! (section 7.3, Table 7-1).
//!
//! Not modelled: 16-bit TSSs, the debug trap (T) bit of the TSS, and the
//! processor's reading of the I/O bitmap base (that happens at IN/OUT time
//! from TR, which is current after the switch).

use crate::cpu::{cr0, flags, seg, Segment};

use super::super::fault::{Fault, R};
use super::super::segment::{descriptor_to_segment, is_code, is_writable_data, sel_code, sys};
use super::super::Interpreter;

/// What started a task switch: it decides the busy bits, NT and the back
/// link (SDM Vol. 3A, Table 7-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TaskSwitch {
    /// A far JMP to a TSS or task gate.
    Jmp,
    /// A far CALL to a TSS or task gate.
    Call,
    /// IRET with NT set, back to the task in the back link.
    Iret,
    /// An interrupt or exception through a task gate.
    Interrupt,
}

/// Field offsets in a 32-bit TSS.
mod tss {
    /// The previous task link.
    pub const LINK: u64 = 0x00;
    /// CR3 (the page-directory base).
    pub const CR3: u64 = 0x1c;
    /// EIP.
    pub const EIP: u64 = 0x20;
    /// EFLAGS.
    pub const EFLAGS: u64 = 0x24;
    /// EAX; ECX, EDX, EBX, ESP, EBP, ESI and EDI follow, 4 bytes apart
    /// (the encoding order, as `CpuState::gpr`).
    pub const GPRS: u64 = 0x28;
    /// ES; CS, SS, DS, FS and GS follow, 4 bytes apart (the encoding
    /// order, as `CpuState::segs`).
    pub const SEGS: u64 = 0x48;
    /// The LDT selector.
    pub const LDT: u64 = 0x60;
    /// The smallest limit of a 32-bit TSS.
    pub const MIN_LIMIT: u32 = 0x67;
    /// The smallest limit of the old TSS: the state saved ends with GS.
    pub const MIN_SAVE_LIMIT: u32 = 0x5f;
}

/// CR0.TS.
const CR0_TS: u64 = 1 << 3;

/// The new task's image, as read before the commit point.
struct Image {
    cr3: u64,
    eip: u64,
    eflags: u64,
    gprs: [u64; 8],
    segs: [u16; 6],
    ldt: u16,
}

impl Interpreter {
    fn tss_addr(base: u64, off: u64) -> u64 {
        base.wrapping_add(off) & 0xffff_ffff
    }

    /// Switches to the task whose TSS descriptor (at `addr`, bytes `raw`)
    /// `selector` names. The caller has checked the descriptor's type,
    /// privilege and presence. `eip` is where the old task resumes; `ext`
    /// is the EXT bit for error codes (an external interrupt).
    pub(crate) fn task_switch(&mut self, selector: u16, addr: u64, raw: u64, why: TaskSwitch, eip: u64, ext: u32) -> R<()> {
        let new = descriptor_to_segment(selector, raw);
        let old = self.s.tr;
        if new.type_ & 0x8 == 0 || old.type_ & 0x8 == 0 {
            return Err(Fault::unimplemented("task switches to or from a 16-bit TSS"));
        }
        if new.limit < tss::MIN_LIMIT {
            return Err(Fault::ts(sel_code(selector) | ext));
        }
        if old.limit < tss::MIN_SAVE_LIMIT {
            return Err(Fault::ts(sel_code(old.selector) | ext));
        }
        let img = self.read_task_image(new.base)?;

        // Save the current task (its dynamic fields only).
        let mut old_flags = self.s.flags();
        if why == TaskSwitch::Iret {
            old_flags &= !flags::NT;
        }
        self.write_linear_implicit(Self::tss_addr(old.base, tss::EIP), 4, eip & 0xffff_ffff)?;
        self.write_linear_implicit(Self::tss_addr(old.base, tss::EFLAGS), 4, old_flags & 0xffff_ffff)?;
        for i in 0..8 {
            let v = self.s.gpr[i] & 0xffff_ffff;
            self.write_linear_implicit(Self::tss_addr(old.base, tss::GPRS + 4 * i as u64), 4, v)?;
        }
        for i in 0..6 {
            let v = u64::from(self.s.segs[i].selector);
            self.write_linear_implicit(Self::tss_addr(old.base, tss::SEGS + 4 * i as u64), 2, v)?;
        }

        // Busy bits and the back link.
        if matches!(why, TaskSwitch::Jmp | TaskSwitch::Iret) {
            self.set_tss_busy(old.selector, false)?;
        }
        if matches!(why, TaskSwitch::Call | TaskSwitch::Interrupt) {
            self.write_linear_implicit(Self::tss_addr(new.base, tss::LINK), 2, u64::from(old.selector))?;
        }
        if why != TaskSwitch::Iret {
            self.write_linear_implicit(addr.wrapping_add(5), 1, ((raw >> 40) & 0xff) | 0x2)?;
        }

        // The commit point: from here on, faults belong to the new task.
        self.s.tr = descriptor_to_segment(selector, raw | 2 << 40);
        self.s.cr0 |= CR0_TS;
        if self.s.cr0 & cr0::PG != 0 {
            self.s.cr3 = img.cr3;
            self.tlb.flush(false);
        }
        self.s.gpr[..8].copy_from_slice(&img.gprs);
        let mut eflags = img.eflags;
        if matches!(why, TaskSwitch::Call | TaskSwitch::Interrupt) {
            eflags |= flags::NT;
        }
        self.s.set_flags(eflags);
        self.s.rip = img.eip;
        self.next_rip = img.eip;
        // Local breakpoints are per task.
        self.s.dr[7] &= !0x55;
        let vm86 = eflags & flags::VM != 0;
        let cpl = if vm86 { 3 } else { (img.segs[seg::CS] & 3) as u8 };
        // Until their descriptors are checked, the segment registers hold
        // the new selectors with unusable caches.
        for (i, sel) in img.segs.iter().enumerate() {
            self.s.segs[i] = Segment { selector: *sel, unusable: 1, dpl: if i == seg::CS { cpl } else { 0 }, ..Segment::default() };
        }
        self.s.ldtr = Segment { selector: img.ldt, unusable: 1, ..Segment::default() };
        self.load_task_segments(&img, vm86, ext)?;
        if img.eip > u64::from(self.s.segs[seg::CS].limit) {
            return Err(Fault::gp(ext));
        }
        Ok(())
    }

    fn read_task_image(&mut self, base: u64) -> R<Image> {
        let dw = |cpu: &mut Self, off: u64| cpu.read_linear_implicit(Self::tss_addr(base, off), 4);
        let cr3 = dw(self, tss::CR3)?;
        let eip = dw(self, tss::EIP)?;
        let eflags = dw(self, tss::EFLAGS)?;
        let mut gprs = [0u64; 8];
        for (i, g) in gprs.iter_mut().enumerate() {
            *g = dw(self, tss::GPRS + 4 * i as u64)?;
        }
        let mut segs = [0u16; 6];
        for (i, s) in segs.iter_mut().enumerate() {
            *s = dw(self, tss::SEGS + 4 * i as u64)? as u16;
        }
        let ldt = dw(self, tss::LDT)? as u16;
        Ok(Image { cr3, eip, eflags, gprs, segs, ldt })
    }

    /// Sets or clears the busy bit of the TSS descriptor `selector` names
    /// in the GDT (nothing when it names no TSS descriptor).
    fn set_tss_busy(&mut self, selector: u16, busy: bool) -> R<()> {
        if selector & 0xfffc == 0 || selector & 4 != 0 {
            return Ok(());
        }
        let Some(addr) = self.descriptor_addr(selector, 8) else { return Ok(()) };
        let access = self.read_linear_implicit(addr.wrapping_add(5), 1)?;
        let type_ = (access & 0xf) as u8;
        if access & 0x10 != 0 || !matches!(type_, sys::TSS16 | sys::TSS16_BUSY | sys::TSS32 | sys::TSS32_BUSY) {
            return Ok(());
        }
        let new = if busy { access | 0x2 } else { access & !0x2 };
        self.write_linear_implicit(addr.wrapping_add(5), 1, new)
    }

    /// A descriptor for the new task's segments: null selectors and those
    /// beyond their table are #TS(selector).
    fn task_descriptor(&mut self, selector: u16, ext: u32) -> R<(u64, u64)> {
        let ts = Fault::ts(sel_code(selector) | ext);
        if selector & 0xfffc == 0 {
            return Err(ts);
        }
        let addr = self.descriptor_addr(selector, 8).ok_or(ts)?;
        Ok((addr, self.read_linear_implicit(addr, 8)?))
    }

    /// Loads and checks LDTR and the segment registers of the new task, in
    /// the order of the SDM's Table 7-1.
    fn load_task_segments(&mut self, img: &Image, vm86: bool, ext: u32) -> R<()> {
        let ts = |sel: u16| Fault::ts(sel_code(sel) | ext);
        if img.ldt & 0xfffc != 0 {
            if img.ldt & 4 != 0 {
                return Err(ts(img.ldt));
            }
            let (_, raw) = self.task_descriptor(img.ldt, ext)?;
            let d = descriptor_to_segment(img.ldt, raw);
            if d.s != 0 || d.type_ != sys::LDT || d.present == 0 {
                return Err(ts(img.ldt));
            }
            self.s.ldtr = d;
        }
        if vm86 {
            for (i, sel) in img.segs.iter().enumerate() {
                let code = i == seg::CS;
                self.s.segs[i] = Segment { dpl: 3, ..Segment::real_mode(*sel, code) };
            }
            return Ok(());
        }
        // CS: its RPL is the new CPL.
        let cs_sel = img.segs[seg::CS];
        let cpl = (cs_sel & 3) as u8;
        let (addr, raw) = self.task_descriptor(cs_sel, ext)?;
        let d = descriptor_to_segment(cs_sel, raw);
        let conforming = d.type_ & 0x4 != 0;
        if !is_code(&d) || (conforming && d.dpl > cpl) || (!conforming && d.dpl != cpl) {
            return Err(ts(cs_sel));
        }
        if d.present == 0 {
            return Err(Fault::np(sel_code(cs_sel) | ext));
        }
        self.set_accessed(addr, raw)?;
        let mut cs = descriptor_to_segment(cs_sel, raw | 1 << 40);
        cs.dpl = cpl;
        self.s.segs[seg::CS] = cs;
        // SS.
        let ss_sel = img.segs[seg::SS];
        let (addr, raw) = self.task_descriptor(ss_sel, ext)?;
        let d = descriptor_to_segment(ss_sel, raw);
        if !is_writable_data(&d) || d.dpl != cpl || (ss_sel & 3) as u8 != cpl {
            return Err(ts(ss_sel));
        }
        if d.present == 0 {
            return Err(Fault::ss(sel_code(ss_sel) | ext));
        }
        self.set_accessed(addr, raw)?;
        self.s.segs[seg::SS] = descriptor_to_segment(ss_sel, raw | 1 << 40);
        // The data segments.
        for sreg in [seg::ES, seg::DS, seg::FS, seg::GS] {
            let sel = img.segs[sreg];
            if sel & 0xfffc == 0 {
                continue;
            }
            let (addr, raw) = self.task_descriptor(sel, ext)?;
            let d = descriptor_to_segment(sel, raw);
            let readable = d.s != 0 && (d.type_ & 0x8 == 0 || d.type_ & 0x2 != 0);
            let conforming_code = d.type_ & 0xc == 0xc;
            if !readable || (!conforming_code && (d.dpl < cpl || d.dpl < (sel & 3) as u8)) {
                return Err(ts(sel));
            }
            if d.present == 0 {
                return Err(Fault::np(sel_code(sel) | ext));
            }
            self.set_accessed(addr, raw)?;
            self.s.segs[sreg] = descriptor_to_segment(sel, raw | 1 << 40);
        }
        Ok(())
    }

    /// IRET with NT set (protected mode): back to the task in the current
    /// TSS's back link, which must name a busy TSS in the GDT.
    pub(crate) fn task_return(&mut self) -> R<()> {
        let tr = self.s.tr;
        let link = self.read_linear_implicit(Self::tss_addr(tr.base, tss::LINK), 2)? as u16;
        let code = sel_code(link);
        if link & 4 != 0 {
            return Err(Fault::ts(code));
        }
        let addr = self.descriptor_addr(link, 8).ok_or(Fault::ts(code))?;
        let raw = self.read_linear_implicit(addr, 8)?;
        let d = descriptor_to_segment(link, raw);
        if d.s != 0 || !(d.type_ == sys::TSS16_BUSY || d.type_ == sys::TSS32_BUSY) {
            return Err(Fault::ts(code));
        }
        if d.present == 0 {
            return Err(Fault::np(code));
        }
        let eip = self.next_rip;
        self.task_switch(link, addr, raw, TaskSwitch::Iret, eip, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::tss;

    #[test]
    fn tss_layout_matches_the_sdm() {
        // SDM Vol. 3A, Figure 7-2.
        assert_eq!(tss::GPRS + 4 * crate::cpu::reg::RSP as u64, 0x38);
        assert_eq!(tss::GPRS + 4 * crate::cpu::reg::RDI as u64, 0x44);
        assert_eq!(tss::SEGS + 4 * crate::cpu::seg::GS as u64, 0x5c);
        assert_eq!(tss::LDT, 0x60);
    }
}
