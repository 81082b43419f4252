//! PUSH and POP in all their forms, PUSHA/POPA, PUSHF/POPF, ENTER, LEAVE.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::cpu::{flags, reg, seg};

use super::super::fault::{Fault, R};
use super::super::operand::{mask, seg_index};
use super::super::Interpreter;
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Push], push);
    t.set(&[M::Pop], pop);
    t.set(&[M::Pusha, M::Pushad], pusha);
    t.set(&[M::Popa, M::Popad], popa);
    t.set(&[M::Pushf, M::Pushfd, M::Pushfq], pushf);
    t.set(&[M::Popf, M::Popfd, M::Popfq], popf);
    t.set(&[M::Enter], enter);
    t.set(&[M::Leave], leave);
}

/// The operand size of a stack instruction: from its memory access size.
fn push_size(cpu: &Interpreter, ins: &Instruction) -> usize {
    let inc = ins.stack_pointer_increment().unsigned_abs() as usize;
    if inc != 0 {
        inc
    } else {
        (cpu.bitness() / 8) as usize
    }
}

fn push(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = push_size(cpu, ins);
    let v = match ins.op0_kind() {
        OpKind::Register if ins.op0_register().is_segment_register() => cpu.reg_any(ins.op0_register()),
        _ => cpu.read_op(ins, 0)?,
    };
    cpu.push(v & mask(size), size)
}

fn pop(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = push_size(cpu, ins);
    if ins.op0_kind() == OpKind::Register && ins.op0_register().is_segment_register() {
        let v = cpu.peek(0, size)? as u16;
        cpu.load_segment(seg_index(ins.op0_register()), v)?;
        cpu.adjust_sp(size as u64);
        return Ok(());
    }
    if ins.op0_kind() == OpKind::Memory {
        // The address uses RSP after the pop (SDM POP).
        let v = cpu.peek(0, size)?;
        let saved = cpu.s.gpr[reg::RSP];
        cpu.adjust_sp(size as u64);
        if let Err(e) = cpu.write_op(ins, 0, v) {
            cpu.s.gpr[reg::RSP] = saved;
            return Err(e);
        }
        return Ok(());
    }
    let v = cpu.pop(size)?;
    cpu.write_op(ins, 0, v)
}

const PUSHA16: [Register; 8] = [Register::AX, Register::CX, Register::DX, Register::BX, Register::SP, Register::BP, Register::SI, Register::DI];
const PUSHA32: [Register; 8] = [Register::EAX, Register::ECX, Register::EDX, Register::EBX, Register::ESP, Register::EBP, Register::ESI, Register::EDI];

fn pusha(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let (regs, size) = if ins.mnemonic() == M::Pusha { (PUSHA16, 2) } else { (PUSHA32, 4) };
    let values: Vec<u64> = regs.iter().map(|r| cpu.reg(*r)).collect();
    let saved = cpu.s.gpr[reg::RSP];
    for v in values {
        if let Err(e) = cpu.push(v, size) {
            cpu.s.gpr[reg::RSP] = saved;
            return Err(e);
        }
    }
    Ok(())
}

fn popa(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let (regs, size) = if ins.mnemonic() == M::Popa { (PUSHA16, 2) } else { (PUSHA32, 4) };
    let mut values = [0u64; 8];
    for (i, v) in values.iter_mut().enumerate() {
        *v = cpu.peek((i * size) as u64, size)?;
    }
    for (i, r) in regs.iter().rev().enumerate() {
        // The saved SP is skipped.
        if r.full_register() != Register::RSP {
            cpu.set_reg(*r, values[i]);
        }
    }
    cpu.adjust_sp(8 * size as u64);
    Ok(())
}

fn pushf(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    if cpu.vm86() && (cpu.s.rflags & flags::IOPL) >> 12 != 3 {
        return Err(Fault::gp0());
    }
    let size = push_size(cpu, ins);
    // VM and RF read as zero in the pushed image.
    let f = cpu.s.flags() & !(flags::VM | flags::RF);
    cpu.push(f & mask(size), size)
}

fn popf(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = push_size(cpu, ins);
    let iopl = ((cpu.s.rflags & flags::IOPL) >> 12) as u8;
    if cpu.vm86() && iopl != 3 {
        return Err(Fault::gp0());
    }
    let v = cpu.peek(0, size)?;
    let cpl = cpu.s.cpl();
    let mut changeable = flags::ARITH | flags::TF | flags::DF | flags::NT | flags::AC | flags::ID;
    if !cpu.protected_mode() || cpl <= iopl {
        changeable |= flags::IF;
    }
    if !cpu.protected_mode() || (cpl == 0 && !cpu.vm86()) {
        changeable |= flags::IOPL;
    }
    if size == 2 {
        changeable &= 0xffff;
    }
    let new = (cpu.s.flags() & !changeable) | (v & changeable);
    cpu.s.set_flags(new & !flags::RF);
    cpu.adjust_sp(size as u64);
    Ok(())
}

fn enter(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = push_size(cpu, ins).clamp(2, 8);
    let size = if size == 2 || size == 4 || size == 8 { size } else { 2 };
    let alloc = u64::from(ins.immediate16());
    let level = ins.immediate8_2nd() & 31;
    let ss_size = cpu.stack_size();
    let bp = match size {
        2 => Register::BP,
        4 => Register::EBP,
        _ => Register::RBP,
    };
    let saved_rsp = cpu.s.gpr[reg::RSP];
    let saved_rbp = cpu.s.gpr[reg::RBP];
    let result = (|| {
        cpu.push(cpu.reg(bp), size)?;
        let frame = cpu.s.gpr[reg::RSP] & mask(ss_size);
        let mut rbp = cpu.reg(bp);
        for _ in 1..level {
            rbp = rbp.wrapping_sub(size as u64) & mask(ss_size);
            let v = cpu.read_mem(seg::SS, rbp, size)?;
            cpu.push(v, size)?;
        }
        if level > 0 {
            cpu.push(frame, size)?;
        }
        cpu.set_reg(bp, frame);
        let sp = cpu.s.gpr[reg::RSP].wrapping_sub(alloc);
        // The new top of stack must be writable.
        let top = sp & mask(ss_size);
        let byte = cpu.read_mem(seg::SS, top, 1)?;
        cpu.write_mem(seg::SS, top, 1, byte)?;
        cpu.adjust_sp(0u64.wrapping_sub(alloc));
        Ok(())
    })();
    if result.is_err() {
        cpu.s.gpr[reg::RSP] = saved_rsp;
        cpu.s.gpr[reg::RBP] = saved_rbp;
    }
    result
}

fn leave(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = push_size(cpu, ins);
    let ss_size = cpu.stack_size();
    let bp = cpu.s.gpr[reg::RBP] & mask(ss_size);
    let v = cpu.read_mem(seg::SS, bp, size)?;
    let m = mask(ss_size);
    let rsp = &mut cpu.s.gpr[reg::RSP];
    *rsp = if m == u64::MAX { bp } else { (*rsp & !m) | bp };
    cpu.adjust_sp(size as u64);
    let r = match size {
        2 => Register::BP,
        4 => Register::EBP,
        _ => Register::RBP,
    };
    cpu.set_reg(r, v);
    Ok(())
}
