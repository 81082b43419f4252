//! SSE4.1 integer and data-movement instructions: the blends, PTEST,
//! the new multiplies, compares, MIN/MAX and PACKUSDW, PMOVSX/PMOVZX,
//! the element inserts and extracts (INSERTPS/EXTRACTPS, PINSR*,
//! PEXTR*, including the 0F 3A 15 PEXTRW that can store to memory),
//! PHMINPOSUW, MPSADBW and MOVNTDQA. ROUND* and DPPS/DPPD are in
//! `sse41_float`.

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::cpu::flags;

use super::super::fault::R;
use super::super::Interpreter;
use super::sse::{trunc, width};
use super::sse_int::{lane, map2, pack, sat_u, sx};
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(
        &[
            M::Pmuldq, M::Pmulld, M::Pcmpeqq, M::Packusdw, M::Pminsb, M::Pminsd, M::Pminuw, M::Pminud, M::Pmaxsb, M::Pmaxsd,
            M::Pmaxuw, M::Pmaxud,
        ],
        binary,
    );
    t.set(&[M::Pblendvb, M::Blendvps, M::Blendvpd, M::Pblendw, M::Blendps, M::Blendpd], blend);
    t.set(&[M::Ptest], ptest);
    t.set(
        &[
            M::Pmovsxbw, M::Pmovsxbd, M::Pmovsxbq, M::Pmovsxwd, M::Pmovsxwq, M::Pmovsxdq, M::Pmovzxbw, M::Pmovzxbd, M::Pmovzxbq,
            M::Pmovzxwd, M::Pmovzxwq, M::Pmovzxdq,
        ],
        pmovx,
    );
    t.set(&[M::Pinsrb, M::Pinsrd, M::Pinsrq], pinsr);
    // All PEXTRW forms: MMX and SSE2 to a GPR, SSE4.1 also to memory.
    t.set(&[M::Pextrb, M::Pextrw, M::Pextrd, M::Pextrq, M::Extractps], extract);
    t.set(&[M::Insertps], insertps);
    t.set(&[M::Phminposuw], phminposuw);
    t.set(&[M::Mpsadbw], mpsadbw);
    t.set(&[M::Movntdqa], movntdqa);
}

fn binary(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let d = ins.op0_register();
    let a = cpu.vreg(d);
    let b = cpu.read_vop(ins, 1, 16)?;
    let signed_min = |w: usize| move |x: u64, y: u64| if sx(x, w) < sx(y, w) { x } else { y };
    let signed_max = |w: usize| move |x: u64, y: u64| if sx(x, w) > sx(y, w) { x } else { y };
    let v = match ins.mnemonic() {
        M::Pmuldq => map2(a, b, 16, 8, |x, y| (sx(x & 0xffff_ffff, 4) * sx(y & 0xffff_ffff, 4)) as u64),
        M::Pmulld => map2(a, b, 16, 4, u64::wrapping_mul),
        M::Pcmpeqq => map2(a, b, 16, 8, |x, y| if x == y { u64::MAX } else { 0 }),
        M::Packusdw => pack(a, b, 16, 4, |v| sat_u(v, 2)),
        M::Pminsb => map2(a, b, 16, 1, signed_min(1)),
        M::Pminsd => map2(a, b, 16, 4, signed_min(4)),
        M::Pminuw => map2(a, b, 16, 2, u64::min),
        M::Pminud => map2(a, b, 16, 4, u64::min),
        M::Pmaxsb => map2(a, b, 16, 1, signed_max(1)),
        M::Pmaxsd => map2(a, b, 16, 4, signed_max(4)),
        M::Pmaxuw => map2(a, b, 16, 2, u64::max),
        _ => map2(a, b, 16, 4, u64::max),
    };
    cpu.set_vreg(d, v);
    Ok(())
}

/// Takes the `w`-byte elements of `b` where `pick(i)`, of `a` elsewhere.
fn select(a: u128, b: u128, w: usize, pick: impl Fn(usize) -> bool) -> u128 {
    (0..16 / w).fold(0, |r, i| {
        let src = if pick(i) { b } else { a };
        r | u128::from(lane(src, w, i)) << (8 * w * i)
    })
}

/// The blends: by imm8 bits, or by the top bit of each element of the
/// implicit XMM0.
fn blend(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let d = ins.op0_register();
    let a = cpu.vreg(d);
    let b = cpu.read_vop(ins, 1, 16)?;
    let imm = u32::from(ins.immediate8());
    let mask = cpu.s.fx.xmm[0];
    let by_mask = |w: usize| move |i: usize| (mask >> (8 * w * (i + 1) - 1)) & 1 != 0;
    let v = match ins.mnemonic() {
        M::Pblendvb => select(a, b, 1, by_mask(1)),
        M::Blendvps => select(a, b, 4, by_mask(4)),
        M::Blendvpd => select(a, b, 8, by_mask(8)),
        M::Pblendw => select(a, b, 2, |i| imm >> i & 1 != 0),
        M::Blendps => select(a, b, 4, |i| imm >> i & 1 != 0),
        _ => select(a, b, 8, |i| imm >> i & 1 != 0),
    };
    cpu.set_vreg(d, v);
    Ok(())
}

/// PTEST: ZF when source AND destination is zero, CF when source AND NOT
/// destination is; AF, OF, PF and SF cleared.
fn ptest(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let a = cpu.vreg(ins.op0_register());
    let b = cpu.read_vop(ins, 1, 16)?;
    let zf = if a & b == 0 { flags::ZF } else { 0 };
    let cf = if b & !a == 0 { flags::CF } else { 0 };
    cpu.set_arith_flags(zf | cf);
    Ok(())
}

fn pmovx(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    use M::*;
    let m = ins.mnemonic();
    let (from, to) = match m {
        Pmovsxbw | Pmovzxbw => (1, 2),
        Pmovsxbd | Pmovzxbd => (1, 4),
        Pmovsxbq | Pmovzxbq => (1, 8),
        Pmovsxwd | Pmovzxwd => (2, 4),
        Pmovsxwq | Pmovzxwq => (2, 8),
        _ => (4, 8),
    };
    let signed = matches!(m, Pmovsxbw | Pmovsxbd | Pmovsxbq | Pmovsxwd | Pmovsxwq | Pmovsxdq);
    let count = 16 / to;
    // Only the elements used are read: a memory source is 2 to 8 bytes.
    let s = cpu.read_vop(ins, 1, count * from)?;
    let v = (0..count).fold(0u128, |r, i| {
        let x = lane(s, from, i);
        let x = if signed { sx(x, from) as u64 } else { x };
        r | trunc(u128::from(x), to) << (8 * to * i)
    });
    cpu.set_vreg(ins.op0_register(), v);
    Ok(())
}

/// PINSRB/D/Q: an element from a GPR (its low bytes) or memory.
fn pinsr(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let w = match ins.mnemonic() {
        M::Pinsrb => 1,
        M::Pinsrd => 4,
        _ => 8,
    };
    let x = u128::from(cpu.read_op(ins, 1)?) & trunc(u128::MAX, w);
    let i = usize::from(ins.immediate8()) % (16 / w);
    let d = ins.op0_register();
    let shift = 8 * w * i;
    let v = (cpu.vreg(d) & !(trunc(u128::MAX, w) << shift)) | x << shift;
    cpu.set_vreg(d, v);
    Ok(())
}

/// PEXTRB/W/D/Q and EXTRACTPS: an element to a GPR (zero-extended) or
/// to memory (its own size).
fn extract(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.simd_enter(ins)?;
    let s = ins.op1_register();
    let w = match ins.mnemonic() {
        M::Pextrb => 1,
        M::Pextrw => 2,
        M::Pextrd | M::Extractps => 4,
        _ => 8,
    };
    let i = usize::from(ins.immediate8()) % (width(s) / w);
    let x = lane(cpu.vreg(s), w, i);
    cpu.write_op(ins, 0, x)
}

/// INSERTPS: a single from a register element (imm8[7:6]) or memory
/// into element imm8[5:4], then the elements in imm8[3:0] zeroed.
fn insertps(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let imm = usize::from(ins.immediate8());
    let x = match ins.op1_kind() {
        OpKind::Register => lane(cpu.vreg(ins.op1_register()), 4, imm >> 6),
        _ => cpu.read_vmem(ins, 4)? as u64,
    };
    let d = ins.op0_register();
    let cur = cpu.vreg(d);
    let di = (imm >> 4) & 3;
    let v = (0..4).fold(0u128, |r, i| {
        let e = if imm & (1 << i) != 0 {
            0
        } else if i == di {
            x
        } else {
            lane(cur, 4, i)
        };
        r | u128::from(e) << (32 * i)
    });
    cpu.set_vreg(d, v);
    Ok(())
}

/// PHMINPOSUW: the smallest unsigned word and its index (the lowest on
/// ties) in bits 15:0 and 18:16; the rest zero.
fn phminposuw(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let s = cpu.read_vop(ins, 1, 16)?;
    let (min, i) = (0..8u64).map(|i| (lane(s, 2, i as usize), i)).min().unwrap_or((0, 0));
    cpu.set_vreg(ins.op0_register(), u128::from(min | i << 16));
    Ok(())
}

/// MPSADBW: eight sums of absolute differences between a 4-byte block of
/// the source (imm8[1:0]) and sliding 4-byte windows of the destination
/// starting at byte 0 or 4 (imm8[2]).
fn mpsadbw(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let d = ins.op0_register();
    let a = cpu.vreg(d);
    let b = cpu.read_vop(ins, 1, 16)?;
    let imm = usize::from(ins.immediate8());
    let (da, sb) = (4 * ((imm >> 2) & 1), 4 * (imm & 3));
    let v = (0..8).fold(0u128, |r, i| {
        let sum: u64 = (0..4).map(|k| lane(a, 1, da + i + k).abs_diff(lane(b, 1, sb + k))).sum();
        r | u128::from(sum) << (16 * i)
    });
    cpu.set_vreg(d, v);
    Ok(())
}

/// MOVNTDQA: an aligned 16-byte load (the non-temporal hint is moot).
fn movntdqa(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let v = cpu.read_vmem(ins, 16)?;
    cpu.set_vreg(ins.op0_register(), v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_takes_elements_by_predicate() {
        let a = 0x1111_1111_2222_2222_3333_3333_4444_4444u128;
        let b = 0xaaaa_aaaa_bbbb_bbbb_cccc_cccc_dddd_ddddu128;
        assert_eq!(select(a, b, 4, |i| i % 2 == 0), 0x1111_1111_bbbb_bbbb_3333_3333_dddd_ddddu128);
        assert_eq!(select(a, b, 8, |i| i == 1), 0xaaaa_aaaa_bbbb_bbbb_3333_3333_4444_4444u128);
        assert_eq!(select(a, b, 1, |_| false), a);
    }
}
