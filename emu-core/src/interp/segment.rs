//! Segment descriptors, segment-register loads with their protection
//! checks, and far transfers (JMP, CALL, RET, IRET) between code segments
//! and through call gates, with the hand-off to task switches for TSS
//! descriptors, task gates and IRET with NT set (SDM Vol. 3A, chapters 3,
//! 5 and 7).

use crate::cpu::{flags, reg, seg, Segment};
use crate::mmu::Access;

use super::exec::task::TaskSwitch;
use super::fault::{Fault, R};
use super::operand::mask;
use super::Interpreter;

/// A selector's index-and-table part, as error codes carry it.
pub(crate) fn sel_code(selector: u16) -> u32 {
    u32::from(selector & 0xfffc)
}

/// Decodes an 8-byte descriptor into a segment cache.
pub(crate) fn descriptor_to_segment(selector: u16, raw: u64) -> Segment {
    let limit_raw = (raw & 0xffff) as u32 | (((raw >> 48) & 0xf) as u32) << 16;
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

/// Whether a descriptor is a writable data segment (what SS needs).
pub(crate) fn is_writable_data(d: &Segment) -> bool {
    d.s != 0 && d.type_ & 0xa == 0x2
}

/// System descriptor types (the S bit clear).
pub(crate) mod sys {
    /// Available 16-bit TSS.
    pub const TSS16: u8 = 0x1;
    /// LDT.
    pub const LDT: u8 = 0x2;
    /// Busy 16-bit TSS.
    pub const TSS16_BUSY: u8 = 0x3;
    /// 16-bit call gate.
    pub const CALL16: u8 = 0x4;
    /// Task gate.
    pub const TASK: u8 = 0x5;
    /// Available 32-bit (or 64-bit) TSS.
    pub const TSS32: u8 = 0x9;
    /// Busy 32-bit (or 64-bit) TSS.
    pub const TSS32_BUSY: u8 = 0xb;
    /// 32-bit (or, in long mode, 64-bit) call gate.
    pub const CALL32: u8 = 0xc;
}

/// A gate descriptor (call, task, interrupt or trap gate), decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gate {
    /// The target code segment (or, for a task gate, TSS) selector.
    pub selector: u16,
    /// The entry point (bits 63:32 from the high half in long mode).
    pub offset: u64,
    /// A call gate's parameter count.
    pub params: u8,
    /// The descriptor type.
    pub type_: u8,
    /// The gate's DPL.
    pub dpl: u8,
    /// The present bit.
    pub present: bool,
}

/// Decodes a gate from its low and (long-mode) high 8 bytes.
pub(crate) fn decode_gate(lo: u64, hi: u64) -> Gate {
    Gate {
        selector: (lo >> 16) as u16,
        offset: (lo & 0xffff) | ((lo >> 48) & 0xffff) << 16 | (hi & 0xffff_ffff) << 32,
        params: ((lo >> 32) & 0x1f) as u8,
        type_: ((lo >> 40) & 0xf) as u8,
        dpl: ((lo >> 45) & 3) as u8,
        present: lo & (1 << 47) != 0,
    }
}

impl Interpreter {
    /// The linear address of the `size`-byte descriptor `selector` names,
    /// or `None` when it lies beyond its table (or the LDT is unusable).
    pub(crate) fn descriptor_addr(&self, selector: u16, size: u64) -> Option<u64> {
        let (base, limit) = if selector & 4 != 0 {
            let ldt = self.s.ldtr;
            if ldt.unusable != 0 || ldt.present == 0 {
                return None;
            }
            (ldt.base, u64::from(ldt.limit))
        } else {
            (self.s.gdtr.base, u64::from(self.s.gdtr.limit))
        };
        let offset = u64::from(selector & 0xfff8);
        (offset + size - 1 <= limit).then(|| base.wrapping_add(offset))
    }

    /// Reads the descriptor a selector names; #GP(selector) when it lies
    /// beyond its table. Returns the descriptor's linear address and bytes.
    pub(crate) fn read_descriptor(&mut self, selector: u16) -> R<(u64, u64)> {
        let addr = self.descriptor_addr(selector, 8).ok_or_else(|| Fault::gp(sel_code(selector)))?;
        let raw = self.read_linear_implicit(addr, 8)?;
        Ok((addr, raw))
    }

    /// The descriptor a selector names, or `None` for a null selector or
    /// one beyond its table (LAR, LSL, VERR, VERW set ZF = 0 for those).
    pub(crate) fn lookup_descriptor(&mut self, selector: u16) -> R<Option<(u64, u64)>> {
        if selector & 0xfffc == 0 {
            return Ok(None);
        }
        match self.descriptor_addr(selector, 8) {
            Some(addr) => Ok(Some((addr, self.read_linear_implicit(addr, 8)?))),
            None => Ok(None),
        }
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

    /// Runs `f`; when it fails, puts back the segment registers, RSP,
    /// RFLAGS and the next RIP, so that a multi-step transfer faults
    /// without leaving half of its changes behind. (Memory it wrote, such
    /// as pushes and accessed bits, stays written, as on hardware.)
    pub(crate) fn atomically<T>(&mut self, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        let segs = self.s.segs;
        let rsp = self.s.gpr[reg::RSP];
        let rflags = self.s.rflags;
        let lazy = self.s.lazy;
        let next_rip = self.next_rip;
        let result = f(self);
        if result.is_err() {
            self.s.segs = segs;
            self.s.gpr[reg::RSP] = rsp;
            self.s.rflags = rflags;
            self.s.lazy = lazy;
            self.next_rip = next_rip;
        }
        result
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
            if rpl != cpl || d.dpl != cpl || !is_writable_data(&d) {
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

    /// The checks on a code segment named directly by a far JMP or CALL
    /// (the new CPL is the current one).
    fn check_direct_code(&self, selector: u16, raw: u64) -> R<()> {
        let d = descriptor_to_segment(selector, raw);
        let code = sel_code(selector);
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
        Ok(())
    }

    /// Loads CS:RIP for a far transfer and checks the new RIP.
    fn enter_code_segment(&mut self, selector: u16, addr: u64, raw: u64, rip: u64, new_cpl: u8) -> R<()> {
        let mut cs = descriptor_to_segment((selector & !3) | u16::from(new_cpl), raw | 1 << 40);
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
        if selector & 0xfffc == 0 {
            return Err(Fault::gp0());
        }
        let (addr, raw) = self.read_descriptor(selector)?;
        if raw & (1 << 44) == 0 {
            return self.far_via_system(selector, addr, raw, None);
        }
        self.check_direct_code(selector, raw)?;
        let cpl = self.s.cpl();
        self.enter_code_segment(selector, addr, raw, offset, cpl)
    }

    /// A far CALL: pushes CS and the return address at `size` bytes each.
    pub(crate) fn far_call(&mut self, selector: u16, offset: u64, size: usize) -> R<()> {
        let old_cs = u64::from(self.s.segs[seg::CS].selector);
        let ret = self.next_rip;
        if !self.protected_mode() || self.vm86() {
            return self.atomically(|cpu| {
                cpu.push(old_cs, size)?;
                cpu.push(ret, size)?;
                cpu.load_cs_real(selector);
                cpu.next_rip = offset & mask(size);
                Ok(())
            });
        }
        if selector & 0xfffc == 0 {
            return Err(Fault::gp0());
        }
        let (addr, raw) = self.read_descriptor(selector)?;
        if raw & (1 << 44) == 0 {
            return self.far_via_system(selector, addr, raw, Some(size));
        }
        self.check_direct_code(selector, raw)?;
        let cpl = self.s.cpl();
        self.atomically(|cpu| {
            cpu.push(old_cs, size)?;
            cpu.push(ret, size)?;
            cpu.enter_code_segment(selector, addr, raw, offset, cpl)
        })
    }

    /// A far JMP (`call` is `None`) or CALL (`Some(operand size)`) to a
    /// system descriptor: a call gate, a task gate or a TSS.
    fn far_via_system(&mut self, selector: u16, addr: u64, raw: u64, call: Option<usize>) -> R<()> {
        let d = descriptor_to_segment(selector, raw);
        let code = sel_code(selector);
        let cpl = self.s.cpl();
        let rpl = (selector & 3) as u8;
        let long = self.s.long_mode();
        let why = if call.is_some() { TaskSwitch::Call } else { TaskSwitch::Jmp };
        match d.type_ {
            sys::CALL32 => self.through_call_gate(selector, addr, raw, call.is_some()),
            sys::CALL16 if !long => self.through_call_gate(selector, addr, raw, call.is_some()),
            sys::TASK if !long => {
                let gate = decode_gate(raw, 0);
                if gate.dpl < cpl || gate.dpl < rpl {
                    return Err(Fault::gp(code));
                }
                if !gate.present {
                    return Err(Fault::np(code));
                }
                let (tss_addr, tss_raw) = self.available_tss(gate.selector, Fault::gp, 0)?;
                let eip = self.next_rip;
                self.task_switch(gate.selector, tss_addr, tss_raw, why, eip, 0)
            }
            sys::TSS16 | sys::TSS32 if !long => {
                if d.dpl < cpl || d.dpl < rpl {
                    return Err(Fault::gp(code));
                }
                if d.present == 0 {
                    return Err(Fault::np(code));
                }
                let eip = self.next_rip;
                self.task_switch(selector, addr, raw, why, eip, 0)
            }
            _ => Err(Fault::gp(code)),
        }
    }

    /// The descriptor of the TSS a task gate names: it must be in the GDT
    /// and an available TSS (else `bad(selector)`), and present (else
    /// #NP(selector)). `ext` goes into the error codes.
    pub(crate) fn available_tss(&mut self, selector: u16, bad: fn(u32) -> Fault, ext: u32) -> R<(u64, u64)> {
        let code = sel_code(selector) | ext;
        if selector & 4 != 0 {
            return Err(bad(code));
        }
        let addr = self.descriptor_addr(selector, 8).ok_or_else(|| bad(code))?;
        let raw = self.read_linear_implicit(addr, 8)?;
        let d = descriptor_to_segment(selector, raw);
        if d.s != 0 || !(d.type_ == sys::TSS16 || d.type_ == sys::TSS32) {
            return Err(bad(code));
        }
        if d.present == 0 {
            return Err(Fault::np(code));
        }
        Ok((addr, raw))
    }

    /// A far JMP or CALL through a call gate (SDM JMP and CALL,
    /// "CALL-GATE"): 16- and 32-bit gates in protected mode, 64-bit gates
    /// in long mode.
    fn through_call_gate(&mut self, gate_sel: u16, gate_addr: u64, lo: u64, call: bool) -> R<()> {
        let long = self.s.long_mode();
        let gate_code = sel_code(gate_sel);
        let hi = if long {
            // A 64-bit gate takes 16 bytes; its upper type field must be 0.
            if self.descriptor_addr(gate_sel, 16).is_none() {
                return Err(Fault::gp(gate_code));
            }
            let hi = self.read_descriptor_high(gate_addr)?;
            if (hi >> 40) & 0x1f != 0 {
                return Err(Fault::gp(gate_code));
            }
            hi
        } else {
            0
        };
        let gate = decode_gate(lo, hi);
        let cpl = self.s.cpl();
        let rpl = (gate_sel & 3) as u8;
        if gate.dpl < cpl || rpl > gate.dpl {
            return Err(Fault::gp(gate_code));
        }
        if !gate.present {
            return Err(Fault::np(gate_code));
        }
        let target = gate.selector;
        if target & 0xfffc == 0 {
            return Err(Fault::gp0());
        }
        let (addr, raw) = self.read_descriptor(target)?;
        let d = descriptor_to_segment(target, raw);
        let code = sel_code(target);
        if !is_code(&d) {
            return Err(Fault::gp(code));
        }
        let conforming = d.type_ & 0x4 != 0;
        let bad_dpl = if call { d.dpl > cpl } else { (conforming && d.dpl > cpl) || (!conforming && d.dpl != cpl) };
        if bad_dpl {
            return Err(Fault::gp(code));
        }
        if d.present == 0 {
            return Err(Fault::np(code));
        }
        if long && (d.l == 0 || d.db != 0) {
            return Err(Fault::gp(code));
        }
        let (gsize, offset) = if long {
            (8, gate.offset)
        } else if gate.type_ == sys::CALL32 {
            (4, gate.offset & 0xffff_ffff)
        } else {
            (2, gate.offset & 0xffff)
        };
        if !call {
            return self.enter_code_segment(target, addr, raw, offset, cpl);
        }
        if !conforming && d.dpl < cpl {
            return self.call_gate_inner(target, addr, raw, d.dpl, gate.params, gsize, offset);
        }
        let old_cs = u64::from(self.s.segs[seg::CS].selector);
        let ret = self.next_rip;
        self.atomically(|cpu| {
            // CS first: a 64-bit gate pushes on the 64-bit stack.
            cpu.enter_code_segment(target, addr, raw, offset, cpl)?;
            cpu.push(old_cs, gsize)?;
            cpu.push(ret, gsize)
        })
    }

    /// CALL through a gate to a more privileged level: the stack from the
    /// TSS, the caller's SS:ESP, `params` parameters copied from the
    /// caller's stack, then CS:EIP, each `gsize` bytes.
    #[allow(clippy::too_many_arguments)]
    fn call_gate_inner(&mut self, target: u16, addr: u64, raw: u64, new_cpl: u8, params: u8, gsize: usize, offset: u64) -> R<()> {
        let old_cs = u64::from(self.s.segs[seg::CS].selector);
        let old_ss = u64::from(self.s.segs[seg::SS].selector);
        let old_rsp = self.s.gpr[reg::RSP];
        let ret = self.next_rip;
        if self.s.long_mode() {
            // 64-bit gates copy no parameters; the new SS is null with
            // RPL = the new CPL.
            let rsp = self.tss64_field(4 + 8 * u64::from(new_cpl))?;
            return self.atomically(|cpu| {
                cpu.enter_code_segment(target, addr, raw, offset, new_cpl)?;
                cpu.s.segs[seg::SS] = Segment { selector: u16::from(new_cpl), unusable: 1, dpl: new_cpl, ..Segment::default() };
                cpu.s.gpr[reg::RSP] = rsp;
                for v in [old_ss, old_rsp, old_cs, ret] {
                    cpu.push(v, 8)?;
                }
                Ok(())
            });
        }
        let (ss, esp) = self.tss_stack(new_cpl)?;
        let (ss_addr, ss_raw, ss_cache) = self.inner_stack_segment(ss, new_cpl, 0)?;
        // The parameters, read from the caller's stack at its privilege.
        let old_stack = mask(self.stack_size());
        let mut values = Vec::with_capacity(usize::from(params));
        for i in 0..u64::from(params) {
            let off = old_rsp.wrapping_add(i * gsize as u64) & old_stack;
            values.push(self.read_mem(seg::SS, off, gsize)?);
        }
        self.atomically(|cpu| {
            cpu.s.segs[seg::SS] = ss_cache;
            cpu.s.gpr[reg::RSP] = esp;
            // The whole frame must fit, else #SS(new SS).
            let frame = ((4 + values.len()) * gsize) as u64;
            let m = mask(cpu.stack_size());
            let low = (esp & m).wrapping_sub(frame) & m;
            cpu.linear(seg::SS, low, frame, Access::Write).map_err(|_| Fault::ss(sel_code(ss)))?;
            cpu.enter_code_segment(target, addr, raw, offset, new_cpl)?;
            cpu.push(old_ss, gsize)?;
            cpu.push(old_rsp & mask(gsize), gsize)?;
            for v in values.iter().rev() {
                cpu.push(*v, gsize)?;
            }
            cpu.push(old_cs, gsize)?;
            cpu.push(ret, gsize)
        })?;
        self.set_accessed(ss_addr, ss_raw)
    }

    /// Checks the stack segment for a transfer to an inner level (from the
    /// TSS, for call gates and interrupts): #TS for a bad selector or
    /// descriptor, #SS when not present; `ext` goes into the error codes.
    /// Returns its descriptor address, bytes and cache.
    pub(crate) fn inner_stack_segment(&mut self, ss: u16, new_cpl: u8, ext: u32) -> R<(u64, u64, Segment)> {
        let code = sel_code(ss) | ext;
        if ss & 0xfffc == 0 {
            return Err(Fault::ts(ext));
        }
        let addr = self.descriptor_addr(ss, 8).ok_or(Fault::ts(code))?;
        let raw = self.read_linear_implicit(addr, 8)?;
        let d = descriptor_to_segment(ss, raw);
        if (ss & 3) as u8 != new_cpl || d.dpl != new_cpl || !is_writable_data(&d) {
            return Err(Fault::ts(code));
        }
        if d.present == 0 {
            return Err(Fault::ss(code));
        }
        Ok((addr, raw, descriptor_to_segment(ss, raw | 1 << 40)))
    }

    /// The code segment a far RET or IRET returns to, with the checks
    /// both make (SDM RET, IRET): not null, a code segment, RPL >= CPL,
    /// DPL == RPL (DPL <= RPL when conforming), present. Returns the
    /// descriptor's address, its bytes and the decoded segment.
    fn return_code_segment(&mut self, selector: u16, cpl: u8) -> R<(u64, u64, Segment)> {
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
        Ok((addr, raw, d))
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
        let cpl = self.s.cpl();
        let (addr, raw, _) = self.return_code_segment(selector, cpl)?;
        let rpl = (selector & 3) as u8;
        if rpl == cpl {
            return self.atomically(|cpu| {
                cpu.enter_code_segment(selector, addr, raw, rip, cpl)?;
                cpu.adjust_sp(2 * size as u64 + imm);
                Ok(())
            });
        }
        // Return to an outer privilege level: SS:RSP follow the parameters.
        let new_sp = self.peek(2 * size as u64 + imm, size)?;
        let new_ss = self.peek(3 * size as u64 + imm, size)? as u16;
        self.atomically(|cpu| {
            cpu.enter_code_segment(selector, addr, raw, rip, rpl)?;
            cpu.load_segment(seg::SS, new_ss)?;
            cpu.s.gpr[reg::RSP] = new_sp.wrapping_add(imm) & mask(cpu.stack_size());
            cpu.null_outer_data_segments(rpl);
            Ok(())
        })
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
            // IOPL-sensitive: without VME, only IOPL 3 lets a virtual-8086
            // task IRET (else #GP(0) to the monitor).
            if (self.s.rflags & flags::IOPL) >> 12 != 3 {
                return Err(Fault::gp0());
            }
            let ip = self.peek(0, size)?;
            let cs = self.peek(size as u64, size)? as u16;
            let fl = self.peek(2 * size as u64, size)?;
            self.adjust_sp(3 * size as u64);
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
            // A return from a nested task to the one in the back link.
            self.task_return()?;
            self.s.nmi_blocked = false;
            return Ok(());
        }
        let rip = self.peek(0, size)?;
        let selector = self.peek(size as u64, size)? as u16;
        let new_flags = self.peek(2 * size as u64, size)?;
        let cpl = self.s.cpl();
        if new_flags & flags::VM != 0 && cpl == 0 && !self.s.long_mode() && size == 4 {
            return self.iret_to_vm86(rip, selector, new_flags);
        }
        let (addr, raw, d) = self.return_code_segment(selector, cpl)?;
        let rpl = (selector & 3) as u8;
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
        self.atomically(|cpu| {
            cpu.enter_code_segment(selector, addr, raw, if to_64 { rip } else { rip & mask(size.min(4)) }, rpl)?;
            let new = (cpu.s.flags() & !changeable) | (new_flags & changeable);
            cpu.s.set_flags(new);
            if pops_stack {
                if cpu.s.long_mode() && new_ss & 0xfffc == 0 && rpl != 3 && to_64 {
                    cpu.s.segs[seg::SS] = Segment { selector: new_ss, unusable: 1, dpl: rpl, ..Segment::default() };
                } else {
                    cpu.load_segment(seg::SS, new_ss)?;
                }
                cpu.s.gpr[reg::RSP] = new_sp;
                if rpl != cpl {
                    cpu.null_outer_data_segments(rpl);
                }
            } else {
                cpu.adjust_sp(3 * size as u64);
            }
            Ok(())
        })?;
        self.s.nmi_blocked = false;
        Ok(())
    }

    /// IRET from CPL 0 to virtual-8086 mode: EIP, CS, EFLAGS, then ESP,
    /// SS, ES, DS, FS and GS are popped, and the segments get their
    /// virtual-8086 caches (base = selector * 16, 64 KiB, DPL 3).
    fn iret_to_vm86(&mut self, rip: u64, cs: u16, new_flags: u64) -> R<()> {
        let esp = self.peek(12, 4)?;
        let ss = self.peek(16, 4)? as u16;
        let es = self.peek(20, 4)? as u16;
        let ds = self.peek(24, 4)? as u16;
        let fs = self.peek(28, 4)? as u16;
        let gs = self.peek(32, 4)? as u16;
        if rip & 0xffff_ffff > 0xffff {
            return Err(Fault::gp0());
        }
        self.s.set_flags(new_flags & 0xffff_ffff);
        for (sreg, sel) in [(seg::CS, cs), (seg::SS, ss), (seg::ES, es), (seg::DS, ds), (seg::FS, fs), (seg::GS, gs)] {
            self.s.segs[sreg] = Segment { limit: 0xffff, type_: if sreg == seg::CS { 0xb } else { 0x3 }, s: 1, dpl: 3, present: 1, ..Segment::real_mode(sel, sreg == seg::CS) };
        }
        self.s.gpr[reg::RSP] = esp & 0xffff_ffff;
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
