//! Control transfers: near and far JMP, Jcc, CALL, RET, LOOP, JCXZ, the
//! software interrupts and IRET.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::cpu::{flags, seg};

use super::super::fault::{vector, Fault, R};
use super::super::operand::mask;
use super::super::Interpreter;
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Jmp], jmp);
    t.set(&[M::Jo, M::Jno, M::Jb, M::Jae, M::Je, M::Jne, M::Jbe, M::Ja, M::Js, M::Jns, M::Jp, M::Jnp, M::Jl, M::Jge, M::Jle, M::Jg], jcc);
    t.set(&[M::Call], call);
    t.set(&[M::Ret, M::Retf], ret);
    t.set(&[M::Loop, M::Loope, M::Loopne, M::Jcxz, M::Jecxz, M::Jrcxz], loop_);
    t.set(&[M::Int, M::Int3, M::Into, M::Int1], int);
    t.set(&[M::Iret, M::Iretd, M::Iretq], iret);
    t.set(&[M::Ud0, M::Ud1, M::Ud2], |_, _| Err(Fault::ud()));
}

/// The size of the instruction pointer a near branch writes.
fn ip_size(cpu: &Interpreter, ins: &Instruction) -> usize {
    if cpu.in_64bit_mode() {
        8
    } else {
        match ins.op0_kind() {
            OpKind::NearBranch16 => 2,
            OpKind::NearBranch32 => 4,
            _ => cpu.op_size(ins, 0).min(4),
        }
    }
}

/// A near branch: the target must lie within CS (or be canonical).
fn branch(cpu: &mut Interpreter, target: u64) -> R<()> {
    if cpu.in_64bit_mode() {
        if !super::super::access::is_canonical(target) {
            return Err(Fault::gp0());
        }
    } else if target > u64::from(cpu.s.segs[seg::CS].limit) {
        return Err(Fault::gp0());
    }
    cpu.next_rip = target;
    Ok(())
}

/// The far pointer operand of a far JMP/CALL: (selector, offset, size).
fn far_target(cpu: &mut Interpreter, ins: &Instruction) -> R<Option<(u16, u64, usize)>> {
    match ins.op0_kind() {
        OpKind::FarBranch16 => Ok(Some((ins.far_branch_selector(), u64::from(ins.far_branch16()), 2))),
        OpKind::FarBranch32 => Ok(Some((ins.far_branch_selector(), u64::from(ins.far_branch32()), 4))),
        OpKind::Memory if ins.memory_size().is_packed() || is_far_memory(ins) => {
            let (sreg, off) = cpu.mem_operand(ins);
            let size = ins.memory_size().size() - 2;
            let offset = cpu.read_mem(sreg, off, size)?;
            let selector = cpu.read_mem(sreg, off + size as u64, 2)? as u16;
            Ok(Some((selector, offset, size)))
        }
        _ => Ok(None),
    }
}

fn is_far_memory(ins: &Instruction) -> bool {
    use iced_x86::MemorySize as S;
    matches!(ins.memory_size(), S::SegPtr16 | S::SegPtr32 | S::SegPtr64)
}

fn jmp(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let near = matches!(ins.op0_kind(), OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64);
    if !near {
        if let Some((sel, off, _)) = far_target(cpu, ins)? {
            return cpu.far_jump(sel, off);
        }
    }
    let target = match ins.op0_kind() {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => ins.near_branch_target(),
        _ => cpu.read_op(ins, 0)?,
    };
    branch(cpu, target & mask(ip_size(cpu, ins)))
}

fn jcc(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    if cpu.cond(ins.condition_code()) {
        branch(cpu, ins.near_branch_target() & mask(ip_size(cpu, ins)))?;
    }
    Ok(())
}

fn call(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let near = matches!(ins.op0_kind(), OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64);
    if !near {
        if let Some((sel, off, size)) = far_target(cpu, ins)? {
            return cpu.far_call(sel, off, size);
        }
    }
    let size = ip_size(cpu, ins);
    let target = match ins.op0_kind() {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => ins.near_branch_target(),
        _ => cpu.read_op(ins, 0)?,
    } & mask(size);
    // Check the target before pushing, so a bad target faults cleanly.
    let saved = cpu.next_rip;
    branch(cpu, target)?;
    cpu.next_rip = saved;
    cpu.push(saved & mask(size), size)?;
    cpu.next_rip = target;
    Ok(())
}

fn ret(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let imm = if ins.op_count() > 0 { u64::from(ins.immediate16()) } else { 0 };
    // The stack moves by one (near) or two (far) values plus the
    // immediate, which gives the operand size without the opcode tables.
    let values = if ins.mnemonic() == M::Retf { 2 } else { 1 };
    let size = ((ins.stack_pointer_increment() as u64).wrapping_sub(imm) / values) as usize;
    if ins.mnemonic() == M::Retf {
        return cpu.far_return(size, imm);
    }
    let target = cpu.peek(0, size)?;
    branch(cpu, target)?;
    cpu.adjust_sp(size as u64 + imm);
    Ok(())
}

fn loop_(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let counter = match ins.op1_register() {
        Register::CX => Register::CX,
        Register::ECX => Register::ECX,
        Register::RCX => Register::RCX,
        _ => match ins.code().op_code().address_size() {
            16 => Register::CX,
            32 => Register::ECX,
            64 => Register::RCX,
            _ => match cpu.bitness() {
                16 => Register::CX,
                32 => Register::ECX,
                _ => Register::RCX,
            },
        },
    };
    let taken = match ins.mnemonic() {
        M::Jcxz | M::Jecxz | M::Jrcxz => cpu.reg(counter) == 0,
        m => {
            let c = cpu.reg(counter).wrapping_sub(1) & mask(counter.size());
            cpu.set_reg(counter, c);
            let zf = cpu.flag(flags::ZF);
            c != 0 && match m {
                M::Loope => zf,
                M::Loopne => !zf,
                _ => true,
            }
        }
    };
    if taken {
        branch(cpu, ins.near_branch_target() & mask(ip_size(cpu, ins)))?;
    }
    Ok(())
}

fn int(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let v = match ins.mnemonic() {
        M::Int3 => vector::BP,
        M::Int1 => vector::DB,
        M::Into => {
            if cpu.in_64bit_mode() {
                return Err(Fault::ud());
            }
            if !cpu.flag(flags::OF) {
                return Ok(());
            }
            vector::OF
        }
        _ => ins.immediate8(),
    };
    // INT n in virtual-8086 mode with IOPL < 3 is #GP(0).
    if cpu.vm86() && ins.mnemonic() == M::Int && (cpu.s.rflags & flags::IOPL) >> 12 != 3 {
        return Err(Fault::gp0());
    }
    cpu.software_interrupt(v)
}

fn iret(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = match ins.mnemonic() {
        M::Iret => 2,
        M::Iretd => 4,
        _ => 8,
    };
    cpu.iret(size)
}
