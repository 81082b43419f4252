//! The protection-checking instructions of protected mode: LAR, LSL, VERR,
//! VERW and ARPL (SLDT, STR, LLDT and LTR live with the other system
//! instructions). All are #UD in real and virtual-8086 mode; none faults
//! on a bad selector, they report it in ZF.

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::cpu::flags;

use super::super::fault::{Fault, R};
use super::super::operand::{gpr_index, mask};
use super::super::segment::{descriptor_to_segment, is_code, sys};
use super::super::Interpreter;
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Lar, M::Lsl], lar_lsl);
    t.set(&[M::Verr, M::Verw], verr_verw);
    t.set(&[M::Arpl], arpl);
}

impl Interpreter {
    /// #UD outside protected mode (real and virtual-8086 mode).
    fn require_protected(&self) -> R<()> {
        if !self.protected_mode() || self.vm86() {
            return Err(Fault::ud());
        }
        Ok(())
    }

    /// Sets ZF alone, leaving the other flags as they are.
    fn set_zf(&mut self, zf: bool) {
        let f = self.s.flags() & !flags::ZF;
        self.s.set_flags(if zf { f | flags::ZF } else { f });
    }
}

/// Whether a system descriptor type is one LAR (or, `lsl`, LSL) reports
/// (SDM LAR and LSL, "Segment and Gate Types"): gates have no limit, and
/// long mode knows only the LDT (LSL), 64-bit TSSs and 64-bit call gates
/// (LAR).
fn valid_system_type(type_: u8, lsl: bool, long: bool) -> bool {
    match (lsl, long) {
        (false, false) => matches!(type_, sys::TSS16 | sys::LDT | sys::TSS16_BUSY | sys::CALL16 | sys::TASK | sys::TSS32 | sys::TSS32_BUSY | sys::CALL32),
        (false, true) => matches!(type_, sys::TSS32 | sys::TSS32_BUSY | sys::CALL32),
        (true, false) => matches!(type_, sys::TSS16 | sys::LDT | sys::TSS16_BUSY | sys::TSS32 | sys::TSS32_BUSY),
        (true, true) => matches!(type_, sys::LDT | sys::TSS32 | sys::TSS32_BUSY),
    }
}

fn lar_lsl(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.require_protected()?;
    let selector = cpu.read_op(ins, 1)? as u16;
    let lsl = ins.mnemonic() == M::Lsl;
    let Some((_, raw)) = cpu.lookup_descriptor(selector)? else {
        cpu.set_zf(false);
        return Ok(());
    };
    let d = descriptor_to_segment(selector, raw);
    let conforming_code = is_code(&d) && d.type_ & 0x4 != 0;
    let visible = conforming_code || (d.dpl >= cpu.s.cpl() && d.dpl >= (selector & 3) as u8);
    let valid_type = d.s != 0 || valid_system_type(d.type_, lsl, cpu.s.long_mode());
    if !visible || !valid_type {
        cpu.set_zf(false);
        return Ok(());
    }
    let size = cpu.op_size(ins, 0);
    let value = if lsl {
        u64::from(d.limit)
    } else {
        // Bytes 4-7 of the descriptor masked by 00FxFF00h; the "x" (limit
        // bits 19:16) is returned as stored, as AMD documents and Intel
        // parts do.
        (raw >> 32) & 0x00ff_ff00
    };
    cpu.write_op(ins, 0, value & mask(size))?;
    cpu.set_zf(true);
    Ok(())
}

fn verr_verw(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.require_protected()?;
    let selector = cpu.read_op(ins, 0)? as u16;
    let Some((_, raw)) = cpu.lookup_descriptor(selector)? else {
        cpu.set_zf(false);
        return Ok(());
    };
    let d = descriptor_to_segment(selector, raw);
    let code = is_code(&d);
    let conforming_code = code && d.type_ & 0x4 != 0;
    let visible = conforming_code || (d.dpl >= cpu.s.cpl() && d.dpl >= (selector & 3) as u8);
    let ok = d.s != 0
        && visible
        && if ins.mnemonic() == M::Verr {
            // Data segments are always readable, code only with R.
            !code || d.type_ & 0x2 != 0
        } else {
            !code && d.type_ & 0x2 != 0
        };
    cpu.set_zf(ok);
    Ok(())
}

/// ARPL r/m16, r16: raises the destination selector's RPL to the source's.
/// (In 64-bit mode this opcode is MOVSXD, which iced decodes as such.)
fn arpl(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.require_protected()?;
    let dst = cpu.read_op(ins, 0)? & 0xffff;
    let src = cpu.read_op(ins, 1)? & 0xffff;
    if dst & 3 >= src & 3 {
        cpu.set_zf(false);
        return Ok(());
    }
    let new = (dst & !3) | (src & 3);
    if ins.op0_kind() == OpKind::Register {
        // Only the low 16 bits change, whatever the operand size.
        let idx = gpr_index(ins.op0_register());
        cpu.s.gpr[idx] = (cpu.s.gpr[idx] & !0xffff) | new;
    } else {
        cpu.write_op(ins, 0, new)?;
    }
    cpu.set_zf(true);
    Ok(())
}
