//! Bit operations and exchanges: BT/BTS/BTR/BTC, BSF/BSR (and TZCNT, which
//! this CPU model runs as BSF), LZCNT, POPCNT, BSWAP, XCHG, XADD,
//! CMPXCHG and CMPXCHG16B, with the interpreter's semantics (`exec::bits`, `exec::data`):
//! BT* change only CF, BSF/BSR leave the destination alone (not even
//! zero-extended) for a zero source, and every memory form does its reads,
//! then its one write, then the register and flag updates.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use emu_core::cpu::{flags as fl, FlagsOp};
use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::flags::{self, FlagsState};
use crate::lower_alu::{check, loc, masked, op_size, read_loc, read_src, write_loc, Loc};
use crate::lower_mem::{address, load, store, Addr};
use crate::translate::{mask, mem, Lower, Unsupported, L};

/// The index in `gpr` of a register's full form.
fn full_index(r: Register) -> usize {
    r.full_register().number() & 15
}

/// The full 64-bit value register `r` would hold after an x86 write of
/// `v` at its size (8/16 merge, 32 zero-extends), without writing it.
fn merged(l: &mut Lower<'_, '_>, r: Register, v: Value) -> Value {
    let full = l.gpr(full_index(r));
    match r.size() {
        8 => v,
        4 => l.zext(v, 4),
        n => {
            let m = mask(n) as i64;
            let kept = l.b.ins().band_imm_s(full, !m);
            let low = l.b.ins().band_imm_s(v, m);
            l.b.ins().bor(kept, low)
        }
    }
}

fn is_high8(r: Register) -> bool {
    matches!(r, Register::AH | Register::CH | Register::DH | Register::BH)
}

/// BT, BTS, BTR, BTC r/m, r/imm8.
pub(crate) fn bit_test(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let size = op_size(ins, 0)?;
    check(ins, 1, true)?;
    let m = ins.mnemonic();
    if ins.has_lock_prefix() && (m == M::Bt || ins.op0_kind() != OpKind::Memory) {
        return Err(Unsupported);
    }
    let bits = (size * 8) as i64;
    let raw = read_src(l, ins, 1, size);
    let (at, value, bit) = if ins.op0_kind() == OpKind::Memory && ins.op1_kind() == OpKind::Register {
        // A register offset is signed and picks a `size`-byte unit
        // relative to the operand (an arithmetic shift is the floor
        // division the interpreter's `div_euclid` does).
        let a = address(l, ins);
        let off = flags::sext(l, raw, size);
        let unit = l.b.ins().sshr_imm_s(off, bits.trailing_zeros() as i64);
        let delta = l.b.ins().imul_imm_s(unit, size as i64);
        let ea = l.b.ins().iadd(a.ea, delta);
        let ea = l.zext(ea, crate::lower_mem::address_size(ins));
        // The segment base (FS/GS, else 0) is added to the moved offset.
        let base = l.b.ins().isub(a.lin, a.ea);
        let lin = l.b.ins().iadd(ea, base);
        let at = Addr { seg: a.seg, ea, lin };
        let v = load(l, ins, at, size);
        let bit = l.b.ins().band_imm_s(off, bits - 1);
        (Loc::Mem(at), v, bit)
    } else {
        let at = loc(l, ins, 0);
        let v = read_loc(l, ins, at, size);
        let bit = l.b.ins().band_imm_s(raw, bits - 1);
        (at, v, bit)
    };
    let one = l.iconst(1);
    let sel = l.b.ins().ishl(one, bit);
    let new = match m {
        M::Bts => Some(l.b.ins().bor(value, sel)),
        M::Btr => Some(l.b.ins().band_not(value, sel)),
        M::Btc => Some(l.b.ins().bxor(value, sel)),
        _ => None,
    };
    let t = l.b.ins().ushr(value, bit);
    let cf = l.b.ins().band_imm_s(t, 1);
    // Only CF changes: the others are needed as they are.
    let old = flags::rflags(l);
    if let Some(v) = new {
        write_loc(l, ins, at, size, v);
    }
    let kept = l.b.ins().band_imm_s(old, !(fl::CF as i64));
    let f = l.b.ins().bor(kept, cf);
    l.flags = FlagsState::Computed(f);
    Ok(())
}

/// BSF, BSR, TZCNT (as BSF: no BMI1), LZCNT, POPCNT r, r/m.
pub(crate) fn scan(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    if ins.op0_kind() != OpKind::Register {
        return Err(Unsupported);
    }
    let size = op_size(ins, 0)?;
    check(ins, 1, false)?;
    if size == 1 || ins.has_lock_prefix() {
        return Err(Unsupported);
    }
    let mut m = ins.mnemonic();
    if m == M::Tzcnt {
        if emu_core::interp::cpuid::BMI1 {
            return Err(Unsupported);
        }
        m = M::Bsf;
    }
    let bits = (size * 8) as i64;
    let src = read_src(l, ins, 1, size);
    let src = masked(l, src, size);
    let zero = l.b.ins().icmp_imm_s(IntCC::Equal, src, 0);
    let zero64 = l.b.ins().uextend(types::I64, zero);
    let r = ins.op0_register();
    let f = match m {
        M::Bsf | M::Bsr => {
            let index = if m == M::Bsf {
                l.b.ins().ctz(src)
            } else {
                let z = l.b.ins().clz(src);
                let k = l.iconst(63);
                l.b.ins().isub(k, z)
            };
            // A zero source leaves the whole register as it was.
            let i = full_index(r);
            let old = l.gpr(i);
            let new = merged(l, r, index);
            let v = l.b.ins().select(zero, old, new);
            l.set_gpr(i, v);
            l.b.ins().ishl_imm_s(zero64, 6)
        }
        M::Popcnt => {
            let n = l.b.ins().popcnt(src);
            l.write_reg(r, n);
            l.b.ins().ishl_imm_s(zero64, 6)
        }
        _ => {
            let z = l.b.ins().clz(src);
            let res = l.b.ins().iadd_imm_s(z, bits - 64);
            l.write_reg(r, res);
            let rz = l.b.ins().icmp_imm_s(IntCC::Equal, res, 0);
            let rz = l.b.ins().uextend(types::I64, rz);
            let zf = l.b.ins().ishl_imm_s(rz, 6);
            l.b.ins().bor(zf, zero64)
        }
    };
    flags::set_arith(l, f);
    Ok(())
}

/// BSWAP r32/r64 (r16: zero, as real CPUs give).
pub(crate) fn bswap(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let r = ins.op0_register();
    if ins.op0_kind() != OpKind::Register || !r.is_gpr() {
        return Err(Unsupported);
    }
    let v = l.read_reg(r);
    let out = match r.size() {
        8 => l.b.ins().bswap(v),
        4 => {
            let n = l.b.ins().ireduce(types::I32, v);
            let s = l.b.ins().bswap(n);
            l.b.ins().uextend(types::I64, s)
        }
        _ => l.iconst(0),
    };
    l.write_reg(r, out);
    Ok(())
}

/// XCHG r/m, r: a memory operand is written first (it may fault), then
/// the register.
pub(crate) fn xchg(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let size = op_size(ins, 0)?;
    op_size(ins, 1)?;
    if ins.has_lock_prefix() && ins.op0_kind() != OpKind::Memory && ins.op1_kind() != OpKind::Memory {
        return Err(Unsupported);
    }
    let a_at = loc(l, ins, 0);
    let b_at = if ins.op1_kind() == OpKind::Memory {
        match a_at {
            Loc::Mem(_) => return Err(Unsupported),
            Loc::Reg(_) => Loc::Mem(address(l, ins)),
        }
    } else {
        Loc::Reg(ins.op1_register())
    };
    let a = read_loc(l, ins, a_at, size);
    let b = read_loc(l, ins, b_at, size);
    match (a_at, b_at) {
        (Loc::Mem(m), Loc::Reg(r)) | (Loc::Reg(r), Loc::Mem(m)) => {
            let (to_mem, to_reg) = if matches!(a_at, Loc::Mem(_)) { (b, a) } else { (a, b) };
            store(l, ins, m, size, to_mem);
            l.write_reg(r, to_reg);
        }
        (Loc::Reg(x), Loc::Reg(y)) => {
            l.write_reg(x, b);
            l.write_reg(y, a);
        }
        _ => return Err(Unsupported),
    }
    Ok(())
}

/// XADD r/m, r: the sum goes to the destination, the old destination to
/// the source register (unless both are the same register).
pub(crate) fn xadd(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let size = op_size(ins, 0)?;
    if ins.op1_kind() != OpKind::Register || !ins.op1_register().is_gpr() || (ins.has_lock_prefix() && ins.op0_kind() != OpKind::Memory) {
        return Err(Unsupported);
    }
    let dst = loc(l, ins, 0);
    let a = read_loc(l, ins, dst, size);
    let b = l.read_reg(ins.op1_register());
    let sum = l.b.ins().iadd(a, b);
    let sum = masked(l, sum, size);
    write_loc(l, ins, dst, size, sum);
    if !matches!(dst, Loc::Reg(r) if r == ins.op1_register()) {
        l.write_reg(ins.op1_register(), a);
    }
    flags::set_lazy(l, FlagsOp::Add, size, a, b, sum);
    Ok(())
}

/// CMPXCHG r/m, r: flags of `acc - dest`; equal: the source goes to the
/// destination; else the destination goes to the accumulator (and a
/// memory destination is written back with its own value).
pub(crate) fn cmpxchg(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let size = op_size(ins, 0)?;
    let src_reg = ins.op1_register();
    if ins.op1_kind() != OpKind::Register || !src_reg.is_gpr() || (ins.has_lock_prefix() && ins.op0_kind() != OpKind::Memory) {
        return Err(Unsupported);
    }
    let acc_reg = match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    };
    let dst = loc(l, ins, 0);
    let acc = l.read_reg(acc_reg);
    let dest = read_loc(l, ins, dst, size);
    let src = l.read_reg(src_reg);
    let eq = l.b.ins().icmp(IntCC::Equal, acc, dest);
    match dst {
        Loc::Mem(a) => {
            let v = l.b.ins().select(eq, src, dest);
            store(l, ins, a, size, v);
        }
        Loc::Reg(r) => {
            // Written only when equal (a 32-bit one is not zero-extended
            // otherwise).
            let i = full_index(r);
            let old = l.gpr(i);
            let new = if is_high8(r) {
                let kept = l.b.ins().band_imm_s(old, !0xff00i64);
                let low = l.b.ins().band_imm_s(src, 0xff);
                let moved = l.b.ins().ishl_imm_s(low, 8);
                l.b.ins().bor(kept, moved)
            } else {
                merged(l, r, src)
            };
            let v = l.b.ins().select(eq, new, old);
            l.set_gpr(i, v);
        }
    }
    let rax = l.gpr(0);
    let loaded = merged(l, acc_reg, dest);
    let v = l.b.ins().select(eq, rax, loaded);
    l.set_gpr(0, v);
    let diff = l.b.ins().isub(acc, dest);
    let diff = masked(l, diff, size);
    flags::set_lazy(l, FlagsOp::Sub, size, acc, dest, diff);
    Ok(())
}

/// CMPXCHG16B m128 (`exec::data::cmpxchg_wide`): RDX:RAX against the
/// operand; equal, RCX:RBX is written and ZF set; else the operand is
/// written back as it was, loaded into RDX:RAX, and ZF cleared; the other
/// flags stay. A misaligned operand (#GP) and one the TLB does not hold
/// for writing, within one page, go to the interpreter on a cold path.
pub(crate) fn cmpxchg16b(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    // Its stores go straight to the host page: never where lockstep
    // journals every write through the helper.
    if ins.op0_kind() != OpKind::Memory || !l.inline_stores {
        return Err(Unsupported);
    }
    crate::lower_mem::check_mem(ins)?;
    let a = address(l, ins);
    // Aligned by its effective address, as the interpreter checks it.
    let host = crate::lower_sse::host16_at(l, ins, a, Some(a.ea), true);
    let lo = l.b.ins().load(types::I64, mem(), host, 0);
    let hi = l.b.ins().load(types::I64, mem(), host, 8);
    let (rax, rdx, rbx, rcx) = (l.gpr(0), l.gpr(2), l.gpr(3), l.gpr(1));
    let lo_equal = l.b.ins().icmp(IntCC::Equal, lo, rax);
    let hi_equal = l.b.ins().icmp(IntCC::Equal, hi, rdx);
    let equal = l.b.ins().band(lo_equal, hi_equal);
    let new_lo = l.b.ins().select(equal, rbx, lo);
    let new_hi = l.b.ins().select(equal, rcx, hi);
    l.b.ins().store(mem(), new_lo, host, 0);
    l.b.ins().store(mem(), new_hi, host, 8);
    let (new_rax, new_rdx) = (l.b.ins().select(equal, rax, lo), l.b.ins().select(equal, rdx, hi));
    l.set_gpr(0, new_rax);
    l.set_gpr(2, new_rdx);
    let f = flags::rflags(l);
    let f = l.b.ins().band_imm_s(f, !(fl::ZF as i64));
    let zf = l.b.ins().uextend(types::I64, equal);
    let zf = l.b.ins().imul_imm_s(zf, fl::ZF as i64);
    let f = l.b.ins().bor(f, zf);
    flags::set_arith(l, f);
    Ok(())
}
