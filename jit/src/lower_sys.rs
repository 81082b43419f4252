//! System and flag instructions Linux runs often, with the interpreter's
//! semantics (`exec::data`, `exec::system`, `exec::stack`) in 64-bit mode:
//! PAUSE, PREFETCH* and the fences (no-ops there too), RDTSC and RDTSCP
//! (through the `rdtsc` helper, which also makes CR4.TSD's check; RDTSCP
//! reads IA32_TSC_AUX into ECX), PUSHFQ, POPFQ, LEAVE,
//! CLI and STI.
//!
//! IF, IOPL and the other system bits are never part of the lazy record,
//! so they are read from `CpuState::rflags` directly; CLI, STI and POPFQ
//! end their block (`decode::ends_block`), so the dispatcher sees the new
//! interrupt state and STI's shadow before anything else runs.

use std::mem::offset_of;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use emu_core::cpu::{flags as fl, seg, CpuState, FlagsOp, Segment};
use emu_core::interp::offsets;
use iced_x86::{Code, Instruction, Mnemonic as M};

use crate::flags::FlagsState;
use crate::lower_mem::{load, peek, push_value, Addr};
use crate::translate::{mem, Lower, Unsupported, L, st};

/// `CpuState::segs[CS].dpl` (CS.DPL is the CPL in 64-bit mode).
const CS_DPL: i32 = (offset_of!(CpuState, segs) + seg::CS * std::mem::size_of::<Segment>() + offset_of!(Segment, dpl)) as i32;
/// `CpuState::msrs.tsc_aux`, which RDTSCP reads into ECX.
const TSC_AUX: i32 = (offset_of!(CpuState, msrs) + offset_of!(emu_core::cpu::Msrs, tsc_aux)) as i32;
/// `CpuState::interrupt_shadow` (a bool).
const SHADOW: i32 = offset_of!(CpuState, interrupt_shadow) as i32;

/// Whether `m` is one of this module's instructions.
pub(crate) fn handles(m: M) -> bool {
    matches!(
        m,
        M::Pause
            | M::Prefetch
            | M::Prefetchnta
            | M::Prefetcht0
            | M::Prefetcht1
            | M::Prefetcht2
            | M::Prefetchw
            | M::Lfence
            | M::Sfence
            | M::Mfence
            | M::Rdtsc
            | M::Rdtscp
            | M::Pushfq
            | M::Popfq
            | M::Leave
            | M::Cli
            | M::Sti
    )
}

/// Lowers one of the instructions [`handles`] names.
pub(crate) fn lower(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    match ins.mnemonic() {
        // The interpreter's `nop`: no access, no check.
        M::Pause | M::Prefetch | M::Prefetchnta | M::Prefetcht0 | M::Prefetcht1 | M::Prefetcht2 | M::Prefetchw | M::Lfence | M::Sfence | M::Mfence => Ok(()),
        M::Rdtsc | M::Rdtscp => rdtsc(l, ins),
        M::Pushfq if ins.code() == Code::Pushfq => pushfq(l, ins),
        M::Popfq if ins.code() == Code::Popfq => popfq(l, ins),
        M::Leave if ins.code() == Code::Leaveq => leave(l, ins),
        M::Cli | M::Sti => cli_sti(l, ins),
        _ => Err(Unsupported),
    }
}

/// RDTSC: EDX:EAX = TSC (upper halves cleared).
fn rdtsc(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let t = l.call(l.helpers.rdtsc as usize, l.sigs.frame_only, &[l.frame]);
    l.fault_exit_on_status(ins);
    let lo = l.b.ins().band_imm_s(t, 0xffff_ffff);
    let hi = l.b.ins().ushr_imm_s(t, 32);
    l.set_gpr(0, lo);
    l.set_gpr(2, hi);
    if ins.mnemonic() == M::Rdtscp {
        let aux = l.b.ins().uload32(mem(), l.frame, st(TSC_AUX));
        l.set_gpr(1, aux);
    }
    Ok(())
}

/// PUSHFQ: RFLAGS with VM and RF read as zero.
fn pushfq(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let f = crate::flags::rflags(l);
    let f = l.b.ins().band_imm_s(f, !((fl::VM | fl::RF) as i64));
    push_value(l, ins, f, 8);
    Ok(())
}

/// LEAVE (64-bit): RSP = RBP + 8, RBP = [RBP]; a fault leaves both.
fn leave(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let bp = l.gpr(5);
    let v = load(l, ins, Addr { seg: seg::SS, ea: bp, lin: bp }, 8);
    let sp = l.b.ins().iadd_imm_s(bp, 8);
    l.set_gpr(4, sp);
    l.set_gpr(5, v);
    Ok(())
}

/// CPL (CS.DPL) as an i64.
fn cpl(l: &mut Lower<'_, '_>) -> Value {
    let dpl = l.b.ins().uload8(types::I64, mem(), l.frame, st(CS_DPL));
    l.b.ins().band_imm_s(dpl, 3)
}

/// IOPL of `rflags` as an i64.
fn iopl(l: &mut Lower<'_, '_>, rflags: Value) -> Value {
    let v = l.b.ins().ushr_imm_s(rflags, 12);
    l.b.ins().band_imm_s(v, 3)
}

/// Puts the translator's flags into `CpuState` (as an exit would) and
/// forgets them, so RFLAGS may be read and rewritten in memory.
fn flush_flags(l: &mut Lower<'_, '_>) {
    let state = l.flags;
    crate::flags::store(l, &state);
    l.flags = FlagsState::Memory;
}

/// CLI and STI: #GP when CPL > IOPL (left to the interpreter); STI from
/// IF=0 sets the interrupt shadow.
fn cli_sti(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    flush_flags(l);
    let f = l.b.ins().load(types::I64, mem(), l.frame, st(offsets::RFLAGS));
    let c = cpl(l);
    let io = iopl(l, f);
    let bad = l.b.ins().icmp(IntCC::UnsignedGreaterThan, c, io);
    l.cold_fallback_if(ins, bad);
    let new = if ins.mnemonic() == M::Cli {
        l.b.ins().band_imm_s(f, !(fl::IF as i64))
    } else {
        let was = l.b.ins().band_imm_s(f, fl::IF as i64);
        let off = l.b.ins().icmp_imm_s(IntCC::Equal, was, 0);
        let old = l.b.ins().load(types::I8, mem(), l.frame, st(SHADOW));
        let shadow = l.b.ins().bor(old, off);
        l.b.ins().store(mem(), shadow, l.frame, st(SHADOW));
        l.b.ins().bor_imm_s(f, fl::IF as i64)
    };
    l.b.ins().store(mem(), new, l.frame, st(offsets::RFLAGS));
    Ok(())
}

/// POPFQ (64-bit mode): the changeable bits by CPL and IOPL as the
/// interpreter's `popf`; RF cleared, the flags materialised.
fn popfq(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let v = peek(l, ins, 8);
    let cur = crate::flags::rflags(l);
    let c = cpl(l);
    let io = iopl(l, cur);
    let base = (fl::ARITH | fl::TF | fl::DF | fl::NT | fl::AC | fl::ID) as i64;
    let base = l.iconst(base as u64);
    let if_ok = l.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, c, io);
    let if_ok = l.b.ins().uextend(types::I64, if_ok);
    let if_bit = l.b.ins().imul_imm_s(if_ok, fl::IF as i64);
    let iopl_ok = l.b.ins().icmp_imm_s(IntCC::Equal, c, 0);
    let iopl_ok = l.b.ins().uextend(types::I64, iopl_ok);
    let iopl_bits = l.b.ins().imul_imm_s(iopl_ok, fl::IOPL as i64);
    let changeable = l.b.ins().bor(base, if_bit);
    let changeable = l.b.ins().bor(changeable, iopl_bits);
    let kept = l.b.ins().band_not(cur, changeable);
    let taken = l.b.ins().band(v, changeable);
    let new = l.b.ins().bor(kept, taken);
    let new = l.b.ins().band_imm_s(new, !(fl::RF as i64));
    let new = l.b.ins().bor_imm_s(new, fl::FIXED as i64);
    // Like `set_flags`: the record is dropped, RFLAGS holds everything.
    l.b.ins().store(mem(), new, l.frame, st(offsets::RFLAGS));
    let op = l.b.ins().iconst(types::I8, FlagsOp::Materialized as i64);
    l.b.ins().store(mem(), op, l.frame, st(offsets::LAZY_OP));
    l.flags = FlagsState::Known(new);
    let rsp = l.gpr(4);
    let sp = l.b.ins().iadd_imm_s(rsp, 8);
    l.set_gpr(4, sp);
    Ok(())
}

/// Whether `ins` is MOV r16/r32/r64, Sreg (reads only the selector).
pub(crate) fn is_sreg_read(ins: &Instruction) -> bool {
    ins.mnemonic() == M::Mov
        && ins.op0_kind() == iced_x86::OpKind::Register
        && ins.op0_register().is_gpr()
        && ins.op1_kind() == iced_x86::OpKind::Register
        && ins.op1_register().is_segment_register()
}

/// MOV r, Sreg: the selector, zero-extended to the register's size and
/// written with the x86 rules (as the interpreter's `write_op`).
pub(crate) fn mov_from_sreg(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    use iced_x86::Register as R;
    let s = match ins.op1_register() {
        R::ES => seg::ES,
        R::CS => seg::CS,
        R::SS => seg::SS,
        R::DS => seg::DS,
        R::FS => seg::FS,
        R::GS => seg::GS,
        _ => return Err(Unsupported),
    };
    let off = offset_of!(CpuState, segs) + s * std::mem::size_of::<Segment>() + offset_of!(Segment, selector);
    let v = l.b.ins().uload16(types::I64, mem(), l.frame, st(off as i32));
    l.write_reg(ins.op0_register(), v);
    Ok(())
}
