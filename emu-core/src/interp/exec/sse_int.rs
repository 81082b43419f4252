//! The integer SIMD instructions of MMX, SSE and SSE2, on MMX registers
//! (64-bit vectors) or XMM registers (128-bit), chosen by the operands.
//! PEXTRW, which SSE4.1 extends, is in `sse41`.

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use super::super::fault::R;
use super::super::Interpreter;
use super::sse::{trunc, width};
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(
        &[
            M::Paddb, M::Paddw, M::Paddd, M::Paddq, M::Paddsb, M::Paddsw, M::Paddusb, M::Paddusw, M::Psubb, M::Psubw, M::Psubd, M::Psubq,
            M::Psubsb, M::Psubsw, M::Psubusb, M::Psubusw, M::Pmullw, M::Pmulhw, M::Pmulhuw, M::Pmuludq, M::Pmaddwd, M::Pand, M::Pandn,
            M::Por, M::Pxor, M::Pcmpeqb, M::Pcmpeqw, M::Pcmpeqd, M::Pcmpgtb, M::Pcmpgtw, M::Pcmpgtd, M::Pavgb, M::Pavgw, M::Pminub,
            M::Pminsw, M::Pmaxub, M::Pmaxsw, M::Psadbw, M::Packsswb, M::Packssdw, M::Packuswb, M::Punpcklbw, M::Punpcklwd, M::Punpckldq,
            M::Punpcklqdq, M::Punpckhbw, M::Punpckhwd, M::Punpckhdq, M::Punpckhqdq,
        ],
        binary,
    );
    t.set(&[M::Psllw, M::Pslld, M::Psllq, M::Psrlw, M::Psrld, M::Psrlq, M::Psraw, M::Psrad], shift);
    t.set(&[M::Pslldq, M::Psrldq], shift_bytes);
    t.set(&[M::Pshufd, M::Pshuflw, M::Pshufhw, M::Pshufw], pshuf);
    t.set(&[M::Pinsrw], pinsrw);
}

/// Lane `i` of `w` bytes, zero-extended.
pub(super) fn lane(v: u128, w: usize, i: usize) -> u64 {
    (trunc(v >> (8 * w * i), w)) as u64
}

/// Sign-extends a `w`-byte lane.
pub(super) fn sx(x: u64, w: usize) -> i64 {
    let s = 64 - 8 * w as u32;
    ((x << s) as i64) >> s
}

/// Applies `f` lane by lane over `n` bytes of `a` and `b`.
pub(super) fn map2(a: u128, b: u128, n: usize, w: usize, f: impl Fn(u64, u64) -> u64) -> u128 {
    let mut r = 0u128;
    for i in 0..n / w {
        r |= trunc(u128::from(f(lane(a, w, i), lane(b, w, i))), w) << (8 * w * i);
    }
    r
}

pub(super) fn sat_s(v: i64, w: usize) -> u64 {
    let max = (1i64 << (8 * w - 1)) - 1;
    v.clamp(-max - 1, max) as u64
}

pub(super) fn sat_u(v: i64, w: usize) -> u64 {
    let max = (1i64 << (8 * w)) - 1;
    v.clamp(0, max) as u64
}

/// Interleaves the low (or high) halves of `a` and `b` in `w`-byte lanes.
fn unpack(a: u128, b: u128, n: usize, w: usize, high: bool) -> u128 {
    let half = n / w / 2;
    let base = if high { half } else { 0 };
    let mut r = 0u128;
    for i in 0..half {
        r |= u128::from(lane(a, w, base + i)) << (8 * w * 2 * i);
        r |= u128::from(lane(b, w, base + i)) << (8 * w * (2 * i + 1));
    }
    r
}

/// Packs the `w`-byte lanes of `a` then `b` into `w/2`-byte lanes.
pub(super) fn pack(a: u128, b: u128, n: usize, w: usize, sat: impl Fn(i64) -> u64) -> u128 {
    let lanes = n / w;
    let mut r = 0u128;
    for i in 0..lanes {
        r |= trunc(u128::from(sat(sx(lane(a, w, i), w))), w / 2) << (8 * (w / 2) * i);
        r |= trunc(u128::from(sat(sx(lane(b, w, i), w))), w / 2) << (8 * (w / 2) * (i + lanes));
    }
    r
}

fn binary(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.simd_enter(ins)?;
    let d = ins.op0_register();
    let n = width(d);
    let a = cpu.vreg(d);
    let b = trunc(cpu.read_vop(ins, 1, n)?, n);
    let cmp = |c: bool| if c { u64::MAX } else { 0 };
    let v = match ins.mnemonic() {
        M::Paddb => map2(a, b, n, 1, u64::wrapping_add),
        M::Paddw => map2(a, b, n, 2, u64::wrapping_add),
        M::Paddd => map2(a, b, n, 4, u64::wrapping_add),
        M::Paddq => map2(a, b, n, 8, u64::wrapping_add),
        M::Psubb => map2(a, b, n, 1, u64::wrapping_sub),
        M::Psubw => map2(a, b, n, 2, u64::wrapping_sub),
        M::Psubd => map2(a, b, n, 4, u64::wrapping_sub),
        M::Psubq => map2(a, b, n, 8, u64::wrapping_sub),
        M::Paddsb => map2(a, b, n, 1, |x, y| sat_s(sx(x, 1) + sx(y, 1), 1)),
        M::Paddsw => map2(a, b, n, 2, |x, y| sat_s(sx(x, 2) + sx(y, 2), 2)),
        M::Psubsb => map2(a, b, n, 1, |x, y| sat_s(sx(x, 1) - sx(y, 1), 1)),
        M::Psubsw => map2(a, b, n, 2, |x, y| sat_s(sx(x, 2) - sx(y, 2), 2)),
        M::Paddusb => map2(a, b, n, 1, |x, y| sat_u(x as i64 + y as i64, 1)),
        M::Paddusw => map2(a, b, n, 2, |x, y| sat_u(x as i64 + y as i64, 2)),
        M::Psubusb => map2(a, b, n, 1, |x, y| sat_u(x as i64 - y as i64, 1)),
        M::Psubusw => map2(a, b, n, 2, |x, y| sat_u(x as i64 - y as i64, 2)),
        M::Pmullw => map2(a, b, n, 2, |x, y| (sx(x, 2) * sx(y, 2)) as u64),
        M::Pmulhw => map2(a, b, n, 2, |x, y| ((sx(x, 2) * sx(y, 2)) >> 16) as u64),
        M::Pmulhuw => map2(a, b, n, 2, |x, y| (x * y) >> 16),
        M::Pmuludq => map2(a, b, n, 8, |x, y| (x & 0xffff_ffff) * (y & 0xffff_ffff)),
        M::Pmaddwd => map2(a, b, n, 4, |x, y| {
            let p = |s: u32| sx(x >> s & 0xffff, 2) * sx(y >> s & 0xffff, 2);
            (p(0) + p(16)) as u64
        }),
        M::Pand => a & b,
        M::Pandn => !a & b,
        M::Por => a | b,
        M::Pxor => a ^ b,
        M::Pcmpeqb => map2(a, b, n, 1, |x, y| cmp(x == y)),
        M::Pcmpeqw => map2(a, b, n, 2, |x, y| cmp(x == y)),
        M::Pcmpeqd => map2(a, b, n, 4, |x, y| cmp(x == y)),
        M::Pcmpgtb => map2(a, b, n, 1, |x, y| cmp(sx(x, 1) > sx(y, 1))),
        M::Pcmpgtw => map2(a, b, n, 2, |x, y| cmp(sx(x, 2) > sx(y, 2))),
        M::Pcmpgtd => map2(a, b, n, 4, |x, y| cmp(sx(x, 4) > sx(y, 4))),
        M::Pavgb => map2(a, b, n, 1, |x, y| (x + y + 1) >> 1),
        M::Pavgw => map2(a, b, n, 2, |x, y| (x + y + 1) >> 1),
        M::Pminub => map2(a, b, n, 1, u64::min),
        M::Pmaxub => map2(a, b, n, 1, u64::max),
        M::Pminsw => map2(a, b, n, 2, |x, y| if sx(x, 2) < sx(y, 2) { x } else { y }),
        M::Pmaxsw => map2(a, b, n, 2, |x, y| if sx(x, 2) > sx(y, 2) { x } else { y }),
        M::Psadbw => map2(a, b, n, 8, |x, y| (0..8).map(|i| ((x >> (8 * i)) & 0xff).abs_diff((y >> (8 * i)) & 0xff)).sum()),
        M::Packsswb => pack(a, b, n, 2, |v| sat_s(v, 1)),
        M::Packssdw => pack(a, b, n, 4, |v| sat_s(v, 2)),
        M::Packuswb => pack(a, b, n, 2, |v| sat_u(v, 1)),
        M::Punpcklbw => unpack(a, b, n, 1, false),
        M::Punpcklwd => unpack(a, b, n, 2, false),
        M::Punpckldq => unpack(a, b, n, 4, false),
        M::Punpcklqdq => unpack(a, b, n, 8, false),
        M::Punpckhbw => unpack(a, b, n, 1, true),
        M::Punpckhwd => unpack(a, b, n, 2, true),
        M::Punpckhdq => unpack(a, b, n, 4, true),
        _ => unpack(a, b, n, 8, true),
    };
    cpu.set_vreg(d, v);
    Ok(())
}

fn shift(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.simd_enter(ins)?;
    let d = ins.op0_register();
    let n = width(d);
    let a = cpu.vreg(d);
    // The count: an immediate, or the low 64 bits of the source.
    let count = match ins.op1_kind() {
        OpKind::Immediate8 => u64::from(ins.immediate8()),
        _ => cpu.read_vop(ins, 1, n)? as u64,
    };
    let (w, kind) = match ins.mnemonic() {
        M::Psllw => (2, 0),
        M::Pslld => (4, 0),
        M::Psllq => (8, 0),
        M::Psrlw => (2, 1),
        M::Psrld => (4, 1),
        M::Psrlq => (8, 1),
        M::Psraw => (2, 2),
        _ => (4, 2),
    };
    let bits = 8 * w as u64;
    let v = map2(a, 0, n, w, |x, _| match kind {
        0 if count >= bits => 0,
        0 => x << count,
        1 if count >= bits => 0,
        1 => x >> count,
        _ => (sx(x, w) >> count.min(bits - 1)) as u64,
    });
    cpu.set_vreg(d, v);
    Ok(())
}

fn shift_bytes(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let d = ins.op0_register();
    let a = cpu.vreg(d);
    let c = u32::from(ins.immediate8()).min(16) * 8;
    let v = if c >= 128 {
        0
    } else if ins.mnemonic() == M::Pslldq {
        a << c
    } else {
        a >> c
    };
    cpu.set_vreg(d, v);
    Ok(())
}

fn pshuf(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let m = ins.mnemonic();
    cpu.simd_enter(ins)?;
    let d = ins.op0_register();
    let n = width(d);
    let s = trunc(cpu.read_vop(ins, 1, n)?, n);
    let imm = u64::from(ins.immediate8());
    let sel = |i: usize| ((imm >> (2 * i)) & 3) as usize;
    let v = match m {
        M::Pshufd => (0..4).fold(0u128, |r, i| r | u128::from(lane(s, 4, sel(i))) << (32 * i)),
        M::Pshufw => (0..4).fold(0u128, |r, i| r | u128::from(lane(s, 2, sel(i))) << (16 * i)),
        M::Pshuflw => (0..4).fold(s & !0xffff_ffff_ffff_ffffu128, |r, i| r | u128::from(lane(s, 2, sel(i))) << (16 * i)),
        _ => (0..4).fold(s & 0xffff_ffff_ffff_ffffu128, |r, i| r | u128::from(lane(s, 2, 4 + sel(i))) << (64 + 16 * i)),
    };
    cpu.set_vreg(d, v);
    Ok(())
}

fn pinsrw(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.simd_enter(ins)?;
    let d = ins.op0_register();
    let n = width(d);
    let v = if ins.op1_kind() == OpKind::Memory { cpu.read_vmem(ins, 2)? } else { cpu.vreg(ins.op1_register()) } & 0xffff;
    let i = usize::from(ins.immediate8()) % (n / 2);
    let cur = cpu.vreg(d) & !(0xffffu128 << (16 * i));
    cpu.set_vreg(d, cur | v << (16 * i));
    Ok(())
}
