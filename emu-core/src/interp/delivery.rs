//! Exception and interrupt delivery: the real-mode IVT, protected-mode
//! interrupt and trap gates with stack switches through the TSS (from
//! virtual-8086 mode too), task gates, long-mode gates with the IST, and
//! the double- and triple-fault rules (SDM Vol. 3A, chapters 6 and 20).

use crate::control::StopReason;
use crate::cpu::{flags, seg, Segment};

use super::exec::task::TaskSwitch;
use super::fault::{has_error_code, is_contributory, vector, Exception, Fault, R};
use super::operand::mask;
use super::segment::{decode_gate, descriptor_to_segment, is_code, sel_code, sys, Gate};
use super::Interpreter;

/// What raised the event: it decides the privilege check on the gate and
/// the EXT bit of error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// An exception raised by the CPU.
    Exception,
    /// INT n, INT3, INTO (the gate's DPL is checked).
    Software,
    /// An external interrupt or NMI.
    External,
}

impl Interpreter {
    /// Delivers an exception raised by an instruction, escalating to #DF and
    /// a triple fault as the SDM's Table 6-5 says.
    pub(crate) fn raise(&mut self, first: Exception) -> Result<(), StopReason> {
        super::bump(&self.counters.exceptions);
        let mut current = first;
        loop {
            match self.deliver(current.vector, current.error_code, Source::Exception) {
                Ok(()) => return Ok(()),
                Err(Fault::Stop(r)) => return Err(*r),
                Err(Fault::Exception(next)) => {
                    if current.vector == vector::DF {
                        return Err(StopReason::TripleFault);
                    }
                    let first_bad = is_contributory(current.vector) || current.vector == vector::PF;
                    let second_bad = is_contributory(next.vector)
                        || (current.vector == vector::PF && next.vector == vector::PF);
                    current = if first_bad && second_bad {
                        Exception { vector: vector::DF, error_code: Some(0) }
                    } else {
                        next
                    };
                }
            }
        }
    }

    /// Delivers an external interrupt.
    pub(crate) fn deliver_external(&mut self, v: u8) -> Result<(), StopReason> {
        super::bump(&self.counters.interrupts);
        match self.deliver(v, None, Source::External) {
            Ok(()) => Ok(()),
            Err(Fault::Exception(e)) => self.raise(e),
            Err(Fault::Stop(r)) => Err(*r),
        }
    }

    /// INT n / INT3 / INTO: a trap, so the return address is the next
    /// instruction.
    pub(crate) fn software_interrupt(&mut self, v: u8) -> R<()> {
        let ret = self.next_rip;
        self.s.rip = ret;
        self.deliver(v, None, Source::Software)
    }

    /// Pushes the frame and enters the handler for vector `v`. On success
    /// `self.next_rip` and `self.s.rip` are the handler's entry.
    pub(crate) fn deliver(&mut self, v: u8, error_code: Option<u32>, source: Source) -> R<()> {
        let error_code = if source == Source::Exception && has_error_code(v) { error_code.or(Some(0)) } else { None };
        self.s.materialize_flags();
        let result = if !self.protected_mode() {
            self.deliver_real(v)
        } else if self.s.long_mode() {
            self.deliver_long(v, error_code, source)
        } else {
            self.deliver_protected(v, error_code, source)
        };
        if result.is_ok() {
            self.s.rip = self.next_rip;
            self.s.halted = false;
        }
        result
    }

    fn deliver_real(&mut self, v: u8) -> R<()> {
        let entry = u64::from(v) * 4;
        if entry + 3 > u64::from(self.s.idtr.limit) {
            return Err(Fault::gp0());
        }
        let ivt = self.read_linear_implicit(self.s.idtr.base.wrapping_add(entry), 4)?;
        let fl = self.s.flags();
        self.push(fl & 0xffff, 2)?;
        self.push(u64::from(self.s.segs[seg::CS].selector), 2)?;
        self.push(self.s.rip & 0xffff, 2)?;
        self.s.rflags &= !(flags::IF | flags::TF | flags::AC | flags::RF);
        self.load_cs_real((ivt >> 16) as u16);
        self.next_rip = ivt & 0xffff;
        Ok(())
    }

    /// The error code for a fault on the IDT entry of `v`.
    fn idt_error(v: u8, source: Source) -> u32 {
        u32::from(v) * 8 + 2 + u32::from(source == Source::External)
    }

    /// Reads a gate, checking its type, DPL and presence.
    fn read_gate(&mut self, v: u8, source: Source, size: u64) -> R<(u64, u64)> {
        let idt_err = Self::idt_error(v, source);
        let offset = u64::from(v) * size;
        if offset + size - 1 > u64::from(self.s.idtr.limit) {
            return Err(Fault::gp(idt_err));
        }
        let addr = self.s.idtr.base.wrapping_add(offset);
        let lo = self.read_linear_implicit(addr, 8)?;
        let hi = if size == 16 { self.read_linear_implicit(addr + 8, 8)? } else { 0 };
        let gate_type = (lo >> 40) & 0x1f;
        let valid = if size == 16 { matches!(gate_type, 0xe | 0xf) } else { matches!(gate_type, 0x5 | 0x6 | 0x7 | 0xe | 0xf) };
        if !valid {
            return Err(Fault::gp(idt_err));
        }
        let dpl = ((lo >> 45) & 3) as u8;
        if source == Source::Software && dpl < self.s.cpl() {
            return Err(Fault::gp(idt_err));
        }
        if lo & (1 << 47) == 0 {
            return Err(Fault::np(idt_err));
        }
        Ok((lo, hi))
    }

    /// Checks the handler's code segment; returns it with its descriptor
    /// address and raw bytes.
    fn gate_target(&mut self, selector: u16, source: Source) -> R<(u64, u64, Segment)> {
        let ext = u32::from(source == Source::External);
        if selector & 0xfffc == 0 {
            return Err(Fault::gp(ext));
        }
        let (addr, raw) = self.read_descriptor(selector).map_err(|e| add_ext(e, ext))?;
        let d = descriptor_to_segment(selector, raw);
        if !is_code(&d) || d.dpl > self.s.cpl() {
            return Err(Fault::gp(sel_code(selector) | ext));
        }
        if d.present == 0 {
            return Err(Fault::np(sel_code(selector) | ext));
        }
        Ok((addr, raw, d))
    }

    fn deliver_protected(&mut self, v: u8, error_code: Option<u32>, source: Source) -> R<()> {
        let (lo, _) = self.read_gate(v, source, 8)?;
        let gate = decode_gate(lo, 0);
        if gate.type_ == sys::TASK {
            return self.deliver_through_task_gate(gate, error_code, source);
        }
        let ext = u32::from(source == Source::External);
        let selector = gate.selector;
        let size = if gate.type_ & 0x8 != 0 { 4 } else { 2 };
        let offset = gate.offset & mask(size);
        let (addr, raw, target) = self.gate_target(selector, source)?;
        let cpl = self.s.cpl();
        let conforming = target.type_ & 0x4 != 0;
        let from_vm86 = self.vm86();
        let new_cpl = if conforming { cpl } else { target.dpl };
        // A virtual-8086 task is interrupted only into a CPL-0 handler.
        if from_vm86 && new_cpl != 0 {
            return Err(Fault::gp(sel_code(selector) | ext));
        }
        let mut cs = descriptor_to_segment((selector & !3) | u16::from(new_cpl), raw | 1 << 40);
        cs.dpl = new_cpl;
        if offset > u64::from(cs.limit) {
            return Err(Fault::gp(ext));
        }
        let inner = if new_cpl < cpl {
            let (ss, esp) = self.tss_stack(new_cpl).map_err(|e| add_ext(e, ext))?;
            Some((esp, self.inner_stack_segment(ss, new_cpl, ext)?))
        } else {
            None
        };
        let old_flags = self.s.flags();
        let old_cs = u64::from(self.s.segs[seg::CS].selector);
        let old_ss = u64::from(self.s.segs[seg::SS].selector);
        let old_esp = self.s.gpr[crate::cpu::reg::RSP];
        let old_segs = self.s.segs;
        let eip = self.s.rip;
        self.atomically(|cpu| {
            // The frame is pushed with the handler's privilege in force, so
            // that pushes to a CPL-0 stack are supervisor accesses.
            cpu.s.rflags &= !flags::VM;
            cpu.s.segs[seg::CS] = cs;
            if let Some((esp, (_, _, ss_cache))) = inner {
                cpu.s.segs[seg::SS] = ss_cache;
                cpu.s.gpr[crate::cpu::reg::RSP] = esp;
                if from_vm86 {
                    for sreg in [seg::GS, seg::FS, seg::DS, seg::ES] {
                        cpu.push(u64::from(old_segs[sreg].selector), size)?;
                    }
                }
                cpu.push(old_ss, size)?;
                cpu.push(old_esp & mask(size), size)?;
            }
            cpu.push(old_flags & mask(size), size)?;
            cpu.push(old_cs, size)?;
            cpu.push(eip & mask(size), size)?;
            if let Some(code) = error_code {
                cpu.push(u64::from(code), size)?;
            }
            Ok(())
        })?;
        if let Some((_, (ss_addr, ss_raw, _))) = inner {
            self.set_accessed(ss_addr, ss_raw)?;
        }
        self.set_accessed(addr, raw)?;
        if from_vm86 {
            for sreg in [seg::ES, seg::DS, seg::FS, seg::GS] {
                self.s.segs[sreg] = Segment { unusable: 1, ..Segment::default() };
            }
        }
        let mut clear = flags::TF | flags::NT | flags::RF | flags::VM;
        if gate.type_ & 1 == 0 {
            clear |= flags::IF;
        }
        self.s.rflags &= !clear;
        self.next_rip = offset;
        Ok(())
    }

    /// An interrupt or exception through a task gate (SDM INT n,
    /// "TASK-GATE"): a nested task switch, then the error code, if any,
    /// pushed on the new task's stack.
    fn deliver_through_task_gate(&mut self, gate: Gate, error_code: Option<u32>, source: Source) -> R<()> {
        let ext = u32::from(source == Source::External);
        let (addr, raw) = self.available_tss(gate.selector, Fault::gp, ext)?;
        let eip = self.s.rip;
        self.task_switch(gate.selector, addr, raw, TaskSwitch::Interrupt, eip, ext)?;
        if let Some(code) = error_code {
            let size = if (raw >> 40) & 0x8 != 0 { 4 } else { 2 };
            self.push(u64::from(code), size).map_err(|e| match e {
                Fault::Exception(x) if x.vector == vector::SS || x.vector == vector::GP => Fault::ss(ext),
                other => other,
            })?;
        }
        Ok(())
    }

    /// SS:ESP for privilege level `dpl` from the current 32-bit (or
    /// 16-bit) TSS.
    pub(crate) fn tss_stack(&mut self, dpl: u8) -> R<(u16, u64)> {
        let tr = self.s.tr;
        let tss32 = tr.type_ & 0x8 != 0;
        let (off, width) = if tss32 { (4 + 8 * u64::from(dpl), 4) } else { (2 + 4 * u64::from(dpl), 2) };
        if off + width + 1 > u64::from(tr.limit) {
            return Err(Fault::ts(sel_code(tr.selector)));
        }
        let esp = self.read_linear_implicit(tr.base.wrapping_add(off), width as usize)?;
        let ss = self.read_linear_implicit(tr.base.wrapping_add(off + width), 2)? as u16;
        Ok((ss, esp))
    }

    fn deliver_long(&mut self, v: u8, error_code: Option<u32>, source: Source) -> R<()> {
        let (lo, hi) = self.read_gate(v, source, 16)?;
        let selector = (lo >> 16) as u16;
        let offset = (lo & 0xffff) | ((lo >> 48) & 0xffff) << 16 | (hi & 0xffff_ffff) << 32;
        let ist = (lo >> 32) & 7;
        let (addr, raw, target) = self.gate_target(selector, source)?;
        if target.l == 0 || target.db != 0 {
            return Err(Fault::gp(sel_code(selector)));
        }
        let cpl = self.s.cpl();
        let new_cpl = if target.type_ & 0x4 != 0 { cpl } else { target.dpl };
        let old_flags = self.s.flags();
        let old_cs = u64::from(self.s.segs[seg::CS].selector);
        let old_ss = u64::from(self.s.segs[seg::SS].selector);
        let old_rsp = self.s.gpr[crate::cpu::reg::RSP];
        let new_rsp = if ist != 0 {
            Some(self.tss64_field(36 + 8 * (ist - 1))?)
        } else if new_cpl < cpl {
            Some(self.tss64_field(4 + 8 * u64::from(new_cpl))?)
        } else {
            None
        };
        if new_cpl < cpl {
            // The new SS is null with RPL = the new CPL.
            self.s.segs[seg::SS] = Segment { selector: u16::from(new_cpl), unusable: 1, dpl: new_cpl, ..Segment::default() };
        }
        let mut cs = descriptor_to_segment((selector & !3) | u16::from(new_cpl), raw | 1 << 40);
        cs.dpl = new_cpl;
        // The frame is pushed with the new CS in force (64-bit stack).
        let old_cs_cache = self.s.segs[seg::CS];
        self.s.segs[seg::CS] = cs;
        let rsp = new_rsp.unwrap_or(old_rsp) & !0xf;
        self.s.gpr[crate::cpu::reg::RSP] = rsp;
        let frame = [old_ss, old_rsp, old_flags, old_cs, self.s.rip];
        let mut pushed = Ok(());
        for value in frame.into_iter().chain(error_code.map(u64::from)) {
            pushed = self.push(value, 8);
            if pushed.is_err() {
                break;
            }
        }
        if let Err(e) = pushed {
            self.s.segs[seg::CS] = old_cs_cache;
            self.s.gpr[crate::cpu::reg::RSP] = old_rsp;
            return Err(e);
        }
        if !super::access::is_canonical(offset) {
            return Err(Fault::gp0());
        }
        self.set_accessed(addr, raw)?;
        let mut clear = flags::TF | flags::NT | flags::RF | flags::VM;
        if (lo >> 40) & 1 == 0 {
            clear |= flags::IF;
        }
        self.s.rflags &= !clear;
        self.next_rip = offset;
        Ok(())
    }

    /// An 8-byte field of the 64-bit TSS (RSPn, ISTn).
    pub(crate) fn tss64_field(&mut self, off: u64) -> R<u64> {
        let tr = self.s.tr;
        if off + 7 > u64::from(tr.limit) {
            return Err(Fault::ts(sel_code(tr.selector)));
        }
        self.read_linear_implicit(tr.base.wrapping_add(off), 8)
    }
}

/// Sets the EXT bit in a fault's error code.
pub(crate) fn add_ext(f: Fault, ext: u32) -> Fault {
    match f {
        Fault::Exception(mut e) => {
            e.error_code = e.error_code.map(|c| c | ext);
            Fault::Exception(e)
        }
        other => other,
    }
}
