//! Control transfers, which end a block: Jcc, JMP, CALL and RET (near,
//! 64-bit). A target that is not canonical raises #GP: static targets are
//! checked when translating (the instruction then falls back), dynamic ones
//! at run time, where a cold path hands the instruction to the
//! interpreter.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value};
use iced_x86::{Instruction, MemorySize, OpKind};

use crate::flags;
use crate::lower_mem::{address, check_mem, load, peek, push_value};
use crate::translate::{Flow, Lower, Unsupported, L};

fn is_canonical(addr: u64) -> bool {
    ((addr as i64) << 16 >> 16) as u64 == addr
}

fn near_target(ins: &Instruction) -> L<u64> {
    if ins.op0_kind() != OpKind::NearBranch64 || !is_canonical(ins.near_branch_target()) {
        return Err(Unsupported);
    }
    Ok(ins.near_branch_target())
}

/// Leaves through the interpreter (cold) when `target` is not canonical.
fn check_canonical(l: &mut Lower<'_, '_>, ins: &Instruction, target: Value) {
    let t = l.b.ins().ishl_imm_s(target, 16);
    let t = l.b.ins().sshr_imm_s(t, 16);
    let bad = l.b.ins().icmp(IntCC::NotEqual, t, target);
    l.cold_fallback_if(ins, bad);
}

/// A 64-bit register or memory operand 0 (indirect JMP/CALL).
fn indirect_target(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<Value> {
    match ins.op0_kind() {
        OpKind::Register if ins.op0_register().is_gpr64() => Ok(l.read_reg(ins.op0_register())),
        OpKind::Memory if matches!(ins.memory_size(), MemorySize::UInt64 | MemorySize::QwordOffset) => {
            check_mem(ins)?;
            let a = address(l, ins);
            Ok(load(l, ins, a, 8))
        }
        _ => Err(Unsupported),
    }
}

/// Ends the block at an indirect target: the hop table is probed inline,
/// and on a miss the dispatcher's loop looks it up.
fn done(l: &mut Lower<'_, '_>, rip: Value) -> L<Flow> {
    let retired = l.index as u64 + 1;
    l.exit_indirect(rip, retired);
    Ok(Flow::Ended)
}

/// Ends the block at a static target: a jump when it is a block of the
/// region, else an exit, linked when it can be.
fn done_direct(l: &mut Lower<'_, '_>, target: u64) -> L<Flow> {
    let retired = l.index as u64 + 1;
    go(l, target, retired, 0);
    Ok(Flow::Ended)
}

/// Goes to static `target` after `retired` instructions: a jump within the
/// region, else an exit through link `slot`.
fn go(l: &mut Lower<'_, '_>, target: u64, retired: u64, slot: usize) {
    match l.internal(target) {
        Some(i) => l.jump_to(i, retired, Some(slot)),
        None => l.exit_direct(target, retired, slot),
    }
}

/// Jcc rel.
pub(crate) fn jcc(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<Flow> {
    let target = near_target(ins)?;
    let c = flags::cond(l, ins.condition_code());
    let retired = l.index as u64 + 1;
    if l.internal(target).is_some() || l.internal(ins.next_ip()).is_some() {
        let taken = l.b.create_block();
        let not = l.b.create_block();
        l.b.ins().brif(c, taken, &[], not, &[]);
        l.b.switch_to_block(taken);
        go(l, target, retired, 0);
        l.b.switch_to_block(not);
        go(l, ins.next_ip(), retired, 1);
        return Ok(Flow::Ended);
    }
    // One write-back for both ways.
    l.store_state();
    let taken = l.b.create_block();
    let not = l.b.create_block();
    l.b.ins().brif(c, taken, &[], not, &[]);
    l.b.switch_to_block(taken);
    l.exit_direct_stored(target, retired, 0);
    l.b.switch_to_block(not);
    l.exit_direct_stored(ins.next_ip(), retired, 1);
    Ok(Flow::Ended)
}

/// JMP rel, r64, m64.
pub(crate) fn jmp(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<Flow> {
    if ins.op0_kind() == OpKind::NearBranch64 {
        let target = near_target(ins)?;
        return done_direct(l, target);
    }
    let target = indirect_target(l, ins)?;
    check_canonical(l, ins, target);
    done(l, target)
}

/// CALL rel, r64, m64: the return address is pushed after the target is
/// read and checked.
pub(crate) fn call(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<Flow> {
    if ins.stack_pointer_increment() != -8 {
        return Err(Unsupported);
    }
    if ins.op0_kind() == OpKind::NearBranch64 {
        let target = near_target(ins)?;
        let ret = l.iconst(ins.next_ip());
        push_value(l, ins, ret, 8);
        return done_direct(l, target);
    }
    let target = indirect_target(l, ins)?;
    check_canonical(l, ins, target);
    let ret = l.iconst(ins.next_ip());
    push_value(l, ins, ret, 8);
    done(l, target)
}

/// RET and RET imm16 (near, 64-bit).
pub(crate) fn ret(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<Flow> {
    let imm = if ins.op_count() > 0 { u64::from(ins.immediate16()) } else { 0 };
    if (ins.stack_pointer_increment() as u64).wrapping_sub(imm) != 8 {
        return Err(Unsupported);
    }
    let target = peek(l, ins, 8);
    check_canonical(l, ins, target);
    let rsp = l.gpr(4);
    let sp = l.b.ins().iadd_imm_s(rsp, 8 + imm as i64);
    l.set_gpr(4, sp);
    // Returns to a call site in the region stay in it.
    let retired = l.index as u64 + 1;
    for (rip, i) in l.return_targets() {
        let hit = l.b.ins().icmp_imm_s(IntCC::Equal, target, rip as i64);
        let yes = l.b.create_block();
        let no = l.b.create_block();
        l.b.ins().brif(hit, yes, &[], no, &[]);
        l.b.switch_to_block(yes);
        l.jump_to(i, retired, None);
        l.b.switch_to_block(no);
    }
    done(l, target)
}
