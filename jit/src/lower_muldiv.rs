//! One-operand MUL and IMUL, DIV and IDIV, and the accumulator
//! sign extensions (CBW/CWDE/CDQE, CWD/CDQ/CQO), with the interpreter's
//! semantics (`exec::muldiv`, `exec::data`).
//!
//! A division that would raise #DE (zero divisor, quotient too wide), and
//! a 64-bit IDIV whose dividend needs RDX, takes a cold path where the
//! interpreter runs the instruction (raising the exception, or dividing)
//! and the block ends there. A 64-bit DIV whose dividend needs RDX
//! (Cranelift divides 64 bits by 64; libgcc's 128-bit division does this
//! in the guest's number formatting) calls a helper for the quotient.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use iced_x86::{Instruction, Mnemonic as M, Register};

use crate::flags;
use crate::lower_alu::{loc, masked, op_size, read_loc};
use crate::translate::{Lower, Unsupported, L};

fn acc_regs(size: usize) -> (Register, Register) {
    match size {
        1 => (Register::AL, Register::AH),
        2 => (Register::AX, Register::DX),
        4 => (Register::EAX, Register::EDX),
        _ => (Register::RAX, Register::RDX),
    }
}

/// The interpreter's `write_wide`: AX for bytes, else (E/R)AX and (E/R)DX.
fn write_wide(l: &mut Lower<'_, '_>, size: usize, lo: Value, hi: Value) {
    if size == 1 {
        let h = l.b.ins().band_imm_s(hi, 0xff);
        let h = l.b.ins().ishl_imm_s(h, 8);
        let lo = l.b.ins().band_imm_s(lo, 0xff);
        let v = l.b.ins().bor(h, lo);
        l.write_reg(Register::AX, v);
    } else {
        let (a, d) = acc_regs(size);
        l.write_reg(a, lo);
        l.write_reg(d, hi);
    }
}

/// MUL r/m and IMUL r/m (one operand): CF = OF = the high half matters;
/// SF, ZF, PF from the low half, AF cleared.
pub(crate) fn mul(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    if ins.op_count() != 1 || ins.has_lock_prefix() {
        return Err(Unsupported);
    }
    let size = op_size(ins, 0)?;
    let signed = ins.mnemonic() == M::Imul;
    let bits = (size * 8) as i64;
    let at = loc(l, ins, 0);
    let src = read_loc(l, ins, at, size);
    let a = l.read_reg(acc_regs(size).0);
    let (lo, hi, overflow) = if size == 8 {
        let lo = l.b.ins().imul(a, src);
        if signed {
            let hi = l.b.ins().smulhi(a, src);
            let sign = l.b.ins().sshr_imm_s(lo, 63);
            (lo, hi, l.b.ins().icmp(IntCC::NotEqual, hi, sign))
        } else {
            let hi = l.b.ins().umulhi(a, src);
            (lo, hi, l.b.ins().icmp_imm_s(IntCC::NotEqual, hi, 0))
        }
    } else {
        // The whole product fits in 64 bits.
        let (x, y) = if signed { (flags::sext(l, a, size), flags::sext(l, src, size)) } else { (a, src) };
        let p = l.b.ins().imul(x, y);
        let lo = masked(l, p, size);
        let h = l.b.ins().ushr_imm_s(p, bits);
        let hi = masked(l, h, size);
        let overflow = if signed {
            let back = flags::sext(l, lo, size);
            l.b.ins().icmp(IntCC::NotEqual, back, p)
        } else {
            l.b.ins().icmp_imm_s(IntCC::NotEqual, hi, 0)
        };
        (lo, hi, overflow)
    };
    write_wide(l, size, lo, hi);
    flags::set_mul(l, lo, size, overflow);
    Ok(())
}

/// DIV, IDIV r/m. The flags are left as they are (as the interpreter
/// does).
pub(crate) fn div(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let size = op_size(ins, 0)?;
    if ins.has_lock_prefix() {
        return Err(Unsupported);
    }
    let signed = ins.mnemonic() == M::Idiv;
    let bits = (size * 8) as i64;
    let at = loc(l, ins, 0);
    let divisor = read_loc(l, ins, at, size);
    let (lo, hi) = if size == 1 {
        let ax = l.read_reg(Register::AX);
        let lo = l.b.ins().band_imm_s(ax, 0xff);
        (lo, l.b.ins().ushr_imm_s(ax, 8))
    } else {
        let (a, d) = acc_regs(size);
        (l.read_reg(a), l.read_reg(d))
    };
    let (q, r) = if size == 8 {
        if signed {
            // Only dividends that are RAX sign-extended, and never
            // MIN / -1 (which overflows, and traps in Cranelift).
            let sign = l.b.ins().sshr_imm_s(lo, 63);
            let wide = l.b.ins().icmp(IntCC::NotEqual, hi, sign);
            let zero = l.b.ins().icmp_imm_s(IntCC::Equal, divisor, 0);
            let m1 = l.b.ins().icmp_imm_s(IntCC::Equal, divisor, -1);
            let min = l.b.ins().icmp_imm_s(IntCC::Equal, lo, i64::MIN);
            let ovf = l.b.ins().band(m1, min);
            let bad = l.b.ins().bor(wide, zero);
            let bad = l.b.ins().bor(bad, ovf);
            l.cold_fallback_if(ins, bad);
            (l.b.ins().sdiv(lo, divisor), l.b.ins().srem(lo, divisor))
        } else {
            // #DE exactly when hi >= divisor (which covers a zero one).
            let bad = l.b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, hi, divisor);
            l.cold_fallback_if(ins, bad);
            let q = divide_wide(l, hi, lo, divisor);
            // hi:lo = q * divisor + r with r < 2^64: r is the low half's rest.
            let product = l.b.ins().imul(q, divisor);
            (q, l.b.ins().isub(lo, product))
        }
    } else {
        // The dividend hi:lo fits in 64 bits.
        let h = l.b.ins().ishl_imm_s(hi, bits);
        let n = l.b.ins().bor(h, lo);
        if signed {
            let n = if size == 4 { n } else { flags::sext(l, n, 2 * size) };
            let d = flags::sext(l, divisor, size);
            let zero = l.b.ins().icmp_imm_s(IntCC::Equal, d, 0);
            let m1 = l.b.ins().icmp_imm_s(IntCC::Equal, d, -1);
            let min = l.b.ins().icmp_imm_s(IntCC::Equal, n, i64::MIN);
            let ovf = l.b.ins().band(m1, min);
            let bad = l.b.ins().bor(zero, ovf);
            l.cold_fallback_if(ins, bad);
            let q = l.b.ins().sdiv(n, d);
            let r = l.b.ins().srem(n, d);
            // The quotient must fit the operand size, signed.
            let back = flags::sext(l, q, size);
            let wide = l.b.ins().icmp(IntCC::NotEqual, back, q);
            l.cold_fallback_if(ins, wide);
            (masked(l, q, size), masked(l, r, size))
        } else {
            // #DE exactly when hi >= divisor (which covers a zero one).
            let bad = l.b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, hi, divisor);
            l.cold_fallback_if(ins, bad);
            (l.b.ins().udiv(n, divisor), l.b.ins().urem(n, divisor))
        }
    };
    write_wide(l, size, q, r);
    Ok(())
}

/// The quotient of `hi:lo` by `divisor`, given `hi < divisor`: a native
/// division when `hi` is zero, else (on a cold path) the `div128` helper.
fn divide_wide(l: &mut Lower<'_, '_>, hi: Value, lo: Value, divisor: Value) -> Value {
    let wide = l.b.create_block();
    let narrow = l.b.create_block();
    let join = l.b.create_block();
    let q = l.b.append_block_param(join, types::I64);
    l.b.set_cold_block(wide);
    l.b.ins().brif(hi, wide, &[], narrow, &[]);
    l.b.switch_to_block(wide);
    let helper = l.helpers.div128 as usize;
    let wide_q = l.call(helper, l.sigs.div128, &[hi, lo, divisor]);
    l.b.ins().jump(join, &[wide_q.into()]);
    l.b.switch_to_block(narrow);
    let narrow_q = l.b.ins().udiv(lo, divisor);
    l.b.ins().jump(join, &[narrow_q.into()]);
    l.b.switch_to_block(join);
    q
}

/// CBW, CWDE, CDQE, CWD, CDQ, CQO.
pub(crate) fn extend_acc(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let a = l.gpr(0);
    match ins.mnemonic() {
        M::Cbw => {
            let v = flags::sext(l, a, 1);
            l.write_reg(Register::AX, v);
        }
        M::Cwde => {
            let v = flags::sext(l, a, 2);
            l.write_reg(Register::EAX, v);
        }
        M::Cdqe => {
            let v = flags::sext(l, a, 4);
            l.write_reg(Register::RAX, v);
        }
        M::Cwd => {
            let s = flags::sext(l, a, 2);
            let v = l.b.ins().sshr_imm_s(s, 63);
            l.write_reg(Register::DX, v);
        }
        M::Cdq => {
            let s = flags::sext(l, a, 4);
            let v = l.b.ins().sshr_imm_s(s, 63);
            l.write_reg(Register::EDX, v);
        }
        M::Cqo => {
            let v = l.b.ins().sshr_imm_s(a, 63);
            l.write_reg(Register::RDX, v);
        }
        _ => return Err(Unsupported),
    }
    Ok(())
}
