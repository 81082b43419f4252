//! Segment descriptors, segment-register loads with their protection
//! checks, and far transfers (JMP, CALL, RET, IRET) between code segments
//! (SDM Vol. 3A, chapters 3 and 5).

use crate::cpu::{flags, seg, Segment};

use super::fault::{Fault, R};
use super::operand::mask;
use super::Interpreter;

/// A selector's index-and-table part, as error codes carry it.
pub(crate) fn sel_code(selector: u16) -> u32 {
    u32::from(selector & 0xfffc)
}

/// Decodes an 8-byte descriptor into a segment cache.
pub(crate) fn descriptor_to_segment(selector: u16, raw: u64) -> Segment {
    let limit_raw = (raw & 0xffff) as u32 | ((raw >> 48) & 0xf) as u32 * 0x1_0000;
    let g = ((raw >> 55) & 1) as u8;
    let limit = if g != 0 { (limit_raw << 12) | 0xfff } else { limit_raw };
    Segment {
        base: ((raw >> 16) & 0xff_ffff) | ((raw >> 56) & 0xff) << 24,
        limit,
        selector,
        type_: ((raw >> 40) & 0xf) as u8,
        s: ((raw >> 44) & 1) as u8,
        dpl: ((raw >> 45) & 3) as u8,
        present: ((raw >> 47) & 1) as u8,
        avl: ((raw >> 52) & 1) as u8,
        l: ((raw >> 53) & 1) as u8,
        db: ((raw >> 54) & 1) as u8,
        g,
        unusable: 0,
    }
}

/// Whether a descriptor is a code segment.
pub(crate) fn is_code(d: &Segment) -> bool {
    d.s != 0 && d.type_ & 0x8 != 0
}

impl Interpreter {
    /// Reads the descriptor a selector names; #GP(selector) when it lies
    /// beyond its table. Returns the descriptor's linear address and bytes.
    pub(crate) fn read_descriptor(&mut self, selector: u16) -> R<(u64, u64)> {
        let (base, limit) = if selector & 4 != 0 {
            let ldt = self.s.ldtr;
            if ldt.unusable != 0 || ldt.present == 0 {
                return Err(Fault::gp(sel_code(selector)));
            }
            (ldt.base, u64::from(ldt.limit))
        } else {
            (self.s.gdtr.base, u64::from(self.s.gdtr.limit))
        };
        let offset = u64::from(selector & 0xfff8);
        if offset + 7 > limit {
            return Err(Fault::gp(sel_code(selector)));
        }
        let addr = base.wrapping_add(offset);
        let raw = self.read_linear_implicit(addr, 8)?;
        Ok((addr, raw))
    }

    /// Reads the high half of a 16-byte system descriptor (long mode).
    pub(crate) fn read_descriptor_high(&mut self, addr: u64) -> R<u64> {
        self.read_linear_implicit(addr.wrapping_add(8), 8)
    }

    /// Sets a descriptor's accessed bit, as loading it does.
    pub(crate) fn set_accessed(&mut self, addr: u64, raw: u64) -> R<()> {
        if raw & (1 << 40) == 0 {
            self.write_linear_implicit(addr.wrapping_add(5), 1, (raw >> 40) | 1)?;
        }
        Ok(())
    }

    /// MOV/POP/LDS/... to a data or stack segment register.
    pub(crate) fn load_segment(&mut self, sreg: usize, selector: u16) -> R<()> {
        if !self.protected_mode() || self.vm86() {
            let vm86 = self.vm86();
            let sg = &mut self.s.segs[sreg];
            sg.selector = selector;
            sg.base = u64::from(selector) << 4;
            if vm86 {
                *sg = Segment { limit: 0xffff, type_: 0x3, s: 1, dpl: 3, present: 1, ..Segment::real_mode(selector, false) };
            }
            // Real mode keeps the cached limit and attributes ("unreal").
            if sreg == seg::SS {
                // MOV SS / POP SS block interrupts for one instruction, so
                // the SP load that follows is never split from it.
                self.s.interrupt_shadow = true;
            }
            return Ok(());
        }
        let cpl = self.s.cpl();
        let rpl = (selector & 3) as u8;
        if selector & 0xfffc == 0 {
            if sreg == seg::SS && !(self.in_64bit_mode() && cpl != 3 && rpl == cpl) {
                return Err(Fault::gp0());
            }
            let sg = &mut self.s.segs[sreg];
            *sg = Segment { selector, unusable: 1, ..Segment::default() };
            if sreg == seg::SS {
                sg.dpl = cpl;
            }
            return Ok(());
        }
        let (addr, raw) = self.read_descriptor(selector)?;
        let d = descriptor_to_segment(selector, raw);
        let code = sel_code(selector);
        if sreg == seg::SS {
            let writable_data = d.s != 0 && d.type_ & 0xa == 0x2;
            if rpl != cpl || d.dpl != cpl || !writable_data {
                return Err(Fault::gp(code));
            }
            if d.present == 0 {
                return Err(Fault::ss(code));
            }
        } else {
            let readable = d.s != 0 && (d.type_ & 0x8 == 0 || d.type_ & 0x2 != 0);
            if !readable {
                return Err(Fault::gp(code));
            }
            let conforming_code = d.type_ & 0xc == 0xc;
            if !conforming_code && (d.dpl < cpl || d.dpl < rpl) {
                return Err(Fault::gp(code));
            }
            if d.present == 0 {
                return Err(Fault::np(code));
            }
        }
        self.set_accessed(addr, raw)?;
        self.s.segs[sreg] = descriptor_to_segment(selector, raw | 1 << 40);
        if sreg == seg::SS {
            // MOV SS blocks interrupts for one instruction.
            self.s.interrupt_shadow = true;
        }
        Ok(())
    }

    /// Checks and loads a code segment for a far JMP or CALL to `selector`
    /// (no gates), with the new CPL being the current one.
    fn code_descriptor_for_transfer(&mut self, selector: u16) -> R<(u64, u64, Segment)> {
        if selector & 0xfffc == 0 {
            return Err(Fault::gp0());
        }
        let (addr, raw) = self.read_descriptor(selector)?;
        let d = descriptor_to_segment(selector, raw);
        let code = sel_code(selector);
        if d.s == 0 {
            return Err(Fault::unimplemented("far transfers through call gates, task gates and TSSs"));
        }
        if !is_code(&d) {
            return Err(Fault::gp(code));
        }
        let cpl = self.s.cpl();
        let rpl = (selector & 3) as u8;
        let conforming = d.type_ & 0x4 != 0;
        if conforming {
            if d.dpl > cpl {
                return Err(Fault::gp(code));
            }
        } else if rpl > cpl || d.dpl != cpl {
            return Err(Fault::gp(code));
        }
        if d.present == 0 {
            return Err(Fault::np(code));
        }
        if self.s.long_mode() && d.l != 0 && d.db != 0 {
            return Err(Fault::gp(code));
        }
        Ok((addr, raw, d))
    }

    /// Loads CS:RIP for a far transfer and checks the new RIP.
    fn enter_code_segment(&mut self, selector: u16, addr: u64, raw: u64, rip: u64, new_cpl: u8) -> R<()> {
        let mut cs = descriptor_to_segment((selector & !3) | u16::from(new_cpl), raw | 1 << 40);
        cs.dpl = if cs.type_ & 0x4 != 0 { new_cpl } else { cs.dpl };
        let long = self.s.long_mode() && cs.l != 0;
        if long {
            if !super::access::is_canonical(rip) {
                return Err(Fault::gp0());
            }
        } else if rip > u64::from(cs.limit) {
            return Err(Fault::gp0());
        }
        self.set_accessed(addr, raw)?;
        // CPL is CS.DPL in this model; a conforming segment runs at the
        // caller's CPL.
        cs.dpl = new_cpl;
        self.s.segs[seg::CS] = cs;
        self.next_rip = rip;
        Ok(())
    }

    /// A far JMP to `selector:offset`.
    pub(crate) fn far_jump(&mut self, selector: u16, offset: u64) -> R<()> {
        if !self.protected_mode() || self.vm86() {
            self.load_cs_real(selector);
            self.next_rip = offset;
            return Ok(());
        }
        let (addr, raw, _) = self.code_descriptor_for_transfer(selector)?;
        let cpl = self.s.cpl();
        self.enter_code_segment(selector, addr, raw, offset, cpl)
    }

    /// A far CALL: pushes CS and the return address at `size` bytes each.
    pub(crate) fn far_call(&mut self, selector: u16, offset: u64, size: usize) -> R<()> {
        let old_cs = u64::from(self.s.segs[seg::CS].selector);
        let ret = self.next_rip;
        if !self.protected_mode() || self.vm86() {
            self.push(old_cs, size)?;
            self.push(ret, size)?;
            self.load_cs_real(selector);
            self.next_rip = offset & mask(size);
            return Ok(());
        }
        let (addr, raw, _) = self.code_descriptor_for_transfer(selector)?;
        // Check the pushes fit before changing anything.
        let saved_rsp = self.s.gpr[crate::cpu::reg::RSP];
        let pushed = self.push(old_cs, size).and_then(|_| self.push(ret, size));
        if let Err(e) = pushed {
            self.s.gpr[crate::cpu::reg::RSP] = saved_rsp;
            return Err(e);
        }
        let cpl = self.s.cpl();
        if let Err(e) = self.enter_code_segment(selector, addr, raw, offset, cpl) {
            self.s.gpr[crate::cpu::reg::RSP] = saved_rsp;
            return Err(e);
        }
        Ok(())
    }

    /// A far RET popping `size`-byte values, then `imm` more bytes.
    pub(crate) fn far_return(&mut self, size: usize, imm: u64) -> R<()> {
        let rip = self.peek(0, size)?;
        let selector = self.peek(size as u64, size)? as u16;
        if !self.protected_mode() || self.vm86() {
            self.adjust_sp(2 * size as u64 + imm);
            self.load_cs_real(selector);
            self.next_rip = rip;
            return Ok(());
        }
        if selector & 0xfffc == 0 {
            return Err(Fault::gp0());
        }
        let (addr, raw) = self.read_descriptor(selector)?;
        let d = descriptor_to_segment(selector, raw);
        let code = sel_code(selector);
        let cpl = self.s.cpl();
        let rpl = (selector & 3) as u8;
        if !is_code(&d) || rpl < cpl {
            return Err(Fault::gp(code));
        }
        let conforming = d.type_ & 0x4 != 0;
        if (conforming && d.dpl > rpl) || (!conforming && d.dpl != rpl) {
            return Err(Fault::gp(code));
        }
        if d.present == 0 {
            return Err(Fault::np(code));
        }
        if rpl == cpl {
            self.enter_code_segment(selector, addr, raw, rip, cpl)?;
            self.adjust_sp(2 * size as u64 + imm);
            return Ok(());
        }
        // Return to an outer privilege level: SS:RSP follow the parameters.
        let new_sp = self.peek(2 * size as u64 + imm, size)?;
        let new_ss = self.peek(3 * size as u64 + imm, size)? as u16;
        self.enter_code_segment(selector, addr, raw, rip, rpl)?;
        self.load_segment(seg::SS, new_ss)?;
        self.s.gpr[crate::cpu::reg::RSP] = new_sp.wrapping_add(imm) & mask(self.stack_size());
        self.null_outer_data_segments(rpl);
        Ok(())
    }

    /// After a return to an outer level, data segments the new CPL may not
    /// use become null (SDM RET, IRET).
    fn null_outer_data_segments(&mut self, new_cpl: u8) {
        for sreg in [seg::ES, seg::DS, seg::FS, seg::GS] {
            let sg = self.s.segs[sreg];
            let conforming_code = sg.type_ & 0xc == 0xc;
            if sg.unusable == 0 && !conforming_code && sg.dpl < new_cpl {
                self.s.segs[sreg] = Segment { selector: 0, unusable: 1, ..Segment::default() };
            }
        }
    }

    /// CS in real and virtual-8086 mode.
    pub(crate) fn load_cs_real(&mut self, selector: u16) {
        let cs = &mut self.s.segs[seg::CS];
        cs.selector = selector;
        cs.base = u64::from(selector) << 4;
        if self.s.rflags & flags::VM != 0 {
            cs.dpl = 3;
        }
    }

    /// IRET at `size` bytes per value.
    pub(crate) fn iret(&mut self, size: usize) -> R<()> {
        const IRET_FLAGS: u64 = flags::ARITH | flags::TF | flags::IF | flags::DF | flags::NT | flags::IOPL | flags::RF | flags::AC | flags::ID | flags::VM | flags::VIF | flags::VIP;
        if !self.protected_mode() {
            let ip = self.pop(size)?;
            let cs = self.pop(size)? as u16;
            let fl = self.pop(size)?;
            self.load_cs_real(cs);
            self.next_rip = ip;
            let keep = if size == 2 { !0xffff } else { flags::VM | flags::VIP | flags::VIF };
            let new = (self.s.flags() & keep) | (fl & !keep & IRET_FLAGS);
            self.s.set_flags(new);
            self.s.nmi_blocked = false;
            return Ok(());
        }
        if self.vm86() {
            if (self.s.rflags & flags::IOPL) >> 12 != 3 {
                return Err(Fault::gp0());
            }
            let ip = self.pop(size)?;
            let cs = self.pop(size)? as u16;
            let fl = self.pop(size)?;
            self.load_cs_real(cs);
            self.next_rip = ip & 0xffff;
            let keep = flags::IOPL | flags::VM | flags::VIP | flags::VIF | if size == 2 { !0xffff } else { 0 };
            let new = (self.s.flags() & keep) | (fl & !keep & IRET_FLAGS);
            self.s.set_flags(new);
            self.s.nmi_blocked = false;
            return Ok(());
        }
        if self.s.rflags & flags::NT != 0 {
            if self.s.long_mode() {
                return Err(Fault::gp0());
            }
            return Err(Fault::unimplemented("IRET with NT set (a task return)"));
        }
        let rip = self.peek(0, size)?;
        let selector = self.peek(size as u64, size)? as u16;
        let new_flags = self.peek(2 * size as u64, size)?;
        let cpl = self.s.cpl();
        if new_flags & flags::VM != 0 && cpl == 0 && !self.s.long_mode() && size == 4 {
            return self.iret_to_vm86(rip, selector, new_flags);
        }
        if selector & 0xfffc == 0 {
            return Err(Fault::gp0());
        }
        let (addr, raw) = self.read_descriptor(selector)?;
        let d = descriptor_to_segment(selector, raw);
        let code = sel_code(selector);
        let rpl = (selector & 3) as u8;
        if !is_code(&d) || rpl < cpl {
            return Err(Fault::gp(code));
        }
        let conforming = d.type_ & 0x4 != 0;
        if (conforming && d.dpl > rpl) || (!conforming && d.dpl != rpl) {
            return Err(Fault::gp(code));
        }
        if d.present == 0 {
            return Err(Fault::np(code));
        }
        let to_64 = self.s.long_mode() && d.l != 0;
        // 64-bit mode always pops SS:RSP; otherwise only on a privilege change.
        let pops_stack = self.in_64bit_mode() || rpl != cpl;
        let (new_sp, new_ss) = if pops_stack {
            (self.peek(3 * size as u64, size)?, self.peek(4 * size as u64, size)? as u16)
        } else {
            (0, 0)
        };
        let iopl = ((self.s.rflags & flags::IOPL) >> 12) as u8;
        let mut changeable = flags::ARITH | flags::TF | flags::DF | flags::NT | flags::RF | flags::AC | flags::ID;
        if cpl <= iopl {
            changeable |= flags::IF;
        }
        if cpl == 0 {
            changeable |= flags::IOPL | flags::VIF | flags::VIP;
        }
        if size == 2 {
            changeable &= 0xffff;
        }
        self.enter_code_segment(selector, addr, raw, if to_64 { rip } else { rip & mask(size.min(4)) }, rpl)?;
        let new = (self.s.flags() & !changeable) | (new_flags & changeable);
        self.s.set_flags(new);
        if pops_stack {
            if self.s.long_mode() && new_ss & 0xfffc == 0 && rpl != 3 && to_64 {
                self.s.segs[seg::SS] = Segment { selector: new_ss, unusable: 1, dpl: rpl, ..Segment::default() };
            } else {
                self.load_segment(seg::SS, new_ss)?;
            }
            self.s.gpr[crate::cpu::reg::RSP] = new_sp;
            if rpl != cpl {
                self.null_outer_data_segments(rpl);
            }
        } else {
            self.adjust_sp(3 * size as u64);
        }
        self.s.nmi_blocked = false;
        Ok(())
    }

    fn iret_to_vm86(&mut self, rip: u64, cs: u16, new_flags: u64) -> R<()> {
        let esp = self.peek(12, 4)?;
        let ss = self.peek(16, 4)? as u16;
        let es = self.peek(20, 4)? as u16;
        let ds = self.peek(24, 4)? as u16;
        let fs = self.peek(28, 4)? as u16;
        let gs = self.peek(32, 4)? as u16;
        self.s.set_flags(new_flags);
        for (sreg, sel) in [(seg::CS, cs), (seg::SS, ss), (seg::ES, es), (seg::DS, ds), (seg::FS, fs), (seg::GS, gs)] {
            self.s.segs[sreg] = Segment { limit: 0xffff, type_: if sreg == seg::CS { 0xb } else { 0x3 }, s: 1, dpl: 3, present: 1, ..Segment::real_mode(sel, sreg == seg::CS) };
        }
        self.s.gpr[crate::cpu::reg::RSP] = esp & 0xffff_ffff;
        self.next_rip = rip & 0xffff;
        self.s.nmi_blocked = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_flat_and_long_descriptors() {
        let d = descriptor_to_segment(0x10, 0x00cf_9300_0000_ffff);
        assert_eq!((d.base, d.limit, d.type_, d.s, d.present, d.db, d.g), (0, 0xffff_ffff, 3, 1, 1, 1, 1));
        let c = descriptor_to_segment(0x08, 0x00af_9b00_0000_ffff);
        assert_eq!((c.l, c.db), (1, 0));
        assert!(is_code(&c));
        let b = descriptor_to_segment(0x18, 0x1200_9345_6789_0010);
        assert_eq!(b.base, 0x1245_6789);
        assert_eq!(b.limit, 0x10);
    }
}
