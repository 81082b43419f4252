//! The decimal-adjust instructions DAA, DAS, AAA, AAS, AAM and AAD, and
//! BOUND. All are invalid in 64-bit mode (iced decodes none of them there,
//! so the fetch raises #UD; the handlers check again).
//!
//! Flags the SDM leaves undefined are set as P6-family and later Intel
//! processors set them (the behaviour Bochs validated on hardware): as if
//! by a logical operation on the final AL. So OF is always cleared; AAA and
//! AAS set SF, ZF and PF from the masked AL (SF is therefore 0); AAM and
//! AAD clear CF and AF and set SF, ZF and PF from AL.

use iced_x86::{Instruction, Mnemonic as M};

use crate::cpu::flags;

use super::super::fault::{vector, Fault, R};
use super::super::operand::{mask, sext};
use super::super::Interpreter;
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Daa, M::Das], daa_das);
    t.set(&[M::Aaa, M::Aas], aaa_aas);
    t.set(&[M::Aam], aam);
    t.set(&[M::Aad], aad);
    t.set(&[M::Bound], bound);
}

/// #UD in 64-bit mode.
fn not_64(cpu: &Interpreter) -> R<()> {
    if cpu.in_64bit_mode() {
        return Err(Fault::ud());
    }
    Ok(())
}

/// SF, ZF and PF of an 8-bit result (OF, AF and CF clear).
fn logic_flags(al: u8) -> u64 {
    let mut f = 0;
    if al & 0x80 != 0 {
        f |= flags::SF;
    }
    if al == 0 {
        f |= flags::ZF;
    }
    if al.count_ones() % 2 == 0 {
        f |= flags::PF;
    }
    f
}

fn daa_das(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    not_64(cpu)?;
    let f = cpu.s.flags();
    let old_al = cpu.s.gpr[0] as u8;
    let old_cf = f & flags::CF != 0;
    let add = ins.mnemonic() == M::Daa;
    let mut al = old_al;
    let (mut cf, mut af) = (false, false);
    if old_al & 0xf > 9 || f & flags::AF != 0 {
        cf = old_cf || if add { old_al > 0xf9 } else { old_al < 6 };
        al = if add { al.wrapping_add(6) } else { al.wrapping_sub(6) };
        af = true;
    }
    if old_al > 0x99 || old_cf {
        al = if add { al.wrapping_add(0x60) } else { al.wrapping_sub(0x60) };
        cf = true;
    } else if add {
        // DAA clears CF here; DAS keeps the borrow of the low digit.
        cf = false;
    }
    cpu.s.gpr[0] = (cpu.s.gpr[0] & !0xff) | u64::from(al);
    let mut out = logic_flags(al);
    if cf {
        out |= flags::CF;
    }
    if af {
        out |= flags::AF;
    }
    cpu.set_arith_flags(out);
    Ok(())
}

fn aaa_aas(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    not_64(cpu)?;
    let f = cpu.s.flags();
    let mut ax = cpu.s.gpr[0] as u16;
    let adjust = ax & 0xf > 9 || f & flags::AF != 0;
    if adjust {
        // AX +/- 6 with AH +/- 1: the carry out of AL reaches AH too.
        ax = if ins.mnemonic() == M::Aaa { ax.wrapping_add(0x106) } else { ax.wrapping_sub(0x106) };
    }
    ax &= 0xff0f;
    cpu.s.gpr[0] = (cpu.s.gpr[0] & !0xffff) | u64::from(ax);
    let mut out = logic_flags(ax as u8);
    if adjust {
        out |= flags::CF | flags::AF;
    }
    cpu.set_arith_flags(out);
    Ok(())
}

fn aam(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    not_64(cpu)?;
    let base = ins.immediate8();
    if base == 0 {
        return Err(Fault::de());
    }
    let al = cpu.s.gpr[0] as u8;
    let (ah, al) = (al / base, al % base);
    cpu.s.gpr[0] = (cpu.s.gpr[0] & !0xffff) | u64::from(ah) << 8 | u64::from(al);
    cpu.set_arith_flags(logic_flags(al));
    Ok(())
}

fn aad(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    not_64(cpu)?;
    let base = ins.immediate8();
    let ax = cpu.s.gpr[0];
    let al = ((ax >> 8) as u8).wrapping_mul(base).wrapping_add(ax as u8);
    cpu.s.gpr[0] = (ax & !0xffff) | u64::from(al);
    cpu.set_arith_flags(logic_flags(al));
    Ok(())
}

/// BOUND r16/r32, m16&16/m32&32: #BR unless lower <= index <= upper
/// (signed).
fn bound(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    not_64(cpu)?;
    let r = ins.op0_register();
    let size = r.size();
    let (sreg, off) = cpu.mem_operand(ins);
    let upper_off = off.wrapping_add(size as u64) & mask(cpu.address_size(ins));
    let lower = sext(cpu.read_mem(sreg, off, size)?, size) as i64;
    let upper = sext(cpu.read_mem(sreg, upper_off, size)?, size) as i64;
    let index = sext(cpu.reg(r), size) as i64;
    if index < lower || index > upper {
        return Err(Fault::exception(vector::BR));
    }
    Ok(())
}
