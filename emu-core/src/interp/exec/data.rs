//! Data movement: MOV and its extending forms, LEA, XCHG, CMOVcc, SETcc,
//! BSWAP, the sign-extension family, XLAT, the atomic read-modify-writes
//! (XADD, CMPXCHG, CMPXCHG8B/16B), and the direct flag instructions.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::cpu::{flags, reg, FlagsOp};

use super::super::fault::{Fault, R};
use super::super::operand::{mask, seg_index, sext};
use super::super::Interpreter;
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Mov], mov);
    t.set(&[M::Movzx], movzx);
    t.set(&[M::Movsx, M::Movsxd], movsx);
    t.set(&[M::Lea], lea);
    t.set(&[M::Xchg], xchg);
    t.set(&[M::Cmovo, M::Cmovno, M::Cmovb, M::Cmovae, M::Cmove, M::Cmovne, M::Cmovbe, M::Cmova, M::Cmovs, M::Cmovns, M::Cmovp, M::Cmovnp, M::Cmovl, M::Cmovge, M::Cmovle, M::Cmovg], cmov);
    t.set(&[M::Seto, M::Setno, M::Setb, M::Setae, M::Sete, M::Setne, M::Setbe, M::Seta, M::Sets, M::Setns, M::Setp, M::Setnp, M::Setl, M::Setge, M::Setle, M::Setg], setcc);
    t.set(&[M::Bswap], bswap);
    t.set(&[M::Cbw, M::Cwde, M::Cdqe, M::Cwd, M::Cdq, M::Cqo], extend_acc);
    t.set(&[M::Xlatb], xlat);
    t.set(&[M::Nop, M::Pause, M::Endbr32, M::Endbr64, M::Lfence, M::Sfence, M::Mfence, M::Prefetch, M::Prefetchnta, M::Prefetcht0, M::Prefetcht1, M::Prefetcht2, M::Prefetchw, M::Clflush, M::Clflushopt], nop);
    t.set(&[M::Xadd], xadd);
    t.set(&[M::Cmpxchg], cmpxchg);
    t.set(&[M::Cmpxchg8b, M::Cmpxchg16b], cmpxchg_wide);
    t.set(&[M::Clc, M::Stc, M::Cmc, M::Cld, M::Std], flag_op);
    t.set(&[M::Lahf, M::Sahf], ahf);
    t.set(&[M::Lds, M::Les, M::Lfs, M::Lgs, M::Lss], load_far_pointer);
}

fn mov(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let dst = ins.op0_register();
    if dst.is_cr() || dst.is_dr() || ins.op1_register().is_cr() || ins.op1_register().is_dr() {
        return super::system::mov_cr_dr(cpu, ins);
    }
    if ins.op0_kind() == OpKind::Register && dst.is_segment_register() {
        let sel = cpu.read_op(ins, 1)? as u16;
        if dst == Register::CS {
            return Err(Fault::ud());
        }
        return cpu.load_segment(seg_index(dst), sel);
    }
    let v = cpu.read_op(ins, 1)?;
    // MOV from a segment register to memory always stores 16 bits; to a
    // register it zero-extends (the operand size of op 0 says which).
    cpu.write_op(ins, 0, v)
}

fn movzx(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let v = cpu.read_op(ins, 1)?;
    cpu.write_op(ins, 0, v)
}

fn movsx(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let src = cpu.op_size(ins, 1);
    let v = sext(cpu.read_op(ins, 1)?, src) & mask(cpu.op_size(ins, 0));
    cpu.write_op(ins, 0, v)
}

fn lea(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let ea = cpu.effective_address(ins);
    cpu.write_op(ins, 0, ea & mask(cpu.op_size(ins, 0)))
}

fn xchg(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let a = cpu.read_op(ins, 0)?;
    let b = cpu.read_op(ins, 1)?;
    // Memory first, so a fault leaves the register unchanged.
    if ins.op1_kind() == OpKind::Memory {
        cpu.write_op(ins, 1, a)?;
        cpu.write_op(ins, 0, b)
    } else {
        cpu.write_op(ins, 0, b)?;
        cpu.write_op(ins, 1, a)
    }
}

fn cmov(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    // The source is read (and may fault) whether or not the move happens;
    // a 32-bit destination is zero-extended either way.
    let v = cpu.read_op(ins, 1)?;
    if cpu.cond(ins.condition_code()) {
        cpu.write_op(ins, 0, v)
    } else {
        let cur = cpu.read_op(ins, 0)?;
        cpu.write_op(ins, 0, cur)
    }
}

fn setcc(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let v = u64::from(cpu.cond(ins.condition_code()));
    cpu.write_op(ins, 0, v)
}

fn bswap(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let r = ins.op0_register();
    let v = cpu.reg(r);
    let out = match r.size() {
        8 => v.swap_bytes(),
        4 => u64::from((v as u32).swap_bytes()),
        // BSWAP of a 16-bit register is undefined; real CPUs give zero.
        _ => 0,
    };
    cpu.set_reg(r, out);
    Ok(())
}

fn extend_acc(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let a = cpu.s.gpr[reg::RAX];
    match ins.mnemonic() {
        M::Cbw => cpu.set_reg(Register::AX, sext(a, 1)),
        M::Cwde => cpu.set_reg(Register::EAX, sext(a, 2)),
        M::Cdqe => cpu.set_reg(Register::RAX, sext(a, 4)),
        M::Cwd => cpu.set_reg(Register::DX, if a & 0x8000 != 0 { 0xffff } else { 0 }),
        M::Cdq => cpu.set_reg(Register::EDX, if a & 0x8000_0000 != 0 { 0xffff_ffff } else { 0 }),
        _ => cpu.set_reg(Register::RDX, if a & (1 << 63) != 0 { u64::MAX } else { 0 }),
    }
    Ok(())
}

fn xlat(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = cpu.address_size(ins);
    let base = cpu.reg(ins.memory_base());
    let off = base.wrapping_add(cpu.s.gpr[reg::RAX] & 0xff) & mask(size);
    let v = cpu.read_mem(seg_index(ins.memory_segment()), off, 1)?;
    cpu.set_reg(Register::AL, v);
    Ok(())
}

fn nop(_: &mut Interpreter, _: &Instruction) -> R<()> {
    Ok(())
}

fn xadd(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = cpu.op_size(ins, 0);
    let a = cpu.read_op(ins, 0)?;
    let b = cpu.read_op(ins, 1)?;
    let sum = a.wrapping_add(b) & mask(size);
    cpu.write_op(ins, 0, sum)?;
    if !(ins.op0_kind() == OpKind::Register && ins.op0_register() == ins.op1_register()) {
        cpu.write_op(ins, 1, a)?;
    }
    cpu.set_lazy(FlagsOp::Add, size, a, b, sum);
    Ok(())
}

fn cmpxchg(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = cpu.op_size(ins, 0);
    let acc = cpu.s.gpr[reg::RAX] & mask(size);
    let dest = cpu.read_op(ins, 0)?;
    cpu.set_lazy(FlagsOp::Sub, size, acc, dest, acc.wrapping_sub(dest) & mask(size));
    if acc == dest {
        let src = cpu.read_op(ins, 1)?;
        cpu.write_op(ins, 0, src)
    } else {
        // The destination is written back either way (a locked cycle).
        if ins.op0_kind() == OpKind::Memory {
            cpu.write_op(ins, 0, dest)?;
        }
        let acc_reg = match size {
            1 => Register::AL,
            2 => Register::AX,
            4 => Register::EAX,
            _ => Register::RAX,
        };
        cpu.set_reg(acc_reg, dest);
        Ok(())
    }
}

fn cmpxchg_wide(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let (sreg, off) = cpu.mem_operand(ins);
    let wide = ins.mnemonic() == M::Cmpxchg16b;
    let half = if wide { 8 } else { 4 };
    if wide && off & 15 != 0 {
        return Err(Fault::gp0());
    }
    let m = mask(half);
    let lo = cpu.read_mem(sreg, off, half)?;
    let hi = cpu.read_mem(sreg, off + half as u64, half)?;
    let (eax, edx) = (cpu.s.gpr[reg::RAX] & m, cpu.s.gpr[reg::RDX] & m);
    let mut f = cpu.s.flags() & !flags::ZF;
    if lo == eax && hi == edx {
        let (ebx, ecx) = (cpu.s.gpr[reg::RBX] & m, cpu.s.gpr[reg::RCX] & m);
        cpu.write_mem(sreg, off, half, ebx)?;
        cpu.write_mem(sreg, off + half as u64, half, ecx)?;
        f |= flags::ZF;
    } else {
        cpu.write_mem(sreg, off, half, lo)?;
        cpu.write_mem(sreg, off + half as u64, half, hi)?;
        let (ra, rd) = if wide { (Register::RAX, Register::RDX) } else { (Register::EAX, Register::EDX) };
        cpu.set_reg(ra, lo);
        cpu.set_reg(rd, hi);
    }
    cpu.set_arith_flags(f);
    Ok(())
}

fn flag_op(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let f = cpu.s.flags();
    let new = match ins.mnemonic() {
        M::Clc => f & !flags::CF,
        M::Stc => f | flags::CF,
        M::Cmc => f ^ flags::CF,
        M::Cld => f & !flags::DF,
        _ => f | flags::DF,
    };
    cpu.s.set_flags(new);
    Ok(())
}

fn ahf(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    const AH_FLAGS: u64 = flags::SF | flags::ZF | flags::AF | flags::PF | flags::CF;
    let f = cpu.s.flags();
    if ins.mnemonic() == M::Lahf {
        cpu.set_reg(Register::AH, (f & AH_FLAGS) | flags::FIXED);
    } else {
        let ah = (cpu.s.gpr[reg::RAX] >> 8) & AH_FLAGS;
        cpu.s.set_flags((f & !AH_FLAGS) | ah);
    }
    Ok(())
}

fn load_far_pointer(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = cpu.op_size(ins, 0);
    let (sreg, off) = cpu.mem_operand(ins);
    let offset = cpu.read_mem(sreg, off, size)?;
    let selector = cpu.read_mem(sreg, off + size as u64, 2)? as u16;
    let target = match ins.mnemonic() {
        M::Lds => crate::cpu::seg::DS,
        M::Les => crate::cpu::seg::ES,
        M::Lfs => crate::cpu::seg::FS,
        M::Lgs => crate::cpu::seg::GS,
        _ => crate::cpu::seg::SS,
    };
    cpu.load_segment(target, selector)?;
    cpu.write_op(ins, 0, offset)
}
