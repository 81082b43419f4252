//! The arithmetic flags in translated code: the interpreter's lazy record
//! (`CpuState::lazy`), kept in Cranelift values while the block runs.
//!
//! The last flag-setting operation of the block is a [`Pending`] record of
//! values; a condition reads it directly (CMP + JL is a signed compare).
//! Exits store the record exactly as the interpreter's `set_lazy` would.
//! Flags from before the block or from a fallback are asked of a helper
//! (materialised once, then tested as RFLAGS bits).

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use emu_core::cpu::{flags, FlagsOp};
use emu_core::interp::offsets;
use iced_x86::ConditionCode as CC;

use crate::translate::{mask, mem, Lower, st};

/// A lazy record held in values (all masked to `size` bytes).
#[derive(Clone, Copy)]
pub(crate) struct Pending {
    pub(crate) op: FlagsOp,
    pub(crate) size: usize,
    pub(crate) src1: Value,
    pub(crate) src2: Value,
    pub(crate) res: Value,
    /// The carry in (ADC/SBB) or kept CF (INC/DEC); 0 otherwise.
    pub(crate) aux: Option<Value>,
}

/// Where the flags are.
#[derive(Clone, Copy)]
pub(crate) enum FlagsState {
    /// In `CpuState` (lazy or not), not known to the code.
    Memory,
    /// Materialised in `CpuState::rflags`, with this value.
    Known(Value),
    /// Computed by the code (rotates, shifts by CL, multiplications):
    /// RFLAGS to store, with the lazy record marked materialised.
    Computed(Value),
    /// A lazy record not yet stored.
    Pending(Pending),
}

/// Stores the flags as the interpreter would have left them.
pub(crate) fn store(l: &mut Lower<'_, '_>, state: &FlagsState) {
    match *state {
        FlagsState::Memory | FlagsState::Known(_) => {}
        FlagsState::Computed(v) => {
            l.b.ins().store(mem(), v, l.frame, st(offsets::RFLAGS));
            let op = l.b.ins().iconst(types::I8, FlagsOp::Materialized as i64);
            l.b.ins().store(mem(), op, l.frame, st(offsets::LAZY_OP));
        }
        FlagsState::Pending(p) => {
            let op = l.b.ins().iconst(types::I8, p.op as i64);
            l.b.ins().store(mem(), op, l.frame, st(offsets::LAZY_OP));
            let size = l.b.ins().iconst(types::I8, p.size as i64);
            l.b.ins().store(mem(), size, l.frame, st(offsets::LAZY_SIZE));
            l.b.ins().store(mem(), p.src1, l.frame, st(offsets::LAZY_SRC1));
            l.b.ins().store(mem(), p.src2, l.frame, st(offsets::LAZY_SRC2));
            l.b.ins().store(mem(), p.res, l.frame, st(offsets::LAZY_RES));
            let aux = match p.aux {
                Some(v) => v,
                None => l.iconst(0),
            };
            l.b.ins().store(mem(), aux, l.frame, st(offsets::LAZY_AUX));
        }
    }
}

/// RFLAGS with the arithmetic flags current.
pub(crate) fn rflags(l: &mut Lower<'_, '_>) -> Value {
    match l.flags {
        FlagsState::Known(v) | FlagsState::Computed(v) => v,
        FlagsState::Pending(p) => {
            // The operation is known here: the six flags are computed inline.
            let (of, af) = (of(l, &p), af(l, p.op, p.src1, p.src2, p.res));
            let bits = arith_bits(l, &p, of, p.res, af);
            let old = l.b.ins().load(types::I64, mem(), l.frame, st(offsets::RFLAGS));
            let kept = l.b.ins().band_imm_s(old, !(flags::ARITH as i64));
            let v = l.b.ins().bor(kept, bits);
            l.flags = FlagsState::Computed(v);
            v
        }
        FlagsState::Memory => {
            let v = crate::flags_mem::rflags(l);
            l.flags = FlagsState::Known(v);
            v
        }
    }
}

/// CF as 0 or 1 (i64).
pub(crate) fn carry(l: &mut Lower<'_, '_>) -> Value {
    match l.flags {
        FlagsState::Known(v) | FlagsState::Computed(v) => l.b.ins().band_imm_s(v, 1),
        FlagsState::Pending(p) => {
            let c = cf(l, &p);
            l.b.ins().uextend(types::I64, c)
        }
        FlagsState::Memory => crate::flags_mem::carry(l),
    }
}

fn sign(size: usize) -> i64 {
    (1u64 << (size * 8 - 1)) as i64
}

pub(crate) fn is_set(l: &mut Lower<'_, '_>, v: Value, bits: i64) -> Value {
    let t = l.b.ins().band_imm_s(v, bits);
    l.b.ins().icmp_imm_s(IntCC::NotEqual, t, 0)
}

pub(crate) fn falsy(l: &mut Lower<'_, '_>) -> Value {
    l.b.ins().iconst(types::I8, 0)
}

pub(crate) fn cf(l: &mut Lower<'_, '_>, p: &Pending) -> Value {
    let (a, b, r) = (p.src1, p.src2, p.res);
    let aux_set = |l: &mut Lower<'_, '_>| match p.aux {
        Some(aux) => is_set(l, aux, 1),
        None => falsy(l),
    };
    match p.op {
        FlagsOp::Materialized | FlagsOp::Logic => falsy(l),
        FlagsOp::Add => l.b.ins().icmp(IntCC::UnsignedLessThan, r, a),
        FlagsOp::Adc => {
            let c = aux_set(l);
            let le = l.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, r, a);
            let lt = l.b.ins().icmp(IntCC::UnsignedLessThan, r, a);
            l.b.ins().select(c, le, lt)
        }
        FlagsOp::Sub => l.b.ins().icmp(IntCC::UnsignedLessThan, a, b),
        FlagsOp::Sbb => {
            let c = aux_set(l);
            let le = l.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, a, b);
            let lt = l.b.ins().icmp(IntCC::UnsignedLessThan, a, b);
            l.b.ins().select(c, le, lt)
        }
        FlagsOp::Inc | FlagsOp::Dec => aux_set(l),
        FlagsOp::Neg => l.b.ins().icmp_imm_s(IntCC::NotEqual, a, 0),
        FlagsOp::Shl | FlagsOp::Shr | FlagsOp::Sar => shift_cf(l, p),
    }
}

/// CF of a shift record (`LazyFlags::cf`): the last bit shifted out of
/// `src1` by the count in `src2` (1 to 63).
fn shift_cf(l: &mut Lower<'_, '_>, p: &Pending) -> Value {
    let (a, c) = (p.src1, p.src2);
    let bits = (p.size * 8) as i64;
    match p.op {
        FlagsOp::Shl => {
            // Bit `bits - c`, none past the width (counts of 9 to 31 for
            // bytes and words).
            let width = l.iconst(bits as u64);
            let back = l.b.ins().isub(width, c);
            let back = l.b.ins().band_imm_s(back, 63);
            let t = l.b.ins().ushr(a, back);
            let out = is_set(l, t, 1);
            let inside = l.b.ins().icmp_imm_s(IntCC::UnsignedLessThanOrEqual, c, bits);
            l.b.ins().band(out, inside)
        }
        FlagsOp::Shr => {
            // `src1` is zero-extended: a count past its width finds 0.
            let c1 = l.b.ins().iadd_imm_s(c, -1);
            let t = l.b.ins().ushr(a, c1);
            is_set(l, t, 1)
        }
        _ => {
            let signed = sext(l, a, p.size);
            let c1 = l.b.ins().iadd_imm_s(c, -1);
            let t = l.b.ins().sshr(signed, c1);
            is_set(l, t, 1)
        }
    }
}

pub(crate) fn zf(l: &mut Lower<'_, '_>, p: &Pending) -> Value {
    l.b.ins().icmp_imm_s(IntCC::Equal, p.res, 0)
}

pub(crate) fn sf(l: &mut Lower<'_, '_>, p: &Pending) -> Value {
    is_set(l, p.res, sign(p.size))
}

pub(crate) fn of(l: &mut Lower<'_, '_>, p: &Pending) -> Value {
    let (a, b, r, s) = (p.src1, p.src2, p.res, sign(p.size));
    match p.op {
        FlagsOp::Materialized | FlagsOp::Logic | FlagsOp::Sar => falsy(l),
        FlagsOp::Add | FlagsOp::Adc => {
            let x = l.b.ins().bxor(a, r);
            let y = l.b.ins().bxor(b, r);
            let t = l.b.ins().band(x, y);
            is_set(l, t, s)
        }
        FlagsOp::Sub | FlagsOp::Sbb => {
            let x = l.b.ins().bxor(a, b);
            let y = l.b.ins().bxor(a, r);
            let t = l.b.ins().band(x, y);
            is_set(l, t, s)
        }
        FlagsOp::Inc | FlagsOp::Neg => l.b.ins().icmp_imm_s(IntCC::Equal, r, s),
        FlagsOp::Dec => l.b.ins().icmp_imm_s(IntCC::Equal, r, (s as u64 & mask(p.size)).wrapping_sub(1) as i64),
        FlagsOp::Shl => {
            let top = is_set(l, r, s);
            let c = shift_cf(l, p);
            l.b.ins().bxor(top, c)
        }
        FlagsOp::Shr => is_set(l, a, s),
    }
}

/// PF: whether the low byte of `res` has an even number of ones.
pub(crate) fn parity_even(l: &mut Lower<'_, '_>, res: Value) -> Value {
    let low = l.b.ins().ireduce(types::I8, res);
    let n = l.b.ins().popcnt(low);
    let odd = l.b.ins().band_imm_s(n, 1);
    l.b.ins().icmp_imm_s(IntCC::Equal, odd, 0)
}

/// Sign-extends a `size`-byte value to 64 bits.
pub(crate) fn sext(l: &mut Lower<'_, '_>, v: Value, size: usize) -> Value {
    if size == 8 {
        return v;
    }
    let shift = 64 - 8 * size as i64;
    let t = l.b.ins().ishl_imm_s(v, shift);
    l.b.ins().sshr_imm_s(t, shift)
}

/// Evaluates a condition code (an i8 boolean).
pub(crate) fn cond(l: &mut Lower<'_, '_>, cc: CC) -> Value {
    match l.flags {
        FlagsState::Pending(p) => return cond_pending(l, &p, cc),
        FlagsState::Memory => return crate::flags_mem::cond(l, cc),
        FlagsState::Known(_) | FlagsState::Computed(_) => {}
    }
    let f = rflags(l);
    cond_rflags(l, f, cc)
}

/// A condition from materialised RFLAGS `f`.
pub(crate) fn cond_rflags(l: &mut Lower<'_, '_>, f: Value, cc: CC) -> Value {
    let bit = |l: &mut Lower<'_, '_>, b: u64| is_set(l, f, b as i64);
    match cc {
        CC::o => bit(l, flags::OF),
        CC::no => {
            let v = bit(l, flags::OF);
            not(l, v)
        }
        CC::b => bit(l, flags::CF),
        CC::ae => {
            let v = bit(l, flags::CF);
            not(l, v)
        }
        CC::e => bit(l, flags::ZF),
        CC::ne => {
            let v = bit(l, flags::ZF);
            not(l, v)
        }
        CC::be => bit(l, flags::CF | flags::ZF),
        CC::a => {
            let v = bit(l, flags::CF | flags::ZF);
            not(l, v)
        }
        CC::s => bit(l, flags::SF),
        CC::ns => {
            let v = bit(l, flags::SF);
            not(l, v)
        }
        CC::p => bit(l, flags::PF),
        CC::np => {
            let v = bit(l, flags::PF);
            not(l, v)
        }
        CC::l | CC::ge | CC::le | CC::g => {
            let s = bit(l, flags::SF);
            let o = bit(l, flags::OF);
            let lt = l.b.ins().bxor(s, o);
            let z = bit(l, flags::ZF);
            signed_combo(l, cc, lt, z)
        }
        CC::None => l.b.ins().iconst(types::I8, 1),
    }
}

pub(crate) fn not(l: &mut Lower<'_, '_>, v: Value) -> Value {
    l.b.ins().bxor_imm_s(v, 1)
}

/// l/ge/le/g from "less" (SF != OF) and ZF.
pub(crate) fn signed_combo(l: &mut Lower<'_, '_>, cc: CC, lt: Value, z: Value) -> Value {
    match cc {
        CC::l => lt,
        CC::ge => not(l, lt),
        CC::le => l.b.ins().bor(lt, z),
        _ => {
            let le = l.b.ins().bor(lt, z);
            not(l, le)
        }
    }
}

fn cond_pending(l: &mut Lower<'_, '_>, p: &Pending, cc: CC) -> Value {
    cond_parts(l, p, cc, None, p.res)
}

/// A condition of record `p`, with OF given (`of`, when the record's own
/// formula does not hold for its values) and PF taken from the low byte
/// of `pf_res`.
pub(crate) fn cond_parts(l: &mut Lower<'_, '_>, p: &Pending, cc: CC, of_given: Option<Value>, pf_res: Value) -> Value {
    let of = |l: &mut Lower<'_, '_>, p: &Pending| match of_given {
        Some(v) => v,
        None => self::of(l, p),
    };
    let pf = |l: &mut Lower<'_, '_>, _: &Pending| parity_even(l, pf_res);
    // SUB/CMP: the conditions are plain compares of the operands.
    if p.op == FlagsOp::Sub {
        let signed = matches!(cc, CC::l | CC::ge | CC::le | CC::g);
        let (a, b) = if signed { (sext(l, p.src1, p.size), sext(l, p.src2, p.size)) } else { (p.src1, p.src2) };
        let code = match cc {
            CC::e => Some(IntCC::Equal),
            CC::ne => Some(IntCC::NotEqual),
            CC::b => Some(IntCC::UnsignedLessThan),
            CC::ae => Some(IntCC::UnsignedGreaterThanOrEqual),
            CC::be => Some(IntCC::UnsignedLessThanOrEqual),
            CC::a => Some(IntCC::UnsignedGreaterThan),
            CC::l => Some(IntCC::SignedLessThan),
            CC::ge => Some(IntCC::SignedGreaterThanOrEqual),
            CC::le => Some(IntCC::SignedLessThanOrEqual),
            CC::g => Some(IntCC::SignedGreaterThan),
            _ => None,
        };
        if let Some(code) = code {
            return l.b.ins().icmp(code, a, b);
        }
    }
    match cc {
        CC::o => of(l, p),
        CC::no => {
            let v = of(l, p);
            not(l, v)
        }
        CC::b => cf(l, p),
        CC::ae => {
            let v = cf(l, p);
            not(l, v)
        }
        CC::e => zf(l, p),
        CC::ne => {
            let v = zf(l, p);
            not(l, v)
        }
        CC::be | CC::a => {
            let c = cf(l, p);
            let z = zf(l, p);
            let v = l.b.ins().bor(c, z);
            if cc == CC::a {
                not(l, v)
            } else {
                v
            }
        }
        CC::s => sf(l, p),
        CC::ns => {
            let v = sf(l, p);
            not(l, v)
        }
        CC::p => pf(l, p),
        CC::np => {
            let v = pf(l, p);
            not(l, v)
        }
        CC::l | CC::ge | CC::le | CC::g => {
            let s = sf(l, p);
            let o = of(l, p);
            let lt = l.b.ins().bxor(s, o);
            let z = zf(l, p);
            signed_combo(l, cc, lt, z)
        }
        CC::None => l.b.ins().iconst(types::I8, 1),
    }
}

/// Records a flag-setting operation as the interpreter's `set_lazy` does
/// (INC and DEC keep the carry in `aux`).
pub(crate) fn set_lazy(l: &mut Lower<'_, '_>, op: FlagsOp, size: usize, src1: Value, src2: Value, res: Value) {
    let aux = match op {
        FlagsOp::Inc | FlagsOp::Dec => Some(carry(l)),
        _ => None,
    };
    l.flags = FlagsState::Pending(Pending { op, size, src1, src2, res, aux });
}

/// Records ADC/SBB with their carry in (0 or 1).
pub(crate) fn set_lazy_carry(l: &mut Lower<'_, '_>, op: FlagsOp, size: usize, src1: Value, src2: Value, res: Value, carry: Value) {
    l.flags = FlagsState::Pending(Pending { op, size, src1, src2, res, aux: Some(carry) });
}

/// Sets the six arithmetic flags outright from `f` (the interpreter's
/// `set_arith_flags`): the other RFLAGS bits are current in memory.
pub(crate) fn set_arith(l: &mut Lower<'_, '_>, f: Value) {
    let old = l.b.ins().load(types::I64, mem(), l.frame, st(offsets::RFLAGS));
    let kept = l.b.ins().band_imm_s(old, !(flags::ARITH as i64));
    let f = l.b.ins().band_imm_s(f, flags::ARITH as i64);
    let v = l.b.ins().bor(kept, f);
    let v = l.b.ins().bor_imm_s(v, flags::FIXED as i64);
    l.flags = FlagsState::Computed(v);
}

/// SF, ZF and PF of a `size`-byte result, as RFLAGS bits.
/// The flags of a multiplication: SF, ZF and PF of the low half `lo` (as
/// the interpreter leaves them), CF and OF from `overflow` (an i8).
pub(crate) fn set_mul(l: &mut Lower<'_, '_>, lo: Value, size: usize, overflow: Value) {
    let f = szp(l, lo, size);
    let o = l.b.ins().uextend(types::I64, overflow);
    let o = l.b.ins().imul_imm_s(o, (flags::CF | flags::OF) as i64);
    let f = l.b.ins().bor(f, o);
    set_arith(l, f);
}

pub(crate) fn szp(l: &mut Lower<'_, '_>, res: Value, size: usize) -> Value {
    let z = l.b.ins().icmp_imm_s(IntCC::Equal, res, 0);
    let z = l.b.ins().uextend(types::I64, z);
    let z = l.b.ins().ishl_imm_s(z, 6);
    let s = l.b.ins().ushr_imm_s(res, (size * 8 - 1) as i64);
    let s = l.b.ins().band_imm_s(s, 1);
    let s = l.b.ins().ishl_imm_s(s, 7);
    let low = l.b.ins().ireduce(types::I8, res);
    let n = l.b.ins().popcnt(low);
    let even = l.b.ins().bxor_imm_s(n, 1);
    let even = l.b.ins().band_imm_s(even, 1);
    let p = l.b.ins().uextend(types::I64, even);
    let p = l.b.ins().ishl_imm_s(p, 2);
    let zs = l.b.ins().bor(z, s);
    l.b.ins().bor(zs, p)
}

/// RFLAGS with the six arithmetic flags replaced by those of `f` (the
/// value [`set_arith`] records), without recording it: for results that
/// are joined from several paths.
pub(crate) fn arith_value(l: &mut Lower<'_, '_>, f: Value) -> Value {
    let old = l.b.ins().load(types::I64, mem(), l.frame, st(offsets::RFLAGS));
    let kept = l.b.ins().band_imm_s(old, !(flags::ARITH as i64));
    let f = l.b.ins().band_imm_s(f, flags::ARITH as i64);
    let v = l.b.ins().bor(kept, f);
    l.b.ins().bor_imm_s(v, flags::FIXED as i64)
}

/// RFLAGS as they are now, leaving the translator's flags state as it is
/// (pending flags are stored and folded by the helper): for a path that
/// rejoins others, which then record the joined value as computed.
pub(crate) fn rflags_value(l: &mut Lower<'_, '_>) -> Value {
    match l.flags {
        FlagsState::Known(v) | FlagsState::Computed(v) => v,
        state => {
            store(l, &state);
            l.call(l.helpers.flags as usize, l.sigs.frame_only, &[l.frame])
        }
    }
}

/// AF as the RFLAGS bit (0 or 0x10), as `LazyFlags::compute` has it (bit 4
/// is inside every operand size, so the values need no masking).
pub(crate) fn af(l: &mut Lower<'_, '_>, op: FlagsOp, a: Value, b: Value, r: Value) -> Value {
    match op {
        FlagsOp::Materialized | FlagsOp::Logic | FlagsOp::Shl | FlagsOp::Shr | FlagsOp::Sar => l.iconst(0),
        FlagsOp::Inc | FlagsOp::Dec | FlagsOp::Neg => {
            let x = l.b.ins().bxor(a, r);
            l.b.ins().band_imm_s(x, flags::AF as i64)
        }
        _ => {
            let x = l.b.ins().bxor(a, b);
            let x = l.b.ins().bxor(x, r);
            l.b.ins().band_imm_s(x, flags::AF as i64)
        }
    }
}

/// The six arithmetic flags of record `p` as RFLAGS bits, with OF (an i8
/// boolean) and AF (the bit) given and PF from the low byte of `pf_res`.
pub(crate) fn arith_bits(l: &mut Lower<'_, '_>, p: &Pending, of: Value, pf_res: Value, af: Value) -> Value {
    let bit = |l: &mut Lower<'_, '_>, v: Value, at: i64| {
        let v = l.b.ins().uextend(types::I64, v);
        l.b.ins().ishl_imm_s(v, at)
    };
    let c = cf(l, p);
    let c = bit(l, c, 0);
    let pe = parity_even(l, pf_res);
    let pe = bit(l, pe, 2);
    let z = zf(l, p);
    let z = bit(l, z, 6);
    let s = sf(l, p);
    let s = bit(l, s, 7);
    let o = bit(l, of, 11);
    let v = l.b.ins().bor(c, pe);
    let v = l.b.ins().bor(v, af);
    let v = l.b.ins().bor(v, z);
    let v = l.b.ins().bor(v, s);
    l.b.ins().bor(v, o)
}
