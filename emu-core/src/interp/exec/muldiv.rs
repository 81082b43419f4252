//! MUL, IMUL (one, two and three operands), DIV and IDIV. #DE on division
//! by zero and on a quotient that does not fit.

use iced_x86::{Instruction, Mnemonic as M, Register};

use crate::cpu::{flags, reg};

use super::super::fault::{Fault, R};
use super::super::operand::{mask, sext};
use super::super::Interpreter;
use super::shift::szp;
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Mul], mul);
    t.set(&[M::Imul], imul);
    t.set(&[M::Div, M::Idiv], div);
}

fn acc_regs(size: usize) -> (Register, Register) {
    match size {
        1 => (Register::AL, Register::AH),
        2 => (Register::AX, Register::DX),
        4 => (Register::EAX, Register::EDX),
        _ => (Register::RAX, Register::RDX),
    }
}

/// CF = OF = `overflow`; SF, ZF, PF from the low half (undefined by the
/// SDM), AF cleared.
fn mul_flags(cpu: &mut Interpreter, low: u64, size: usize, overflow: bool) {
    let mut f = szp(low, size);
    if overflow {
        f |= flags::CF | flags::OF;
    }
    cpu.set_arith_flags(f);
}

fn write_wide(cpu: &mut Interpreter, size: usize, lo: u64, hi: u64) {
    if size == 1 {
        cpu.set_reg(Register::AX, (hi & 0xff) << 8 | (lo & 0xff));
    } else {
        let (l, h) = acc_regs(size);
        cpu.set_reg(l, lo);
        cpu.set_reg(h, hi);
    }
}

fn mul(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = cpu.op_size(ins, 0);
    let m = mask(size);
    let src = cpu.read_op(ins, 0)?;
    let a = cpu.s.gpr[reg::RAX] & m;
    let p = u128::from(a) * u128::from(src);
    let bits = size * 8;
    let lo = (p as u64) & m;
    let hi = ((p >> bits) as u64) & m;
    write_wide(cpu, size, lo, hi);
    mul_flags(cpu, lo, size, hi != 0);
    Ok(())
}

fn imul(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = cpu.op_size(ins, 0);
    let m = mask(size);
    let bits = size * 8;
    if ins.op_count() == 1 {
        let src = sext(cpu.read_op(ins, 0)?, size) as i64 as i128;
        let a = sext(cpu.s.gpr[reg::RAX], size) as i64 as i128;
        let p = a * src;
        let lo = (p as u64) & m;
        let hi = ((p >> bits) as u64) & m;
        write_wide(cpu, size, lo, hi);
        let overflow = i128::from(sext(lo, size) as i64) != p;
        mul_flags(cpu, lo, size, overflow);
        return Ok(());
    }
    let (x, y) = if ins.op_count() == 2 { (cpu.read_op(ins, 0)?, cpu.read_op(ins, 1)?) } else { (cpu.read_op(ins, 1)?, cpu.read_op(ins, 2)?) };
    let p = (sext(x, size) as i64 as i128) * (sext(y, size) as i64 as i128);
    let lo = (p as u64) & m;
    cpu.write_op(ins, 0, lo)?;
    mul_flags(cpu, lo, size, i128::from(sext(lo, size) as i64) != p);
    Ok(())
}

fn div(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = cpu.op_size(ins, 0);
    let m = mask(size);
    let bits = size * 8;
    let divisor = cpu.read_op(ins, 0)? & m;
    if divisor == 0 {
        return Err(Fault::de());
    }
    let (lo, hi) = if size == 1 {
        (cpu.s.gpr[reg::RAX] & 0xff, (cpu.s.gpr[reg::RAX] >> 8) & 0xff)
    } else {
        (cpu.s.gpr[reg::RAX] & m, cpu.s.gpr[reg::RDX] & m)
    };
    let dividend = (u128::from(hi) << bits) | u128::from(lo);
    let (q, r) = if ins.mnemonic() == M::Div {
        let q = dividend / u128::from(divisor);
        if q > u128::from(m) {
            return Err(Fault::de());
        }
        (q as u64, (dividend % u128::from(divisor)) as u64)
    } else {
        // Sign-extend the 2*bits dividend to i128.
        let shift = 128 - 2 * bits as u32;
        let n = ((dividend << shift) as i128) >> shift;
        let d = sext(divisor, size) as i64 as i128;
        let q = n.checked_div(d).ok_or_else(Fault::de)?;
        let min = -(1i128 << (bits - 1));
        let max = (1i128 << (bits - 1)) - 1;
        if q < min || q > max {
            return Err(Fault::de());
        }
        ((q as u64) & m, ((n % d) as u64) & m)
    };
    write_wide(cpu, size, q, r);
    Ok(())
}
