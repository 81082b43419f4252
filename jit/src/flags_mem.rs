//! Flags from before the block: conditions, CF and RFLAGS computed inline
//! from the lazy record in `CpuState` (written by the previous block or
//! the interpreter), as `LazyFlags::compute` defines them.
//!
//! The code branches on `lazy.op`: materialised flags are tested as RFLAGS
//! bits, every operation has its own inline arm, and only an operand size
//! other than 1, 2, 4 or 8 (which no instruction records) goes to the
//! `jit_flags` helper. In an arm the operands are shifted left by
//! `64 - 8 * size`, so the record's bits sit at the top of 64-bit values:
//! unsigned and signed compares of those are the compares of the masked
//! (or sign-extended) operands, and the sign bit is bit 63, which lets the
//! in-block formulas of `flags` (written for masked values) serve any size
//! chosen at run time. PF and AF read only the low byte, so they use the
//! values as stored.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, Block, InstBuilder, Type, Value};
use cranelift_frontend::Switch;
use emu_core::cpu::{flags, FlagsOp};
use emu_core::interp::offsets;
use iced_x86::ConditionCode as CC;

use crate::flags::{self as fl, Pending};
use crate::translate::{mem, Lower, st};

/// What the caller needs of the flags.
#[derive(Clone, Copy)]
enum Want {
    /// A condition (an i8 boolean).
    Cond(CC),
    /// CF as 0 or 1 (i64).
    Carry,
    /// RFLAGS with the arithmetic flags folded in (i64).
    Flags,
}

impl Want {
    fn ty(self) -> Type {
        match self {
            Want::Cond(_) => types::I8,
            Want::Carry | Want::Flags => types::I64,
        }
    }
}

/// The operations with an inline arm (all but `Materialized`).
const OPS: [FlagsOp; 8] =
    [FlagsOp::Add, FlagsOp::Adc, FlagsOp::Sub, FlagsOp::Sbb, FlagsOp::Logic, FlagsOp::Inc, FlagsOp::Dec, FlagsOp::Neg];

/// A condition of the flags in `CpuState`.
pub(crate) fn cond(l: &mut Lower<'_, '_>, cc: CC) -> Value {
    if cc == CC::None {
        return l.b.ins().iconst(types::I8, 1);
    }
    dispatch(l, Want::Cond(cc))
}

/// CF of the flags in `CpuState`, as 0 or 1.
pub(crate) fn carry(l: &mut Lower<'_, '_>) -> Value {
    dispatch(l, Want::Carry)
}

/// Materialises the flags in `CpuState` (as `jit_flags` does: RFLAGS
/// updated, the record marked materialised) and returns RFLAGS.
pub(crate) fn rflags(l: &mut Lower<'_, '_>) -> Value {
    let v = dispatch(l, Want::Flags);
    l.b.ins().store(mem(), v, l.frame, st(offsets::RFLAGS));
    let op = l.b.ins().iconst(types::I8, FlagsOp::Materialized as i64);
    l.b.ins().store(mem(), op, l.frame, st(offsets::LAZY_OP));
    v
}

/// What `want` asks of materialised RFLAGS `f`.
fn from_rflags(l: &mut Lower<'_, '_>, want: Want, f: Value) -> Value {
    match want {
        Want::Cond(cc) => fl::cond_rflags(l, f, cc),
        Want::Carry => l.b.ins().band_imm_s(f, flags::CF as i64),
        Want::Flags => f,
    }
}

/// Whether a condition reads only ZF, SF or PF, which do not depend on the
/// operation.
fn result_only(want: Want) -> bool {
    matches!(want, Want::Cond(CC::e | CC::ne | CC::s | CC::ns | CC::p | CC::np))
}

fn dispatch(l: &mut Lower<'_, '_>, want: Want) -> Value {
    let ty = want.ty();
    let join = l.b.create_block();
    let out = l.b.append_block_param(join, ty);
    let materialized = l.b.create_block();
    let lazy = l.b.create_block();
    let helper = l.b.create_block();
    l.b.set_cold_block(helper);

    let op = l.b.ins().uload8(types::I32, mem(), l.frame, st(offsets::LAZY_OP));
    l.b.ins().brif(op, lazy, &[], materialized, &[]);

    l.b.switch_to_block(materialized);
    let f = l.b.ins().load(types::I64, mem(), l.frame, st(offsets::RFLAGS));
    let v = from_rflags(l, want, f);
    l.b.ins().jump(join, &[v.into()]);

    // The helper folds the record into RFLAGS (sizes no instruction makes,
    // or an operation byte out of range).
    l.b.switch_to_block(helper);
    let f = l.call(l.helpers.flags as usize, l.sigs.frame_only, &[l.frame]);
    let v = from_rflags(l, want, f);
    l.b.ins().jump(join, &[v.into()]);

    l.b.switch_to_block(lazy);
    if matches!(want, Want::Cond(CC::p | CC::np)) {
        // PF is the parity of the result's low byte, whatever the size.
        let res = l.b.ins().load(types::I64, mem(), l.frame, st(offsets::LAZY_RES));
        let even = fl::parity_even(l, res);
        let v = if matches!(want, Want::Cond(CC::np)) { fl::not(l, even) } else { even };
        l.b.ins().jump(join, &[v.into()]);
    } else {
        let sh = size_shift(l, helper);
        if result_only(want) {
            // ZF and SF do not depend on the operation: one arm.
            let v = arm(l, want, FlagsOp::Logic, sh);
            l.b.ins().jump(join, &[v.into()]);
        } else {
            let mut switch = Switch::new();
            let arms: Vec<(FlagsOp, Block)> = OPS.iter().map(|&o| (o, l.b.create_block())).collect();
            for &(o, block) in &arms {
                switch.set_entry(o as u128, block);
            }
            switch.emit(l.b, op, helper);
            for (o, block) in arms {
                l.b.switch_to_block(block);
                let v = arm(l, want, o, sh);
                l.b.ins().jump(join, &[v.into()]);
            }
        }
    }
    l.b.switch_to_block(join);
    out
}

/// Checks that `lazy.size` is 1, 2, 4 or 8 (else goes to `helper`) and
/// returns `64 - 8 * size`, the shift that puts the record's bits at the
/// top (an i64).
fn size_shift(l: &mut Lower<'_, '_>, helper: Block) -> Value {
    let size = l.b.ins().uload8(types::I64, mem(), l.frame, st(offsets::LAZY_SIZE));
    // Bits 1, 2, 4 and 8 of 0x116; sizes past 63 must not wrap the shift.
    let small = l.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, size, 9);
    let set = l.iconst(0x116);
    let set = l.b.ins().ushr(set, size);
    let set = l.b.ins().band_imm_s(set, 1);
    let set = l.b.ins().ireduce(types::I8, set);
    let ok = l.b.ins().band(small, set);
    let go = l.b.create_block();
    l.b.ins().brif(ok, go, &[], helper, &[]);
    l.b.switch_to_block(go);
    let bits = l.b.ins().ishl_imm_s(size, 3);
    let k = l.iconst(64);
    l.b.ins().isub(k, bits)
}

/// What `want` asks of a record of operation `op` (known here), its size
/// given by the shift `sh`.
fn arm(l: &mut Lower<'_, '_>, want: Want, op: FlagsOp, sh: Value) -> Value {
    let res = l.b.ins().load(types::I64, mem(), l.frame, st(offsets::LAZY_RES));
    let r = l.b.ins().ishl(res, sh);
    let (a, b) = if result_only(want) {
        (r, r)
    } else {
        (l.b.ins().load(types::I64, mem(), l.frame, st(offsets::LAZY_SRC1)), l.b.ins().load(types::I64, mem(), l.frame, st(offsets::LAZY_SRC2)))
    };
    let aux = match op {
        FlagsOp::Adc | FlagsOp::Sbb | FlagsOp::Inc | FlagsOp::Dec => Some(l.b.ins().load(types::I64, mem(), l.frame, st(offsets::LAZY_AUX))),
        _ => None,
    };
    let (sa, sb) = if result_only(want) { (r, r) } else { (l.b.ins().ishl(a, sh), l.b.ins().ishl(b, sh)) };
    let p = Pending { op, size: 8, src1: sa, src2: sb, res: r, aux };
    match want {
        Want::Cond(cc) => {
            let needs_of = matches!(cc, CC::o | CC::no | CC::l | CC::ge | CC::le | CC::g);
            let of = (needs_of && op == FlagsOp::Dec).then(|| dec_of(l, r, sh));
            fl::cond_parts(l, &p, cc, of, res)
        }
        Want::Carry => {
            let c = fl::cf(l, &p);
            l.b.ins().uextend(types::I64, c)
        }
        Want::Flags => {
            let of = if op == FlagsOp::Dec { dec_of(l, r, sh) } else { fl::of(l, &p) };
            let af = fl::af(l, op, a, b, res);
            let bits = fl::arith_bits(l, &p, of, res, af);
            let old = l.b.ins().load(types::I64, mem(), l.frame, st(offsets::RFLAGS));
            let kept = l.b.ins().band_imm_s(old, !(flags::ARITH as i64));
            l.b.ins().bor(kept, bits)
        }
    }
}

/// OF of DEC: the result is `sign - 1`, shifted: `2^63 - 2^sh`.
fn dec_of(l: &mut Lower<'_, '_>, r: Value, sh: Value) -> Value {
    let one = l.iconst(1);
    let low = l.b.ins().ishl(one, sh);
    let top = l.iconst(1 << 63);
    let want = l.b.ins().isub(top, low);
    l.b.ins().icmp(IntCC::Equal, r, want)
}
