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

fn binary(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = cpu.op_size(ins, 0);
    let m = mask(size);
    let a = cpu.read_op(ins, 0)?;
    let b = cpu.read_op(ins, 1)? & m;
    let carry = || cpu.carry();
    let (res, op, c) = match ins.mnemonic() {
        M::Add => (a.wrapping_add(b), FlagsOp::Add, None),
        M::Adc => {
            let c = carry();
            (a.wrapping_add(b).wrapping_add(u64::from(c)), FlagsOp::Adc, Some(c))
        }
        M::Sub | M::Cmp => (a.wrapping_sub(b), FlagsOp::Sub, None),
        M::Sbb => {
            let c = carry();
            (a.wrapping_sub(b).wrapping_sub(u64::from(c)), FlagsOp::Sbb, Some(c))
        }
        M::And | M::Test => (a & b, FlagsOp::Logic, None),
        M::Or => (a | b, FlagsOp::Logic, None),
        _ => (a ^ b, FlagsOp::Logic, None),
    };
    let res = res & m;
    if !matches!(ins.mnemonic(), M::Cmp | M::Test) {
        cpu.write_op(ins, 0, res)?;
    }
    match c {
        Some(c) => cpu.set_lazy_carry(op, size, a, b, res, c),
        None => cpu.set_lazy(op, size, a, b, res),
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
