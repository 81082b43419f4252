//! Specialised handlers for the hottest instruction forms, chosen when a
//! block is decoded: register and immediate operands are known then, so
//! these skip the generic operand-kind dispatch. Semantics are shared with
//! the generic handlers (the ALU core is `alu::alu`), and the host-CPU
//! oracle checks both paths.

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::cpu::FlagsOp;

use super::super::fault::R;
use super::super::operand::{mask, reg_info, RegKind};
use super::super::Interpreter;
use super::alu::{alu, AluOp};
use super::Handler;

fn is_gpr(ins: &Instruction, n: u32) -> bool {
    ins.op_kind(n) == OpKind::Register
        && matches!(reg_info(ins.op_register(n)).kind, RegKind::Low8 | RegKind::High8 | RegKind::R16 | RegKind::R32 | RegKind::R64)
}

fn is_imm(ins: &Instruction, n: u32) -> bool {
    matches!(
        ins.op_kind(n),
        OpKind::Immediate8 | OpKind::Immediate16 | OpKind::Immediate32 | OpKind::Immediate64 | OpKind::Immediate8to16 | OpKind::Immediate8to32 | OpKind::Immediate8to64 | OpKind::Immediate32to64
    )
}

/// A specialised handler for `ins`, if it has one.
pub(super) fn select(ins: &Instruction) -> Option<Handler> {
    if ins.has_lock_prefix() {
        return None;
    }
    if ins.op_count() == 1 && is_gpr(ins, 0) {
        return match ins.mnemonic() {
            M::Push => Some(push_r),
            M::Pop => Some(pop_r),
            M::Inc => Some(inc_dec_r::<true>),
            M::Dec => Some(inc_dec_r::<false>),
            _ => None,
        };
    }
    if ins.op_count() != 2 {
        return None;
    }
    match ins.mnemonic() {
        M::Lea if is_gpr(ins, 0) => Some(lea_r),
        M::Movzx if is_gpr(ins, 0) && is_gpr(ins, 1) => Some(mov_rr),
        M::Mov if is_gpr(ins, 0) && is_gpr(ins, 1) => Some(mov_rr),
        M::Mov if is_gpr(ins, 0) && is_imm(ins, 1) => Some(mov_ri),
        M::Mov if is_gpr(ins, 0) && ins.op1_kind() == OpKind::Memory => Some(mov_rm),
        M::Mov if ins.op0_kind() == OpKind::Memory && is_gpr(ins, 1) => Some(mov_mr),
        m => {
            let op = AluOp::of(m)?;
            if is_gpr(ins, 0) && is_gpr(ins, 1) {
                Some(alu_rr_handler(op))
            } else if is_gpr(ins, 0) && is_imm(ins, 1) {
                Some(alu_ri_handler(op))
            } else {
                None
            }
        }
    }
}

fn push_r(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let r = ins.op0_register();
    let v = cpu.reg(r);
    cpu.push(v, usize::from(reg_info(r).size))
}

fn pop_r(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let r = ins.op0_register();
    // POP RSP loads the popped value over the incremented RSP.
    let v = cpu.pop(usize::from(reg_info(r).size))?;
    cpu.set_reg(r, v);
    Ok(())
}

fn inc_dec_r<const INC: bool>(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let r = ins.op0_register();
    let size = usize::from(reg_info(r).size);
    let a = cpu.reg(r);
    let (res, op) = if INC { (a.wrapping_add(1), FlagsOp::Inc) } else { (a.wrapping_sub(1), FlagsOp::Dec) };
    let res = res & mask(size);
    cpu.set_reg(r, res);
    cpu.set_lazy(op, size, a, 1, res);
    Ok(())
}

fn lea_r(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let r = ins.op0_register();
    let ea = cpu.effective_address(ins);
    cpu.set_reg(r, ea & mask(usize::from(reg_info(r).size)));
    Ok(())
}

fn mov_rr(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let v = cpu.reg(ins.op1_register());
    cpu.set_reg(ins.op0_register(), v);
    Ok(())
}

fn mov_ri(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.set_reg(ins.op0_register(), ins.immediate(1));
    Ok(())
}

fn mov_rm(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let (sreg, off) = cpu.mem_operand(ins);
    let v = cpu.read_mem(sreg, off, usize::from(reg_info(ins.op0_register()).size))?;
    cpu.set_reg(ins.op0_register(), v);
    Ok(())
}

fn mov_mr(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let (sreg, off) = cpu.mem_operand(ins);
    let r = ins.op1_register();
    let v = cpu.reg(r);
    cpu.write_mem(sreg, off, usize::from(reg_info(r).size), v)
}

fn alu_rr<const OP: u8>(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let op = AluOp::from_u8(OP);
    let (d, s) = (ins.op0_register(), ins.op1_register());
    let size = usize::from(reg_info(d).size);
    let (a, b) = (cpu.reg(d), cpu.reg(s));
    let res = alu(cpu, op, size, a, b);
    if op.writes() {
        cpu.set_reg(d, res);
    }
    Ok(())
}

fn alu_ri<const OP: u8>(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let op = AluOp::from_u8(OP);
    let d = ins.op0_register();
    let size = usize::from(reg_info(d).size);
    let a = cpu.reg(d);
    let res = alu(cpu, op, size, a, ins.immediate(1));
    if op.writes() {
        cpu.set_reg(d, res);
    }
    Ok(())
}

fn alu_rr_handler(op: AluOp) -> Handler {
    match op {
        AluOp::Add => alu_rr::<0>,
        AluOp::Or => alu_rr::<1>,
        AluOp::Adc => alu_rr::<2>,
        AluOp::Sbb => alu_rr::<3>,
        AluOp::And => alu_rr::<4>,
        AluOp::Sub => alu_rr::<5>,
        AluOp::Xor => alu_rr::<6>,
        AluOp::Cmp => alu_rr::<7>,
        AluOp::Test => alu_rr::<8>,
    }
}

fn alu_ri_handler(op: AluOp) -> Handler {
    match op {
        AluOp::Add => alu_ri::<0>,
        AluOp::Or => alu_ri::<1>,
        AluOp::Adc => alu_ri::<2>,
        AluOp::Sbb => alu_ri::<3>,
        AluOp::And => alu_ri::<4>,
        AluOp::Sub => alu_ri::<5>,
        AluOp::Xor => alu_ri::<6>,
        AluOp::Cmp => alu_ri::<7>,
        AluOp::Test => alu_ri::<8>,
    }
}
