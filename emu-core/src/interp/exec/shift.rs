//! Shifts and rotates (SHL/SAL, SHR, SAR, ROL, ROR, RCL, RCR, SHLD, SHRD).
//! SHL, SHR and SAR leave their flags a lazy record (`FlagsOp::Shl` ..);
//! the others compute theirs on the spot. A masked count of zero changes
//! no flags; AF, left undefined by the SDM, is cleared.

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::cpu::{flags, FlagsOp};

use super::super::fault::R;
use super::super::operand::{mask, sign_bit};
use super::super::Interpreter;
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Shl, M::Sal, M::Shr, M::Sar], shift);
    t.set(&[M::Rol, M::Ror, M::Rcl, M::Rcr], rotate);
    t.set(&[M::Shld, M::Shrd], double_shift);
}

/// SF, ZF and PF of a `size`-byte result.
pub(crate) fn szp(res: u64, size: usize) -> u64 {
    let mut f = 0;
    if res & mask(size) == 0 {
        f |= flags::ZF;
    }
    if res & sign_bit(size) != 0 {
        f |= flags::SF;
    }
    if (res as u8).count_ones() % 2 == 0 {
        f |= flags::PF;
    }
    f
}

/// Sets the arithmetic flags to `base` with CF and OF replaced.
fn set_cf_of(cpu: &mut Interpreter, base: u64, cf: bool, of: bool) {
    let mut f = base & !(flags::CF | flags::OF);
    if cf {
        f |= flags::CF;
    }
    if of {
        f |= flags::OF;
    }
    cpu.set_arith_flags(f);
}

/// A masked count of zero changes no flags, but a 32-bit register
/// destination is still written, which clears its upper half in 64-bit
/// mode (found by the host-CPU oracle).
fn unchanged(cpu: &mut Interpreter, ins: &Instruction, value: u64) -> R<()> {
    if ins.op0_kind() == OpKind::Register {
        cpu.write_op(ins, 0, value)?;
    }
    Ok(())
}

fn count_of(cpu: &mut Interpreter, ins: &Instruction, n: u32, size: usize) -> R<u32> {
    let raw = if ins.op_count() > n { cpu.read_op(ins, n)? } else { 1 };
    Ok((raw as u32) & if size == 8 { 0x3f } else { 0x1f })
}

fn shift(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = cpu.op_size(ins, 0);
    let bits = (size * 8) as u32;
    let count = count_of(cpu, ins, 1, size)?;
    let a = cpu.read_op(ins, 0)?;
    if count == 0 {
        return unchanged(cpu, ins, a);
    }
    let m = mask(size);
    let a = a & m;
    let (op, res) = match ins.mnemonic() {
        M::Shl | M::Sal => (FlagsOp::Shl, ((u128::from(a) << count) as u64) & m),
        M::Shr => (FlagsOp::Shr, if count >= bits { 0 } else { a >> count }),
        _ => {
            let signed = super::super::operand::sext(a, size) as i64;
            (FlagsOp::Sar, (signed >> count.min(63)) as u64 & m)
        }
    };
    cpu.write_op(ins, 0, res)?;
    // The flags stay a lazy record (`LazyFlags::compute` has the shifts':
    // OF is defined for 1-bit shifts; for others, hardware computes the
    // same expression on the last step, which we keep).
    cpu.set_lazy(op, size, a, u64::from(count), res);
    Ok(())
}

fn rotate(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = cpu.op_size(ins, 0);
    let bits = (size * 8) as u32;
    let raw = count_of(cpu, ins, 1, size)?;
    let a = cpu.read_op(ins, 0)?;
    let m = mask(size);
    let old = cpu.s.flags();
    let cf_in = old & flags::CF != 0;
    let msb = |v: u64| v & sign_bit(size) != 0;
    let (res, cf, of) = match ins.mnemonic() {
        M::Rol | M::Ror => {
            if raw == 0 {
                return unchanged(cpu, ins, a);
            }
            let c = raw % bits;
            let res = if ins.mnemonic() == M::Rol {
                ((a << c) | if c == 0 { 0 } else { a >> (bits - c) }) & m
            } else {
                ((a >> c) | if c == 0 { 0 } else { a << (bits - c) }) & m
            };
            if ins.mnemonic() == M::Rol {
                let cf = res & 1 != 0;
                (res, cf, msb(res) != cf)
            } else {
                (res, msb(res), msb(res) != (res & (sign_bit(size) >> 1) != 0))
            }
        }
        _ => {
            // RCL/RCR rotate through CF: a (bits + 1)-bit rotation.
            let c = raw % (bits + 1);
            if raw == 0 {
                return unchanged(cpu, ins, a);
            }
            let width = bits + 1;
            let full = u128::from(a) | u128::from(cf_in) << bits;
            let wmask = (1u128 << width) - 1;
            let rot = if ins.mnemonic() == M::Rcl {
                ((full << c) | if c == 0 { 0 } else { full >> (width - c) }) & wmask
            } else {
                ((full >> c) | if c == 0 { 0 } else { full << (width - c) }) & wmask
            };
            let res = (rot as u64) & m;
            let cf = (rot >> bits) & 1 != 0;
            let of = if ins.mnemonic() == M::Rcl { msb(res) != cf } else { msb(a) != cf_in };
            (res, cf, of)
        }
    };
    cpu.write_op(ins, 0, res)?;
    set_cf_of(cpu, old, cf, of);
    Ok(())
}

fn double_shift(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = cpu.op_size(ins, 0);
    let bits = (size * 8) as u32;
    let count = count_of(cpu, ins, 2, size)?;
    let a = cpu.read_op(ins, 0)?;
    if count == 0 {
        return unchanged(cpu, ins, a);
    }
    let b = cpu.read_op(ins, 1)?;
    let m = mask(size);
    // Concatenate into 128 bits and shift: for 16-bit operands with counts
    // above 16 the result is undefined; this gives the usual hardware one.
    let (res, cf) = if ins.mnemonic() == M::Shld {
        let full = (u128::from(a) << bits) | u128::from(b);
        let shifted = full << count;
        let res = ((shifted >> bits) as u64) & m;
        let cf = (full >> (2 * bits - count)) & 1 != 0;
        (res, cf)
    } else {
        let full = (u128::from(b) << bits) | u128::from(a);
        let res = ((full >> count) as u64) & m;
        let cf = (full >> (count - 1)) & 1 != 0;
        (res, cf)
    };
    cpu.write_op(ins, 0, res)?;
    set_cf_of(cpu, szp(res, size), cf, (res ^ a) & sign_bit(size) != 0);
    Ok(())
}
