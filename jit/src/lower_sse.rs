//! SSE/SSE2 moves and simple integer operations on XMM registers (the MMX
//! forms, which touch the x87 state, fall back), with the interpreter's
//! semantics (`exec::sse`, `exec::sse_int`): MOVAPS/MOVUPS/MOVAPD/MOVUPD/
//! MOVDQA/MOVDQU, MOVD/MOVQ, the bitwise logic, PADD/PSUB, PCMPEQ,
//! PUNPCK*, PSHUFD, shifts by an immediate and PMOVMSKB/MOVMSKPS/PD; the
//! scalar moves MOVSS/MOVSD, the scalar compares (U)COMISS/(U)COMISD of
//! ordinary values, PALIGNR and FNSTCW (`exec::sse`, `exec::sse_float`,
//! `exec::x87_ctl`).
//!
//! XMM registers stay in `CpuState::fx.xmm` (loaded and stored per
//! instruction). The SSE checks (CR0.EM/TS, CR4.OSFXSR) and 16-byte memory
//! operands that are misaligned where the form requires alignment, cross a
//! page or miss the TLB take a cold path where the interpreter runs the
//! instruction (raising what it raises) and the block ends.

use std::mem::offset_of;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, ConstantData, InstBuilder, MemFlagsData, Type, Value};
use emu_core::cpu::{flags, CpuState, FxState};
use emu_core::interp::offsets;
use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::lower_mem::{address, check_mem, load, store, tlb_check, Addr};
use crate::translate::{mask, mem, Lower, Unsupported, L, st};

/// `CpuState::fx.xmm[0]`.
const XMM: i32 = (offset_of!(CpuState, fx) + offset_of!(FxState, xmm)) as i32;
const CR0: i32 = offset_of!(CpuState, cr0) as i32;
const CR4: i32 = offset_of!(CpuState, cr4) as i32;
/// `CpuState::fx.fcw`, the x87 control word.
const FCW: i32 = (offset_of!(CpuState, fx) + offset_of!(FxState, fcw)) as i32;
/// CR0.EM, CR0.TS, CR4.OSFXSR.
const CR0_EM_TS: i64 = (1 << 2) | (1 << 3);
const CR4_OSFXSR: i64 = 1 << 9;

fn xmm_off(r: Register) -> i32 {
    XMM + 16 * (r.number() & 15) as i32
}

fn load_xmm(l: &mut Lower<'_, '_>, r: Register, ty: Type) -> Value {
    l.b.ins().load(ty, mem(), l.frame, st(xmm_off(r)))
}

fn store_xmm(l: &mut Lower<'_, '_>, r: Register, v: Value) {
    l.b.ins().store(mem(), v, l.frame, st(xmm_off(r)));
}

/// Stores a 64-bit value zero-extended into an XMM register.
fn store_xmm_u64(l: &mut Lower<'_, '_>, r: Register, v: Value) {
    let zero = l.iconst(0);
    let off = xmm_off(r);
    l.b.ins().store(mem(), v, l.frame, st(off));
    l.b.ins().store(mem(), zero, l.frame, st(off + 8));
}

fn is_xmm_op(ins: &Instruction, n: u32) -> bool {
    ins.op_kind(n) == OpKind::Register && ins.op_register(n).is_xmm()
}

/// Whether CR0.EM or CR0.TS is set: x87 and SSE instructions raise #NM
/// (#UD for SSE with EM), which the interpreter does.
fn em_or_ts(l: &mut Lower<'_, '_>) -> Value {
    let cr0 = l.b.ins().load(types::I64, mem(), l.frame, st(CR0));
    let em_ts = l.b.ins().band_imm_s(cr0, CR0_EM_TS);
    l.b.ins().icmp_imm_s(IntCC::NotEqual, em_ts, 0)
}

/// The interpreter's `sse_enter`: #UD/#NM are its to raise.
fn sse_check(l: &mut Lower<'_, '_>, ins: &Instruction) {
    let bad0 = em_or_ts(l);
    let cr4 = l.b.ins().load(types::I64, mem(), l.frame, st(CR4));
    let fx = l.b.ins().band_imm_s(cr4, CR4_OSFXSR);
    let bad4 = l.b.ins().icmp_imm_s(IntCC::Equal, fx, 0);
    let bad = l.b.ins().bor(bad0, bad4);
    l.cold_fallback_if(ins, bad);
}

/// Forms that take any alignment.
fn unaligned(m: M) -> bool {
    matches!(m, M::Movups | M::Movupd | M::Movdqu | M::Lddqu)
}

/// The host address of the instruction's 16-byte memory operand, when it
/// is in the TLB for this access, within a page and (where the form needs
/// it) aligned; otherwise the interpreter runs the instruction.
fn host16(l: &mut Lower<'_, '_>, ins: &Instruction, write: bool) -> Value {
    let a = address(l, ins);
    let aligned = (!unaligned(ins.mnemonic())).then_some(a.lin);
    host16_at(l, ins, a, aligned, write)
}

/// The host address of the 16-byte operand at `a`, when the TLB holds it
/// for this access (`write`) within a page and `aligned`, where given, has
/// its low four bits clear; otherwise the interpreter runs the instruction.
pub(crate) fn host16_at(l: &mut Lower<'_, '_>, ins: &Instruction, a: Addr, aligned: Option<Value>, write: bool) -> Value {
    if let Some(v) = aligned {
        let low = l.b.ins().band_imm_s(v, 15);
        let bad = l.b.ins().icmp_imm_s(IntCC::NotEqual, low, 0);
        l.cold_fallback_if(ins, bad);
    }
    let tag = if write { offsets::TLB_WRITE_TAG } else { offsets::TLB_READ_TAG };
    let (fast, slow, entry) = tlb_check(l, a.lin, 16, tag);
    l.b.switch_to_block(slow);
    l.cold_fallback_exit(ins);
    l.b.switch_to_block(fast);
    let addend = l.b.ins().load(types::I64, mem(), entry, offsets::TLB_ADDEND);
    l.b.ins().iadd(a.lin, addend)
}

/// Operand 1 as a 16-byte vector of type `ty`: an XMM register or aligned
/// (per the form) memory.
fn src16(l: &mut Lower<'_, '_>, ins: &Instruction, ty: Type) -> Value {
    if ins.op1_kind() == OpKind::Memory {
        let host = host16(l, ins, false);
        l.b.ins().load(ty, mem(), host, 0)
    } else {
        load_xmm(l, ins.op1_register(), ty)
    }
}

/// Checks an `xmm, xmm/m128` form.
fn check_rm(ins: &Instruction) -> L<()> {
    if !is_xmm_op(ins, 0) {
        return Err(Unsupported);
    }
    match ins.op1_kind() {
        OpKind::Register if ins.op1_register().is_xmm() => Ok(()),
        OpKind::Memory => check_mem(ins),
        _ => Err(Unsupported),
    }
}

/// MOVAPS, MOVUPS, MOVAPD, MOVUPD, MOVDQA, MOVDQU, LDDQU.
pub(crate) fn mov128(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    if ins.op0_kind() == OpKind::Memory {
        // Without inline stores (lockstep) the interpreter writes.
        if !is_xmm_op(ins, 1) || !l.inline_stores {
            return Err(Unsupported);
        }
        check_mem(ins)?;
        sse_check(l, ins);
        let v = load_xmm(l, ins.op1_register(), types::I64X2);
        let host = host16(l, ins, true);
        l.b.ins().store(mem(), v, host, 0);
        return Ok(());
    }
    check_rm(ins)?;
    sse_check(l, ins);
    let v = src16(l, ins, types::I64X2);
    store_xmm(l, ins.op0_register(), v);
    Ok(())
}

/// MOVD, MOVQ between XMM registers, GPRs and memory.
pub(crate) fn movd_q(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let size = if ins.mnemonic() == M::Movd { 4 } else { 8 };
    let gpr_or_mem = |n: u32| match ins.op_kind(n) {
        OpKind::Register => ins.op_register(n).is_gpr(),
        OpKind::Memory => check_mem(ins).is_ok(),
        _ => false,
    };
    if is_xmm_op(ins, 0) && (is_xmm_op(ins, 1) || gpr_or_mem(1)) {
        sse_check(l, ins);
        let v = match ins.op1_kind() {
            OpKind::Memory => {
                let a = address(l, ins);
                load(l, ins, a, size)
            }
            _ if is_xmm_op(ins, 1) => {
                let v = load_xmm(l, ins.op1_register(), types::I64);
                if size == 4 {
                    l.b.ins().band_imm_s(v, 0xffff_ffff)
                } else {
                    v
                }
            }
            _ => l.read_reg(ins.op1_register()),
        };
        store_xmm_u64(l, ins.op0_register(), v);
        return Ok(());
    }
    if is_xmm_op(ins, 1) && gpr_or_mem(0) {
        sse_check(l, ins);
        let v = load_xmm(l, ins.op1_register(), types::I64);
        let v = if size == 4 { l.b.ins().band_imm_s(v, 0xffff_ffff) } else { v };
        match ins.op0_kind() {
            OpKind::Memory => {
                let a = address(l, ins);
                store(l, ins, a, size, v);
            }
            _ => {
                let r = ins.op0_register();
                let v = if r.size() < size { l.b.ins().band_imm_s(v, mask(r.size()) as i64) } else { v };
                l.write_reg(r, v);
            }
        }
        return Ok(());
    }
    Err(Unsupported)
}

/// The lane type of a packed integer operation.
fn lanes(m: M) -> Type {
    match m {
        M::Paddb | M::Psubb | M::Pcmpeqb | M::Punpcklbw | M::Punpckhbw => types::I8X16,
        M::Paddw | M::Psubw | M::Pcmpeqw | M::Punpcklwd | M::Punpckhwd | M::Psllw | M::Psrlw | M::Psraw => types::I16X8,
        M::Paddd | M::Psubd | M::Pcmpeqd | M::Punpckldq | M::Punpckhdq | M::Pslld | M::Psrld | M::Psrad | M::Pshufd => types::I32X4,
        _ => types::I64X2,
    }
}

/// PUNPCKL*/PUNPCKH* as a byte shuffle of (a, b): lanes of `w` bytes
/// interleaved from the low or high halves.
fn unpack_mask(w: usize, high: bool) -> [u8; 16] {
    let half = 16 / w / 2;
    let base = if high { half } else { 0 };
    let mut m = [0u8; 16];
    for i in 0..half {
        for k in 0..w {
            m[2 * i * w + k] = ((base + i) * w + k) as u8;
            m[(2 * i + 1) * w + k] = (16 + (base + i) * w + k) as u8;
        }
    }
    m
}

fn shuffle(l: &mut Lower<'_, '_>, a: Value, b: Value, m: [u8; 16]) -> Value {
    let imm = l.b.func.dfg.immediates.push(ConstantData::from(m.to_vec()));
    let a = l.b.ins().bitcast(types::I8X16, little(), a);
    let b = l.b.ins().bitcast(types::I8X16, little(), b);
    l.b.ins().shuffle(a, b, imm)
}

fn little() -> cranelift_codegen::ir::MemFlagsData {
    cranelift_codegen::ir::MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

/// The two-operand packed operations `xmm, xmm/m128`.
pub(crate) fn binary(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    check_rm(ins)?;
    let m = ins.mnemonic();
    let ty = lanes(m);
    sse_check(l, ins);
    let b = src16(l, ins, ty);
    let d = ins.op0_register();
    let a = load_xmm(l, d, ty);
    let v = match m {
        M::Pxor | M::Xorps | M::Xorpd => l.b.ins().bxor(a, b),
        M::Por | M::Orps | M::Orpd => l.b.ins().bor(a, b),
        M::Pand | M::Andps | M::Andpd => l.b.ins().band(a, b),
        M::Pandn | M::Andnps | M::Andnpd => l.b.ins().band_not(b, a),
        M::Paddb | M::Paddw | M::Paddd | M::Paddq => l.b.ins().iadd(a, b),
        M::Psubb | M::Psubw | M::Psubd | M::Psubq => l.b.ins().isub(a, b),
        M::Pcmpeqb | M::Pcmpeqw | M::Pcmpeqd => l.b.ins().icmp(IntCC::Equal, a, b),
        M::Punpcklbw | M::Punpcklwd | M::Punpckldq | M::Punpcklqdq | M::Punpckhbw | M::Punpckhwd | M::Punpckhdq | M::Punpckhqdq => {
            let w = ty.lane_bits() as usize / 8;
            let high = matches!(m, M::Punpckhbw | M::Punpckhwd | M::Punpckhdq | M::Punpckhqdq);
            shuffle(l, a, b, unpack_mask(w, high))
        }
        _ => return Err(Unsupported),
    };
    store_xmm(l, d, v);
    Ok(())
}

/// PSHUFD xmm, xmm/m128, imm8.
pub(crate) fn pshufd(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    check_rm(ins)?;
    if ins.op2_kind() != OpKind::Immediate8 {
        return Err(Unsupported);
    }
    sse_check(l, ins);
    let s = src16(l, ins, types::I32X4);
    let imm = usize::from(ins.immediate8());
    let mut m = [0u8; 16];
    for i in 0..4 {
        let sel = (imm >> (2 * i)) & 3;
        for k in 0..4 {
            m[4 * i + k] = (4 * sel + k) as u8;
        }
    }
    let v = shuffle(l, s, s, m);
    store_xmm(l, ins.op0_register(), v);
    Ok(())
}

/// PALIGNR xmm, xmm/m128, imm8 (`exec::ssse3`): the destination over the
/// source as 32 bytes, shifted right by `imm8` bytes, the low 16 kept.
pub(crate) fn palignr(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    check_rm(ins)?;
    if ins.op2_kind() != OpKind::Immediate8 {
        return Err(Unsupported);
    }
    sse_check(l, ins);
    let src = src16(l, ins, types::I8X16);
    let dst = load_xmm(l, ins.op0_register(), types::I8X16);
    let shift = usize::from(ins.immediate8());
    let zero = l.b.ins().iconst(types::I8, 0);
    let zero = l.b.ins().splat(types::I8X16, zero);
    let v = match shift {
        // Byte i of the result is byte shift + i of (dst:src).
        0..=16 => shuffle(l, src, dst, std::array::from_fn(|i| (shift + i) as u8)),
        // Past the source: the destination's upper bytes, then zeros (the
        // zero vector's first byte is index 16).
        17..=31 => shuffle(l, dst, zero, std::array::from_fn(|i| if shift - 16 + i < 16 { (shift - 16 + i) as u8 } else { 16 })),
        _ => zero,
    };
    store_xmm(l, ins.op0_register(), v);
    Ok(())
}

/// PSLL/PSRL/PSRA W/D/Q xmm, imm8 and PSLLDQ/PSRLDQ xmm, imm8.
pub(crate) fn shift_imm(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    if !is_xmm_op(ins, 0) || ins.op1_kind() != OpKind::Immediate8 {
        return Err(Unsupported);
    }
    let m = ins.mnemonic();
    let count = u32::from(ins.immediate8());
    let d = ins.op0_register();
    sse_check(l, ins);
    if matches!(m, M::Pslldq | M::Psrldq) {
        let a = load_xmm(l, d, types::I8X16);
        let c = count.min(16) as usize;
        let zero = l.b.ins().iconst(types::I8, 0);
        let zero = l.b.ins().splat(types::I8X16, zero);
        // Index 16 is the zero vector's first byte.
        let mut mk = [16u8; 16];
        for (i, slot) in mk.iter_mut().enumerate() {
            if m == M::Pslldq && i >= c {
                *slot = (i - c) as u8;
            } else if m == M::Psrldq && i + c < 16 {
                *slot = (i + c) as u8;
            }
        }
        let v = shuffle(l, a, zero, mk);
        store_xmm(l, d, v);
        return Ok(());
    }
    let ty = lanes(m);
    let bits = ty.lane_bits();
    let a = load_xmm(l, d, ty);
    let v = match m {
        M::Psllw | M::Pslld | M::Psllq | M::Psrlw | M::Psrld | M::Psrlq if count >= bits => {
            let z = l.b.ins().iconst(ty.lane_type(), 0);
            l.b.ins().splat(ty, z)
        }
        M::Psllw | M::Pslld | M::Psllq => l.b.ins().ishl_imm_s(a, i64::from(count)),
        M::Psrlw | M::Psrld | M::Psrlq => l.b.ins().ushr_imm_s(a, i64::from(count)),
        M::Psraw | M::Psrad => l.b.ins().sshr_imm_s(a, i64::from(count.min(bits - 1))),
        _ => return Err(Unsupported),
    };
    store_xmm(l, d, v);
    Ok(())
}

/// PMOVMSKB, MOVMSKPS, MOVMSKPD r, xmm.
pub(crate) fn movmsk(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    if !is_xmm_op(ins, 1) || ins.op0_kind() != OpKind::Register || !ins.op0_register().is_gpr() {
        return Err(Unsupported);
    }
    let ty = match ins.mnemonic() {
        M::Movmskps => types::I32X4,
        M::Movmskpd => types::I64X2,
        _ => types::I8X16,
    };
    sse_check(l, ins);
    let v = load_xmm(l, ins.op1_register(), ty);
    let r = l.b.ins().vhigh_bits(types::I64, v);
    l.write_reg(ins.op0_register(), r);
    Ok(())
}

/// PSHUFB xmm, xmm/m128: Cranelift's `swizzle` zeroes lanes whose index is
/// 16 or more, so the selector keeps bit 7 (zero the lane) and the low
/// four bits (the index), as the interpreter's `pshufb`.
pub(crate) fn pshufb(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    check_rm(ins)?;
    sse_check(l, ins);
    let sel = src16(l, ins, types::I8X16);
    let d = ins.op0_register();
    let a = load_xmm(l, d, types::I8X16);
    let m = l.b.ins().iconst(types::I8, 0x8f);
    let m = l.b.ins().splat(types::I8X16, m);
    let idx = l.b.ins().band(sel, m);
    let v = l.b.ins().swizzle(a, idx);
    store_xmm(l, d, v);
    Ok(())
}

/// Whether MOVSD is the SSE2 scalar move (an XMM operand), not the string
/// instruction.
pub(crate) fn is_scalar_move(ins: &Instruction) -> bool {
    (0..ins.op_count()).any(|i| is_xmm_op(ins, i))
}

/// MOVSS/MOVSD, the scalar moves (`exec::sse::mov_scalar`): the low 4 or 8
/// bytes from one XMM register into another's (its other bytes kept),
/// from memory (the other bytes zeroed) or to memory.
pub(crate) fn mov_scalar(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let (size, ty) = if ins.mnemonic() == M::Movss { (4, types::I32) } else { (8, types::I64) };
    match (ins.op0_kind(), ins.op1_kind()) {
        (OpKind::Register, OpKind::Register) if is_xmm_op(ins, 0) && is_xmm_op(ins, 1) => {
            sse_check(l, ins);
            let v = load_xmm(l, ins.op1_register(), ty);
            store_xmm(l, ins.op0_register(), v);
        }
        (OpKind::Register, OpKind::Memory) if is_xmm_op(ins, 0) => {
            check_mem(ins)?;
            sse_check(l, ins);
            let a = address(l, ins);
            let v = load(l, ins, a, size);
            store_xmm_u64(l, ins.op0_register(), v);
        }
        (OpKind::Memory, OpKind::Register) if is_xmm_op(ins, 1) => {
            check_mem(ins)?;
            sse_check(l, ins);
            let v = load_xmm(l, ins.op1_register(), types::I64);
            let a = address(l, ins);
            store(l, ins, a, size, v);
        }
        _ => return Err(Unsupported),
    }
    Ok(())
}

/// COMISS/COMISD/UCOMISS/UCOMISD (`exec::sse_float::comis`) where neither
/// operand is a NaN or a denormal: ZF, PF and CF from the comparison, the
/// other arithmetic flags clear, MXCSR untouched. A NaN (which sets
/// MXCSR.IE, or raises #XM) or a denormal (DE, or DAZ) goes to the
/// interpreter on a cold path.
pub(crate) fn comis(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let double = matches!(ins.mnemonic(), M::Comisd | M::Ucomisd);
    let (size, int, float) = if double { (8, types::I64, types::F64) } else { (4, types::I32, types::F32) };
    if !is_xmm_op(ins, 0) {
        return Err(Unsupported);
    }
    match ins.op1_kind() {
        OpKind::Register if is_xmm_op(ins, 1) => {}
        OpKind::Memory => check_mem(ins)?,
        _ => return Err(Unsupported),
    }
    sse_check(l, ins);
    let a = load_xmm(l, ins.op0_register(), int);
    let b = if ins.op1_kind() == OpKind::Memory {
        let at = address(l, ins);
        let v = load(l, ins, at, size);
        if double { v } else { l.b.ins().ireduce(int, v) }
    } else {
        load_xmm(l, ins.op1_register(), int)
    };
    let odd = [a, b].map(|v| not_ordinary(l, v, double));
    let odd = l.b.ins().bor(odd[0], odd[1]);
    l.cold_fallback_if(ins, odd);
    let (fa, fb) = (l.b.ins().bitcast(float, MemFlagsData::new(), a), l.b.ins().bitcast(float, MemFlagsData::new(), b));
    let less = l.b.ins().fcmp(FloatCC::LessThan, fa, fb);
    let equal = l.b.ins().fcmp(FloatCC::Equal, fa, fb);
    let less = l.b.ins().uextend(types::I64, less);
    let equal = l.b.ins().uextend(types::I64, equal);
    let cf = l.b.ins().imul_imm_s(less, flags::CF as i64);
    let zf = l.b.ins().imul_imm_s(equal, flags::ZF as i64);
    let f = l.b.ins().bor(cf, zf);
    crate::flags::set_arith(l, f);
    Ok(())
}

/// Whether the float bits `v` (a double or a single) are a NaN or a
/// denormal: neither zero nor a magnitude from the smallest normal to
/// infinity ((|v| - smallest normal) wraps for zero and the denormals).
fn not_ordinary(l: &mut Lower<'_, '_>, v: Value, double: bool) -> Value {
    let (magnitude_bits, min_normal, span): (i64, i64, i64) = if double {
        (i64::MAX, 1 << 52, 0x7ff0_0000_0000_0000 - (1 << 52))
    } else {
        (0x7fff_ffff, 1 << 23, 0x7f80_0000 - (1 << 23))
    };
    let magnitude = l.b.ins().band_imm_s(v, magnitude_bits);
    let zero = l.b.ins().icmp_imm_s(IntCC::Equal, magnitude, 0);
    let above = l.b.ins().iadd_imm_s(magnitude, -min_normal);
    let out = l.b.ins().icmp_imm_s(IntCC::UnsignedGreaterThan, above, span);
    let not_zero = l.b.ins().bnot(zero);
    l.b.ins().band(out, not_zero)
}

/// FNSTCW m16 (`exec::x87_ctl::fstcw` without the wait): the x87 control
/// word to memory; CR0.EM or CR0.TS (#NM) are the interpreter's.
pub(crate) fn fnstcw(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    if ins.op0_kind() != OpKind::Memory {
        return Err(Unsupported);
    }
    check_mem(ins)?;
    let bad = em_or_ts(l);
    l.cold_fallback_if(ins, bad);
    let fcw = l.b.ins().uload16(types::I64, mem(), l.frame, st(FCW));
    let a = address(l, ins);
    store(l, ins, a, 2, fcw);
    Ok(())
}
