//! Two-operand arithmetic and logic, INC/DEC/NEG/NOT, with lazily
//! evaluated flags.

use iced_x86::{Instruction, Mnemonic as M};

use crate::cpu::FlagsOp;

use super::super::fault::R;
use super::super::operand::mask;
use super::super::Interpreter;
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Add, M::Or, M::Adc, M::Sbb, M::And, M::Sub, M::Xor, M::Cmp, M::Test], binary);
    t.set(&[M::Inc, M::Dec, M::Neg, M::Not], unary);
}

/// The two-operand operations, numbered for the specialised handlers'
/// const parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum AluOp {
    Add,
    Or,
    Adc,
    Sbb,
    And,
    Sub,
    Xor,
    Cmp,
    Test,
}

impl AluOp {
    pub(super) fn of(m: M) -> Option<Self> {
        Some(match m {
            M::Add => AluOp::Add,
            M::Or => AluOp::Or,
            M::Adc => AluOp::Adc,
            M::Sbb => AluOp::Sbb,
            M::And => AluOp::And,
            M::Sub => AluOp::Sub,
            M::Xor => AluOp::Xor,
            M::Cmp => AluOp::Cmp,
            M::Test => AluOp::Test,
            _ => return None,
        })
    }

    pub(super) const fn from_u8(v: u8) -> Self {
        match v {
            0 => AluOp::Add,
            1 => AluOp::Or,
            2 => AluOp::Adc,
            3 => AluOp::Sbb,
            4 => AluOp::And,
            5 => AluOp::Sub,
            6 => AluOp::Xor,
            7 => AluOp::Cmp,
            _ => AluOp::Test,
        }
    }

    /// Whether the result is written back (CMP and TEST only set flags).
    pub(super) fn writes(self) -> bool {
        !matches!(self, AluOp::Cmp | AluOp::Test)
    }
}

/// Computes `a op b` at `size` bytes, records the flags lazily and returns
/// the result.
#[inline(always)]
pub(super) fn alu(cpu: &mut Interpreter, op: AluOp, size: usize, a: u64, b: u64) -> u64 {
    let m = mask(size);
    let b = b & m;
    let (res, flags_op, carry) = match op {
        AluOp::Add => (a.wrapping_add(b), FlagsOp::Add, None),
        AluOp::Adc => {
            let c = cpu.carry();
            (a.wrapping_add(b).wrapping_add(u64::from(c)), FlagsOp::Adc, Some(c))
        }
        AluOp::Sub | AluOp::Cmp => (a.wrapping_sub(b), FlagsOp::Sub, None),
        AluOp::Sbb => {
            let c = cpu.carry();
            (a.wrapping_sub(b).wrapping_sub(u64::from(c)), FlagsOp::Sbb, Some(c))
        }
        AluOp::And | AluOp::Test => (a & b, FlagsOp::Logic, None),
        AluOp::Or => (a | b, FlagsOp::Logic, None),
        AluOp::Xor => (a ^ b, FlagsOp::Logic, None),
    };
    let res = res & m;
    match carry {
        Some(c) => cpu.set_lazy_carry(flags_op, size, a, b, res, c),
        None => cpu.set_lazy(flags_op, size, a, b, res),
    }
    res
}

fn binary(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let Some(op) = AluOp::of(ins.mnemonic()) else { return Ok(()) };
    let size = cpu.op_size(ins, 0);
    let a = cpu.read_op(ins, 0)?;
    let b = cpu.read_op(ins, 1)?;
    // A faulting write leaves the flags as they were (found by the JIT's
    // differential tests: a #PF on ADD [mem] kept the new flags).
    let saved = cpu.s.lazy;
    let res = alu(cpu, op, size, a, b);
    if op.writes() {
        if let Err(e) = cpu.write_op(ins, 0, res) {
            cpu.s.lazy = saved;
            return Err(e);
        }
    }
    Ok(())
}

fn unary(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = cpu.op_size(ins, 0);
    let m = mask(size);
    let a = cpu.read_op(ins, 0)?;
    match ins.mnemonic() {
        M::Inc => {
            let res = a.wrapping_add(1) & m;
            cpu.write_op(ins, 0, res)?;
            cpu.set_lazy(FlagsOp::Inc, size, a, 1, res);
        }
        M::Dec => {
            let res = a.wrapping_sub(1) & m;
            cpu.write_op(ins, 0, res)?;
            cpu.set_lazy(FlagsOp::Dec, size, a, 1, res);
        }
        M::Neg => {
            let res = 0u64.wrapping_sub(a) & m;
            cpu.write_op(ins, 0, res)?;
            cpu.set_lazy(FlagsOp::Neg, size, a, 0, res);
        }
        _ => cpu.write_op(ins, 0, !a & m)?,
    }
    Ok(())
}
