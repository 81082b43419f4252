//! Data movement and arithmetic: MOV, MOVZX/MOVSX/MOVSXD, LEA, the
//! two-operand ALU operations, INC/DEC/NEG/NOT, shifts by an immediate
//! (lazy records, as in the interpreter), SETcc and CMOVcc, with the
//! interpreter's semantics (see
//! `emu_core::interp::exec::{alu, data, shift}`).

use cranelift_codegen::ir::{types, InstBuilder, Value};
use emu_core::cpu::FlagsOp;
use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::flags;
use crate::lower_mem::{address, check_mem, load, store, Addr};
use crate::translate::{is_gpr, mask, Lower, Unsupported, L};

/// Whether an operand kind is an immediate.
pub(crate) fn is_imm(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

/// An immediate operand as the interpreter's `read_op` gives it.
pub(crate) fn imm(ins: &Instruction, n: u32) -> u64 {
    match ins.op_kind(n) {
        OpKind::Immediate8 => u64::from(ins.immediate8()),
        OpKind::Immediate16 => u64::from(ins.immediate16()),
        OpKind::Immediate32 => u64::from(ins.immediate32()),
        OpKind::Immediate64 => ins.immediate64(),
        OpKind::Immediate8to16 => ins.immediate8to16() as u16 as u64,
        OpKind::Immediate8to32 => ins.immediate8to32() as u32 as u64,
        OpKind::Immediate8to64 => ins.immediate8to64() as u64,
        OpKind::Immediate32to64 => ins.immediate32to64() as u64,
        _ => 0,
    }
}

/// A register or memory operand, its address computed once.
#[derive(Clone, Copy)]
pub(crate) enum Loc {
    Reg(Register),
    Mem(Addr),
}

/// The size of operand `n` when the lowering handles it.
pub(crate) fn op_size(ins: &Instruction, n: u32) -> L<usize> {
    let size = match ins.op_kind(n) {
        OpKind::Register if is_gpr(ins.op_register(n)) => ins.op_register(n).size(),
        OpKind::Memory => {
            check_mem(ins)?;
            ins.memory_size().size()
        }
        _ => return Err(Unsupported),
    };
    if matches!(size, 1 | 2 | 4 | 8) {
        Ok(size)
    } else {
        Err(Unsupported)
    }
}

/// Checks that operand `n` is a GPR, a handled memory operand or (when
/// `imm_ok`) an immediate.
pub(crate) fn check(ins: &Instruction, n: u32, imm_ok: bool) -> L<()> {
    if imm_ok && is_imm(ins.op_kind(n)) {
        return Ok(());
    }
    op_size(ins, n).map(|_| ())
}

pub(crate) fn loc(l: &mut Lower<'_, '_>, ins: &Instruction, n: u32) -> Loc {
    match ins.op_kind(n) {
        OpKind::Memory => Loc::Mem(address(l, ins)),
        _ => Loc::Reg(ins.op_register(n)),
    }
}

pub(crate) fn read_loc(l: &mut Lower<'_, '_>, ins: &Instruction, at: Loc, size: usize) -> Value {
    match at {
        Loc::Reg(r) => l.read_reg(r),
        Loc::Mem(a) => load(l, ins, a, size),
    }
}

pub(crate) fn write_loc(l: &mut Lower<'_, '_>, ins: &Instruction, at: Loc, size: usize, v: Value) {
    match at {
        Loc::Reg(r) => l.write_reg(r, v),
        Loc::Mem(a) => store(l, ins, a, size, v),
    }
}

/// Reads a source operand (register, memory or immediate) at `size`.
pub(crate) fn read_src(l: &mut Lower<'_, '_>, ins: &Instruction, n: u32, size: usize) -> Value {
    if is_imm(ins.op_kind(n)) {
        let v = imm(ins, n) & mask(size);
        return l.iconst(v);
    }
    let at = loc(l, ins, n);
    read_loc(l, ins, at, size)
}

pub(crate) fn masked(l: &mut Lower<'_, '_>, v: Value, size: usize) -> Value {
    l.zext(v, size)
}

/// MOV between GPRs, memory and immediates.
pub(crate) fn mov(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let size = op_size(ins, 0)?;
    check(ins, 1, true)?;
    if ins.op0_kind() == OpKind::Memory && ins.op1_kind() == OpKind::Memory {
        return Err(Unsupported);
    }
    let v = read_src(l, ins, 1, size);
    let dst = loc(l, ins, 0);
    write_loc(l, ins, dst, size, v);
    Ok(())
}

/// MOVZX, MOVSX, MOVSXD.
pub(crate) fn movx(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    if ins.op0_kind() != OpKind::Register {
        return Err(Unsupported);
    }
    op_size(ins, 0)?;
    let src_size = op_size(ins, 1)?;
    let v = read_src(l, ins, 1, src_size);
    let v = if ins.mnemonic() == M::Movzx { v } else { flags::sext(l, v, src_size) };
    l.write_reg(ins.op0_register(), v);
    Ok(())
}

/// LEA: the effective address, truncated to the destination.
pub(crate) fn lea(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    if ins.op0_kind() != OpKind::Register || ins.op1_kind() != OpKind::Memory {
        return Err(Unsupported);
    }
    op_size(ins, 0)?;
    check_mem(ins)?;
    let a = address(l, ins);
    l.write_reg(ins.op0_register(), a.ea);
    Ok(())
}

/// ADD, OR, ADC, SBB, AND, SUB, XOR, CMP, TEST.
pub(crate) fn binary(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let size = op_size(ins, 0)?;
    check(ins, 1, true)?;
    if ins.has_lock_prefix() && ins.op0_kind() != OpKind::Memory {
        return Err(Unsupported);
    }
    let m = ins.mnemonic();
    let dst = loc(l, ins, 0);
    let a = read_loc(l, ins, dst, size);
    let b = read_src(l, ins, 1, size);
    let b = masked(l, b, size);
    let (res, op, carry) = match m {
        M::Add => (l.b.ins().iadd(a, b), FlagsOp::Add, None),
        M::Adc => {
            let c = flags::carry(l);
            let s = l.b.ins().iadd(a, b);
            (l.b.ins().iadd(s, c), FlagsOp::Adc, Some(c))
        }
        M::Sub | M::Cmp => (l.b.ins().isub(a, b), FlagsOp::Sub, None),
        M::Sbb => {
            let c = flags::carry(l);
            let s = l.b.ins().isub(a, b);
            (l.b.ins().isub(s, c), FlagsOp::Sbb, Some(c))
        }
        M::And | M::Test => (l.b.ins().band(a, b), FlagsOp::Logic, None),
        M::Or => (l.b.ins().bor(a, b), FlagsOp::Logic, None),
        _ => (l.b.ins().bxor(a, b), FlagsOp::Logic, None),
    };
    let res = masked(l, res, size);
    if !matches!(m, M::Cmp | M::Test) {
        write_loc(l, ins, dst, size, res);
    }
    match carry {
        Some(c) => flags::set_lazy_carry(l, op, size, a, b, res, c),
        None => flags::set_lazy(l, op, size, a, b, res),
    }
    Ok(())
}

/// INC, DEC, NEG, NOT.
pub(crate) fn unary(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let size = op_size(ins, 0)?;
    if ins.has_lock_prefix() && ins.op0_kind() != OpKind::Memory {
        return Err(Unsupported);
    }
    let dst = loc(l, ins, 0);
    let a = read_loc(l, ins, dst, size);
    let (res, op, src2) = match ins.mnemonic() {
        M::Inc => (l.b.ins().iadd_imm_s(a, 1), Some(FlagsOp::Inc), 1),
        M::Dec => (l.b.ins().iadd_imm_s(a, -1), Some(FlagsOp::Dec), 1),
        M::Neg => (l.b.ins().ineg(a), Some(FlagsOp::Neg), 0),
        _ => (l.b.ins().bnot(a), None, 0),
    };
    let res = masked(l, res, size);
    if let Some(op) = op {
        // The carry INC/DEC keep is read before the write (it is the same
        // either way; a write cannot change the flags).
        let src2 = l.iconst(src2);
        let carry = matches!(op, FlagsOp::Inc | FlagsOp::Dec).then(|| flags::carry(l));
        write_loc(l, ins, dst, size, res);
        match carry {
            Some(c) => flags::set_lazy_carry(l, op, size, a, src2, res, c),
            None => flags::set_lazy(l, op, size, a, src2, res),
        }
    } else {
        write_loc(l, ins, dst, size, res);
    }
    Ok(())
}

/// SHL/SAL, SHR, SAR by an immediate count, with the interpreter's lazy
/// record of the shift (`FlagsOp::Shl` ..) as the pending flags: most are
/// overwritten before anything reads them.
pub(crate) fn shift(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let size = op_size(ins, 0)?;
    let raw = match ins.op_count() {
        1 => 1,
        2 if ins.op1_kind() == OpKind::Immediate8 => u32::from(ins.immediate8()),
        _ => return Err(Unsupported),
    };
    let count = raw & if size == 8 { 0x3f } else { 0x1f };
    let bits = (size * 8) as u32;
    let dst = loc(l, ins, 0);
    let a = read_loc(l, ins, dst, size);
    if count == 0 {
        // No flags change; a register destination is still written.
        if let Loc::Reg(r) = dst {
            l.write_reg(r, a);
        }
        return Ok(());
    }
    let (op, res) = match ins.mnemonic() {
        M::Shl | M::Sal => {
            let res = l.b.ins().ishl_imm_s(a, i64::from(count));
            (FlagsOp::Shl, masked(l, res, size))
        }
        M::Shr => (FlagsOp::Shr, if count >= bits { l.iconst(0) } else { l.b.ins().ushr_imm_s(a, i64::from(count)) }),
        _ => {
            let signed = flags::sext(l, a, size);
            let res = l.b.ins().sshr_imm_s(signed, i64::from(count.min(63)));
            (FlagsOp::Sar, masked(l, res, size))
        }
    };
    write_loc(l, ins, dst, size, res);
    let c = l.iconst(u64::from(count));
    flags::set_lazy(l, op, size, a, c, res);
    Ok(())
}

/// SETcc r/m8.
pub(crate) fn setcc(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    if op_size(ins, 0)? != 1 {
        return Err(Unsupported);
    }
    let c = flags::cond(l, ins.condition_code());
    let v = l.b.ins().uextend(types::I64, c);
    let dst = loc(l, ins, 0);
    write_loc(l, ins, dst, 1, v);
    Ok(())
}

/// CMOVcc r, r/m: the source is read either way, a 32-bit destination is
/// zero-extended either way.
pub(crate) fn cmov(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    if ins.op0_kind() != OpKind::Register {
        return Err(Unsupported);
    }
    let size = op_size(ins, 0)?;
    check(ins, 1, false)?;
    let v = read_src(l, ins, 1, size);
    let c = flags::cond(l, ins.condition_code());
    let cur = l.read_reg(ins.op0_register());
    let new = l.b.ins().select(c, v, cur);
    l.write_reg(ins.op0_register(), new);
    Ok(())
}

/// IMUL r, r/m and IMUL r, r/m, imm (the one-operand form falls back):
/// CF = OF = the signed product overflowed; SF, ZF, PF from the result,
/// AF cleared, as the interpreter's `mul_flags`.
pub(crate) fn imul(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    if !matches!(ins.op_count(), 2 | 3) || ins.op0_kind() != OpKind::Register {
        return Err(Unsupported);
    }
    let size = op_size(ins, 0)?;
    if size == 1 {
        return Err(Unsupported);
    }
    let (src, other) = if ins.op_count() == 2 { (0, 1) } else { (1, 2) };
    check(ins, src, false)?;
    check(ins, other, true)?;
    let x = read_src(l, ins, src, size);
    let y = read_src(l, ins, other, size);
    let x = flags::sext(l, x, size);
    let y = flags::sext(l, y, size);
    let p = l.b.ins().imul(x, y);
    let (lo, overflow) = if size == 8 {
        let hi = l.b.ins().smulhi(x, y);
        let sign = l.b.ins().sshr_imm_s(p, 63);
        (p, l.b.ins().icmp(cranelift_codegen::ir::condcodes::IntCC::NotEqual, hi, sign))
    } else {
        let lo = masked(l, p, size);
        let back = flags::sext(l, lo, size);
        (lo, l.b.ins().icmp(cranelift_codegen::ir::condcodes::IntCC::NotEqual, back, p))
    };
    l.write_reg(ins.op0_register(), lo);
    flags::set_mul(l, lo, size, overflow);
    Ok(())
}
