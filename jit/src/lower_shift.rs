//! Shifts and rotates whose count is CL or an immediate: SHL/SAL, SHR,
//! SAR by CL, ROL/ROR by 1, an immediate or CL, SHLD/SHRD by an immediate
//! or CL, with the interpreter's semantics (`emu_core::interp::exec::shift`):
//! flags computed on the spot, AF cleared by shifts and kept by rotates,
//! and a masked count of zero changing no flags and writing only a
//! register destination (which zero-extends a 32-bit one).
//!
//! A count in CL is only known at run time: the zero count takes a cold
//! path that keeps the flags (folded to RFLAGS) and the destination; both
//! paths join with RFLAGS as a computed value.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use emu_core::cpu::flags as fl;
use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::flags::{self, FlagsState};
use crate::lower_alu::{loc, masked, op_size, read_loc, write_loc, Loc};
use crate::lower_mem::store;
use crate::translate::{Lower, Unsupported, L};

/// Where a count comes from.
#[derive(Clone, Copy)]
enum Count {
    /// Known when translating (already masked).
    Static(u32),
    /// CL, masked at run time.
    Cl,
}

/// The count operand `n` (absent: 1), checked before anything is emitted.
fn count_of(ins: &Instruction, n: u32, size: usize) -> L<Count> {
    let m = if size == 8 { 0x3f } else { 0x1f };
    if ins.op_count() <= n {
        return Ok(Count::Static(1));
    }
    match ins.op_kind(n) {
        OpKind::Immediate8 => Ok(Count::Static(u32::from(ins.immediate8()) & m)),
        OpKind::Register if ins.op_register(n) == Register::CL => Ok(Count::Cl),
        _ => Err(Unsupported),
    }
}

/// `k - c`.
fn rsub(l: &mut Lower<'_, '_>, k: i64, c: Value) -> Value {
    let k = l.b.ins().iconst(types::I64, k);
    l.b.ins().isub(k, c)
}

fn bit(l: &mut Lower<'_, '_>, v: Value, n: i64) -> Value {
    let t = l.b.ins().ushr_imm_s(v, n);
    l.b.ins().band_imm_s(t, 1)
}

/// RFLAGS from `base` (its arithmetic flags but CF and OF kept), `cf` and
/// `of` (0 or 1).
fn with_cf_of(l: &mut Lower<'_, '_>, base: Value, cf: Value, of: Value) -> Value {
    let kept = l.b.ins().band_imm_s(base, !((fl::CF | fl::OF) as i64));
    let of = l.b.ins().ishl_imm_s(of, 11);
    let v = l.b.ins().bor(kept, cf);
    l.b.ins().bor(v, of)
}

/// The operation on a destination `a`, a second operand `b` (SHLD/SHRD)
/// and a count `c` in 1..=mask: the result and the new RFLAGS.
type Compute<'c> = &'c dyn Fn(&mut Lower<'_, '_>, Value, Value, Value) -> (Value, Value);

/// Runs `compute` for a nonzero count and writes the result and flags; a
/// zero count keeps both (a register destination is written back).
#[allow(clippy::too_many_arguments)]
fn apply(l: &mut Lower<'_, '_>, ins: &Instruction, dst: Loc, size: usize, a: Value, b: Value, count: Count, compute: Compute<'_>) {
    let c = match count {
        Count::Static(0) => {
            if let Loc::Reg(r) = dst {
                l.write_reg(r, a);
            }
            return;
        }
        Count::Static(c) => {
            let c = l.iconst(u64::from(c));
            let (res, f) = compute(l, a, b, c);
            write_loc(l, ins, dst, size, res);
            l.flags = FlagsState::Computed(f);
            return;
        }
        Count::Cl => {
            let cl = l.read_reg(Register::CL);
            l.b.ins().band_imm_s(cl, if size == 8 { 0x3f } else { 0x1f })
        }
    };
    let zero = l.b.ins().icmp_imm_s(IntCC::Equal, c, 0);
    let hot = l.b.create_block();
    let cold = l.b.create_block();
    let join = l.b.create_block();
    for t in [types::I64, types::I64] {
        l.b.append_block_param(join, t);
    }
    l.b.set_cold_block(cold);
    l.b.ins().brif(zero, cold, &[], hot, &[]);

    l.b.switch_to_block(hot);
    let (res, f) = compute(l, a, b, c);
    if let Loc::Mem(addr) = dst {
        store(l, ins, addr, size, res);
    }
    l.b.ins().jump(join, &[f.into(), res.into()]);

    l.b.switch_to_block(cold);
    let kept = flags::rflags_value(l);
    l.b.ins().jump(join, &[kept.into(), a.into()]);

    l.b.switch_to_block(join);
    let p = l.b.block_params(join).to_vec();
    if let Loc::Reg(r) = dst {
        l.write_reg(r, p[1]);
    }
    l.flags = FlagsState::Computed(p[0]);
}

/// SHL/SAL, SHR, SAR by CL (immediate counts are `lower_alu::shift`'s).
pub(crate) fn shift(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let size = op_size(ins, 0)?;
    let count = count_of(ins, 1, size)?;
    if ins.has_lock_prefix() {
        return Err(Unsupported);
    }
    let bits = (size * 8) as i64;
    let m = ins.mnemonic();
    let dst = loc(l, ins, 0);
    let a = read_loc(l, ins, dst, size);
    let compute = move |l: &mut Lower<'_, '_>, a: Value, _: Value, c: Value| {
        let (res, cf, of) = match m {
            M::Shl | M::Sal => {
                let res = l.b.ins().ishl(a, c);
                let res = masked(l, res, size);
                // CF: bit (bits - c) of the operand, 0 past the width.
                let back = rsub(l, bits, c);
                let back = l.b.ins().band_imm_s(back, 63);
                let t = l.b.ins().ushr(a, back);
                let t = l.b.ins().band_imm_s(t, 1);
                let inside = l.b.ins().icmp_imm_s(IntCC::UnsignedLessThanOrEqual, c, bits);
                let zero = l.iconst(0);
                let cf = l.b.ins().select(inside, t, zero);
                let top = bit(l, res, bits - 1);
                let of = l.b.ins().bxor(top, cf);
                (res, cf, of)
            }
            M::Shr => {
                // The operand is zero-extended, so shifts past its width
                // give zero without a special case.
                let res = l.b.ins().ushr(a, c);
                let c1 = l.b.ins().iadd_imm_s(c, -1);
                let t = l.b.ins().ushr(a, c1);
                let cf = l.b.ins().band_imm_s(t, 1);
                let of = bit(l, a, bits - 1);
                (res, cf, of)
            }
            _ => {
                let signed = flags::sext(l, a, size);
                let res = l.b.ins().sshr(signed, c);
                let res = masked(l, res, size);
                let c1 = l.b.ins().iadd_imm_s(c, -1);
                let t = l.b.ins().sshr(signed, c1);
                let cf = l.b.ins().band_imm_s(t, 1);
                (res, cf, l.iconst(0))
            }
        };
        let szp = flags::szp(l, res, size);
        let base = flags::arith_value(l, szp);
        (res, with_cf_of(l, base, cf, of))
    };
    let b = l.iconst(0);
    apply(l, ins, dst, size, a, b, count, &compute);
    Ok(())
}

fn int_ty(size: usize) -> types::Type {
    crate::lower_mem::int_type(size)
}

/// ROL, ROR: CF and OF replaced, the other flags kept.
pub(crate) fn rotate(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let size = op_size(ins, 0)?;
    let count = count_of(ins, 1, size)?;
    if ins.has_lock_prefix() {
        return Err(Unsupported);
    }
    let bits = (size * 8) as i64;
    let left = ins.mnemonic() == M::Rol;
    let dst = loc(l, ins, 0);
    let a = read_loc(l, ins, dst, size);
    if matches!(count, Count::Static(0)) {
        apply(l, ins, dst, size, a, a, count, &|_, a, _, _| (a, a));
        return Ok(());
    }
    // The kept flags are read before any branch.
    let base = flags::rflags(l);
    let compute = move |l: &mut Lower<'_, '_>, a: Value, _: Value, c: Value| {
        // Cranelift rotates modulo the type's width, as `raw % bits`.
        let ty = int_ty(size);
        let narrow = if size == 8 { a } else { l.b.ins().ireduce(ty, a) };
        let r = if left { l.b.ins().rotl(narrow, c) } else { l.b.ins().rotr(narrow, c) };
        let res = if size == 8 { r } else { l.b.ins().uextend(types::I64, r) };
        let top = bit(l, res, bits - 1);
        let (cf, of) = if left {
            let cf = l.b.ins().band_imm_s(res, 1);
            (cf, l.b.ins().bxor(top, cf))
        } else {
            let next = bit(l, res, bits - 2);
            (top, l.b.ins().bxor(top, next))
        };
        (res, with_cf_of(l, base, cf, of))
    };
    let b = l.iconst(0);
    apply(l, ins, dst, size, a, b, count, &compute);
    Ok(())
}

/// SHLD, SHRD r/m, r, imm8/CL (16-, 32- and 64-bit).
pub(crate) fn double(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let size = op_size(ins, 0)?;
    if size == 1 || ins.op1_kind() != OpKind::Register || !ins.op1_register().is_gpr() || ins.has_lock_prefix() {
        return Err(Unsupported);
    }
    let count = count_of(ins, 2, size)?;
    let bits = (size * 8) as i64;
    let left = ins.mnemonic() == M::Shld;
    let dst = loc(l, ins, 0);
    let a = read_loc(l, ins, dst, size);
    let b = l.read_reg(ins.op1_register());
    let compute = move |l: &mut Lower<'_, '_>, a: Value, b: Value, c: Value| {
        let (res, cf) = if size == 8 {
            // 1 <= c <= 63: both halves' shifts stay below 64.
            let back = rsub(l, 64, c);
            if left {
                let hi = l.b.ins().ishl(a, c);
                let lo = l.b.ins().ushr(b, back);
                let t = l.b.ins().ushr(a, back);
                (l.b.ins().bor(hi, lo), l.b.ins().band_imm_s(t, 1))
            } else {
                let lo = l.b.ins().ushr(a, c);
                let hi = l.b.ins().ishl(b, back);
                let c1 = l.b.ins().iadd_imm_s(c, -1);
                let t = l.b.ins().ushr(a, c1);
                (l.b.ins().bor(hi, lo), l.b.ins().band_imm_s(t, 1))
            }
        } else if left {
            // (a:b) in 64 bits; the result is bits [bits, 2 bits) of it
            // shifted, CF the last bit out (counts past 16 on 16-bit
            // operands shift b's bits in, as the interpreter does).
            let hi = l.b.ins().ishl_imm_s(a, bits);
            let full = l.b.ins().bor(hi, b);
            let s = l.b.ins().ishl(full, c);
            let s = l.b.ins().ushr_imm_s(s, bits);
            let res = masked(l, s, size);
            let back = rsub(l, 2 * bits, c);
            let t = l.b.ins().ushr(full, back);
            (res, l.b.ins().band_imm_s(t, 1))
        } else {
            let hi = l.b.ins().ishl_imm_s(b, bits);
            let full = l.b.ins().bor(hi, a);
            let s = l.b.ins().ushr(full, c);
            let res = masked(l, s, size);
            let c1 = l.b.ins().iadd_imm_s(c, -1);
            let t = l.b.ins().ushr(full, c1);
            (res, l.b.ins().band_imm_s(t, 1))
        };
        let res = masked(l, res, size);
        let x = l.b.ins().bxor(res, a);
        let of = bit(l, x, bits - 1);
        let szp = flags::szp(l, res, size);
        let base = flags::arith_value(l, szp);
        (res, with_cf_of(l, base, cf, of))
    };
    apply(l, ins, dst, size, a, b, count, &compute);
    Ok(())
}
