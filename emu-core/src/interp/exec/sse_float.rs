//! SSE/SSE2/SSE3 floating point: arithmetic, MIN/MAX, SQRT, compares,
//! COMIS*/UCOMIS*, conversions, the horizontal SSE3 forms and the RCP/
//! RSQRT approximations.
//!
//! Values are IEEE binary32/binary64 computed by SoftFloat under
//! MXCSR.RC; around it: DAZ (denormal sources read as signed zeros, no
//! DE), FTZ (with underflow masked a tiny result becomes a signed zero and
//! UE and PE are set), the denormal-operand flag, and the exception
//! priorities of SDM Vol. 1 11.5.2 (a NaN operand, invalid or divide by
//! zero hide DE). Flags of all elements are ORed into MXCSR; when an
//! unmasked exception occurs nothing is written and #XM is raised (#UD
//! when CR4.OSXMMEXCPT=0); with an unmasked invalid, denormal or zero
//! divide only those flags are recorded.
//!
//! RCPPS/RCPSS/RSQRTPS/RSQRTSS: the hardware's table-driven estimates
//! are model-specific; these return the correctly rounded value with the
//! low 11 fraction bits cleared, within the architected relative error of
//! 1.5 * 2^-12.

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::cpu::flags;

use super::super::fault::{vector, Fault, R};
use super::super::Interpreter;
use super::softfp::{self as sp, f32v, f64v, fl, sfc, Ty};
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(
        &[
            M::Addps, M::Addss, M::Addpd, M::Addsd, M::Subps, M::Subss, M::Subpd, M::Subsd, M::Mulps, M::Mulss, M::Mulpd, M::Mulsd,
            M::Divps, M::Divss, M::Divpd, M::Divsd, M::Minps, M::Minss, M::Minpd, M::Minsd, M::Maxps, M::Maxss, M::Maxpd, M::Maxsd,
            M::Sqrtps, M::Sqrtss, M::Sqrtpd, M::Sqrtsd, M::Cmpps, M::Cmpss, M::Cmppd, M::Cmpsd, M::Addsubps, M::Addsubpd, M::Haddps,
            M::Haddpd, M::Hsubps, M::Hsubpd,
        ],
        arith,
    );
    t.set(&[M::Comiss, M::Ucomiss, M::Comisd, M::Ucomisd], comis);
    t.set(
        &[
            M::Cvtsi2ss, M::Cvtsi2sd, M::Cvtss2si, M::Cvttss2si, M::Cvtsd2si, M::Cvttsd2si, M::Cvtss2sd, M::Cvtsd2ss, M::Cvtdq2ps,
            M::Cvtps2dq, M::Cvttps2dq, M::Cvtdq2pd, M::Cvtpd2dq, M::Cvttpd2dq, M::Cvtps2pd, M::Cvtpd2ps, M::Cvtpi2ps, M::Cvtps2pi,
            M::Cvttps2pi, M::Cvtpi2pd, M::Cvtpd2pi, M::Cvttpd2pi,
        ],
        cvt,
    );
    t.set(&[M::Rcpps, M::Rcpss, M::Rsqrtps, M::Rsqrtss], rcp);
}

/// MXCSR fields.
#[derive(Clone, Copy)]
pub(super) struct Mx {
    pub(super) rc: u32,
    pub(super) daz: bool,
    pub(super) ftz: bool,
    pub(super) masks: u32,
}

impl Interpreter {
    pub(super) fn mx(&self) -> Mx {
        let m = self.s.fx.mxcsr;
        Mx { rc: (m >> 13) & 3, daz: m & 0x40 != 0, ftz: m & 0x8000 != 0, masks: (m >> 7) & fl::ALL }
    }

    /// Records the flags of an instruction and says whether its results
    /// may be written; raises #XM (or #UD) for unmasked exceptions.
    pub(super) fn simd_flags(&mut self, f: u32) -> R<()> {
        let mx = self.mx();
        let pre = fl::IE | fl::DE | fl::ZE;
        let unmasked = f & !mx.masks;
        let recorded = if unmasked & pre != 0 { f & pre } else { f };
        self.s.fx.mxcsr |= recorded & fl::ALL;
        if unmasked != 0 {
            const OSXMMEXCPT: u64 = 1 << 10;
            return Err(if self.s.cr4 & OSXMMEXCPT != 0 { Fault::exception(vector::XM) } else { Fault::ud() });
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
    Sqrt,
    Cmp(u8),
}

/// A source after DAZ, and whether it raises DE.
pub(super) fn source(ty: Ty, v: u64, mx: Mx) -> (u64, bool) {
    if ty.is_denormal(v) {
        if mx.daz {
            return (v & ty.sign(), false);
        }
        return (v, true);
    }
    (v, false)
}

/// Applies FTZ and the unmasked-underflow rule to a result.
fn finish(ty: Ty, r: u64, mut f: u32, mx: Mx) -> (u64, u32) {
    let tiny = ty.is_denormal(r) || f & fl::UE != 0;
    if tiny && mx.ftz && mx.masks & fl::UE != 0 {
        return (r & ty.sign(), f | fl::UE | fl::PE);
    }
    if ty.is_denormal(r) && mx.masks & fl::UE == 0 {
        f |= fl::UE;
    }
    (r, f)
}

fn sf_bin(ty: Ty, op: Op, a: u64, b: u64) -> u64 {
    match ty {
        Ty::S => u64::from(
            match op {
                Op::Add => sfc!(f32_add(f32v(a), f32v(b))),
                Op::Sub => sfc!(f32_sub(f32v(a), f32v(b))),
                Op::Mul => sfc!(f32_mul(f32v(a), f32v(b))),
                Op::Div => sfc!(f32_div(f32v(a), f32v(b))),
                _ => sfc!(f32_sqrt(f32v(b))),
            }
            .v,
        ),
        Ty::D => match op {
            Op::Add => sfc!(f64_add(f64v(a), f64v(b))),
            Op::Sub => sfc!(f64_sub(f64v(a), f64v(b))),
            Op::Mul => sfc!(f64_mul(f64v(a), f64v(b))),
            Op::Div => sfc!(f64_div(f64v(a), f64v(b))),
            _ => sfc!(f64_sqrt(f64v(b))),
        }
        .v,
    }
}

/// Quiet compare: (less, equal); unordered is handled by the caller.
fn sf_cmp(ty: Ty, a: u64, b: u64) -> (bool, bool) {
    let (r, _) = sp::with(0, 80, || match ty {
        Ty::S => (sfc!(f32_lt_quiet(f32v(a), f32v(b))), sfc!(f32_eq(f32v(a), f32v(b)))),
        Ty::D => (sfc!(f64_lt_quiet(f64v(a), f64v(b))), sfc!(f64_eq(f64v(a), f64v(b)))),
    });
    r
}

/// One element: `a` is the destination's, `b` the source's.
pub(super) fn lane_op(op: Op, ty: Ty, a: u64, b: u64, mx: Mx) -> (u64, u32) {
    let unary = op == Op::Sqrt;
    let (a, ade) = if unary { (0, false) } else { source(ty, a, mx) };
    let (b, bde) = source(ty, b, mx);
    let nan = (!unary && ty.is_nan(a)) || ty.is_nan(b);
    let de = if (ade || bde) && !nan { fl::DE } else { 0 };
    match op {
        Op::Min | Op::Max => {
            if nan {
                return (b, fl::IE);
            }
            let (lt, eq) = sf_cmp(ty, a, b);
            let take_a = if op == Op::Min { lt } else { !lt && !eq };
            (if take_a { a } else { b }, de)
        }
        Op::Cmp(p) => {
            let snan = (ty.is_snan(a)) || ty.is_snan(b);
            let signalling = matches!(p & 7, 1 | 2 | 5 | 6);
            let ie = if snan || (nan && signalling) { fl::IE } else { 0 };
            let (lt, eq) = if nan { (false, false) } else { sf_cmp(ty, a, b) };
            let t = match p & 7 {
                0 => eq,
                1 => lt,
                2 => lt || eq,
                3 => nan,
                4 => !eq,
                5 => !lt,
                6 => !(lt || eq),
                _ => !nan,
            };
            (if t { ty.mask() } else { 0 }, ie | if ie == 0 { de } else { 0 })
        }
        _ => {
            let (r, f) = sp::with(mx.rc, 80, || sf_bin(ty, op, a, b));
            let f = if f & (fl::IE | fl::ZE) != 0 { f } else { f | de };
            if f & (fl::IE | fl::ZE) != 0 {
                return (r, f);
            }
            finish(ty, r, f, mx)
        }
    }
}

pub(super) fn elem(v: u128, ty: Ty, i: usize) -> u64 {
    (v >> (8 * ty.size() * i)) as u64 & ty.mask()
}

pub(super) fn put(v: u128, ty: Ty, i: usize, x: u64) -> u128 {
    let sh = 8 * ty.size() * i;
    (v & !(u128::from(ty.mask()) << sh)) | u128::from(x & ty.mask()) << sh
}

fn arith(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    if let Some(r) = super::sse::string_cmpsd(cpu, ins) {
        return r;
    }
    cpu.sse_enter()?;
    let m = ins.mnemonic();
    use M::*;
    let ty = match m {
        Addps | Addss | Subps | Subss | Mulps | Mulss | Divps | Divss | Minps | Minss | Maxps | Maxss | Sqrtps | Sqrtss | Cmpps
        | Cmpss | Addsubps | Haddps | Hsubps => Ty::S,
        _ => Ty::D,
    };
    let scalar = matches!(m, Addss | Addsd | Subss | Subsd | Mulss | Mulsd | Divss | Divsd | Minss | Minsd | Maxss | Maxsd | Sqrtss | Sqrtsd | Cmpss | Cmpsd);
    let d = ins.op0_register();
    let a = cpu.vreg(d);
    let b = cpu.read_vop(ins, 1, if scalar { ty.size() } else { 16 })?;
    let mx = cpu.mx();
    let n = if scalar { 1 } else { 16 / ty.size() };
    let mut out = a;
    let mut f = 0;
    let horizontal = matches!(m, Haddps | Haddpd | Hsubps | Hsubpd);
    for i in 0..n {
        let op = match m {
            Addps | Addss | Addpd | Addsd | Haddps | Haddpd => Op::Add,
            Subps | Subss | Subpd | Subsd | Hsubps | Hsubpd => Op::Sub,
            Addsubps | Addsubpd => {
                if i % 2 == 0 {
                    Op::Sub
                } else {
                    Op::Add
                }
            }
            Mulps | Mulss | Mulpd | Mulsd => Op::Mul,
            Divps | Divss | Divpd | Divsd => Op::Div,
            Minps | Minss | Minpd | Minsd => Op::Min,
            Maxps | Maxss | Maxpd | Maxsd => Op::Max,
            Sqrtps | Sqrtss | Sqrtpd | Sqrtsd => Op::Sqrt,
            _ => Op::Cmp(ins.immediate8()),
        };
        let (x, y) = if horizontal {
            // Pairs of the destination, then of the source.
            let src = if i < n / 2 { a } else { b };
            let j = 2 * (i % (n / 2));
            (elem(src, ty, j), elem(src, ty, j + 1))
        } else {
            (elem(a, ty, i), elem(b, ty, i))
        };
        let (r, lf) = lane_op(op, ty, x, y, mx);
        out = put(out, ty, i, r);
        f |= lf;
    }
    cpu.simd_flags(f)?;
    cpu.set_vreg(d, out);
    Ok(())
}

fn comis(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let ty = if matches!(ins.mnemonic(), M::Comiss | M::Ucomiss) { Ty::S } else { Ty::D };
    let quiet = matches!(ins.mnemonic(), M::Ucomiss | M::Ucomisd);
    let mx = cpu.mx();
    let (a, ade) = source(ty, elem(cpu.vreg(ins.op0_register()), ty, 0), mx);
    let (b, bde) = source(ty, elem(cpu.read_vop(ins, 1, ty.size())?, ty, 0), mx);
    let nan = ty.is_nan(a) || ty.is_nan(b);
    let f = if nan {
        if !quiet || ty.is_snan(a) || ty.is_snan(b) {
            fl::IE
        } else {
            0
        }
    } else if ade || bde {
        fl::DE
    } else {
        0
    };
    cpu.simd_flags(f)?;
    let r = if nan {
        flags::ZF | flags::PF | flags::CF
    } else {
        match sf_cmp(ty, a, b) {
            (_, true) => flags::ZF,
            (true, _) => flags::CF,
            _ => 0,
        }
    };
    let cur = cpu.s.flags() & !flags::ARITH;
    cpu.s.set_flags(cur | r);
    Ok(())
}

/// Float to integer: `size` 4 or 8 bytes, truncating or under MXCSR.RC;
/// invalid gives the integer indefinite. DAZ applies; no DE is raised.
fn to_int(ty: Ty, v: u64, size: usize, trunc: bool, mx: Mx) -> (u64, u32) {
    let (v, _) = source(ty, v, mx);
    let rc = if trunc { sp::RC_ZERO } else { mx.rc };
    let mode = sp::sf_mode(rc);
    let (r, f) = sp::with(rc, 80, || match (ty, size) {
        (Ty::S, 4) => sfc!(f32_to_i32(f32v(v), mode, true)) as u32 as u64,
        (Ty::S, _) => sfc!(f32_to_i64(f32v(v), mode, true)) as u64,
        (Ty::D, 4) => sfc!(f64_to_i32(f64v(v), mode, true)) as u32 as u64,
        (Ty::D, _) => sfc!(f64_to_i64(f64v(v), mode, true)) as u64,
    });
    (r, f)
}

/// Integer (sign-extended from `size` bytes) to float, under MXCSR.RC.
fn from_int(ty: Ty, v: u64, size: usize, mx: Mx) -> (u64, u32) {
    let i = if size == 4 { i64::from(v as u32 as i32) } else { v as i64 };
    sp::with(mx.rc, 80, || match ty {
        Ty::S => u64::from(sfc!(i64_to_f32(i)).v),
        Ty::D => sfc!(i64_to_f64(i)).v,
    })
}

/// Float to float.
fn convert(from: Ty, to: Ty, v: u64, mx: Mx) -> (u64, u32) {
    let (v, de) = source(from, v, mx);
    let (r, f) = sp::with(mx.rc, 80, || match from {
        Ty::S => sfc!(f32_to_f64(f32v(v))).v,
        Ty::D => u64::from(sfc!(f64_to_f32(f64v(v))).v),
    });
    let f = if de && !from.is_nan(v) { f | fl::DE } else { f };
    if f & fl::IE != 0 {
        return (r, f);
    }
    finish(to, r, f, mx)
}

fn cvt(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    use M::*;
    let m = ins.mnemonic();
    cpu.simd_enter(ins)?;
    let mx = cpu.mx();
    let d = ins.op0_register();
    let (s_ty, d_ty) = match m {
        Cvtss2si | Cvttss2si | Cvtss2sd | Cvtps2dq | Cvttps2dq | Cvtps2pd | Cvtps2pi | Cvttps2pi => (Ty::S, Ty::D),
        Cvtsd2si | Cvttsd2si | Cvtsd2ss | Cvtpd2dq | Cvttpd2dq | Cvtpd2ps | Cvtpd2pi | Cvttpd2pi => (Ty::D, Ty::S),
        Cvtsi2ss | Cvtdq2ps | Cvtpi2ps => (Ty::S, Ty::S),
        _ => (Ty::D, Ty::D),
    };
    // Source bytes read.
    let src_size = match m {
        Cvtsi2ss | Cvtsi2sd => ins.op1_register().size().max(if ins.op1_kind() == OpKind::Memory { ins.memory_size().size() } else { 0 }),
        Cvtss2si | Cvttss2si | Cvtss2sd => 4,
        Cvtsd2si | Cvttsd2si | Cvtsd2ss => 8,
        Cvtdq2pd | Cvtps2pd | Cvtpi2ps | Cvtpi2pd | Cvtps2pi | Cvttps2pi => 8,
        _ => 16,
    };
    let src = cpu.read_vop(ins, 1, src_size)?;
    let a = cpu.vreg(d);
    let trunc = matches!(m, Cvttss2si | Cvttsd2si | Cvttps2dq | Cvttpd2dq | Cvttps2pi | Cvttpd2pi);
    let mut f = 0;
    let mut acc = |(v, lf): (u64, u32)| {
        f |= lf;
        v
    };
    let out: u128 = match m {
        Cvtsi2ss => put(a, Ty::S, 0, acc(from_int(Ty::S, src as u64, src_size, mx))),
        Cvtsi2sd => put(a, Ty::D, 0, acc(from_int(Ty::D, src as u64, src_size, mx))),
        Cvtss2si | Cvttss2si | Cvtsd2si | Cvttsd2si => {
            let size = d.size();
            u128::from(acc(to_int(s_ty, elem(src, s_ty, 0), size, trunc, mx)))
        }
        Cvtss2sd => put(a, Ty::D, 0, acc(convert(Ty::S, Ty::D, elem(src, Ty::S, 0), mx))),
        Cvtsd2ss => put(a, Ty::S, 0, acc(convert(Ty::D, Ty::S, elem(src, Ty::D, 0), mx))),
        Cvtdq2ps => (0..4).fold(0, |r, i| put(r, Ty::S, i, acc(from_int(Ty::S, elem(src, Ty::S, i), 4, mx)))),
        Cvtpi2ps => (0..2).fold(a, |r, i| put(r, Ty::S, i, acc(from_int(Ty::S, elem(src, Ty::S, i), 4, mx)))),
        Cvtdq2pd | Cvtpi2pd => (0..2).fold(0, |r, i| put(r, Ty::D, i, acc(from_int(Ty::D, elem(src, Ty::S, i), 4, mx)))),
        Cvtps2dq | Cvttps2dq => (0..4).fold(0, |r, i| put(r, Ty::S, i, acc(to_int(Ty::S, elem(src, Ty::S, i), 4, trunc, mx)))),
        Cvtps2pi | Cvttps2pi => (0..2).fold(0, |r, i| put(r, Ty::S, i, acc(to_int(Ty::S, elem(src, Ty::S, i), 4, trunc, mx)))),
        Cvtpd2dq | Cvttpd2dq | Cvtpd2pi | Cvttpd2pi => {
            (0..2).fold(0, |r, i| put(r, Ty::S, i, acc(to_int(Ty::D, elem(src, Ty::D, i), 4, trunc, mx))))
        }
        Cvtps2pd => (0..2).fold(0, |r, i| put(r, Ty::D, i, acc(convert(Ty::S, Ty::D, elem(src, Ty::S, i), mx)))),
        _ => (0..2).fold(0, |r, i| put(r, Ty::S, i, acc(convert(Ty::D, Ty::S, elem(src, Ty::D, i), mx)))),
    };
    let _ = d_ty;
    cpu.simd_flags(f)?;
    cpu.set_vreg(d, out);
    Ok(())
}

/// The reciprocal (square root) estimate of a binary32.
fn estimate(v: u64, sqrt: bool) -> u64 {
    let ty = Ty::S;
    let sign = v & ty.sign();
    if ty.is_nan(v) {
        return v | ty.quiet();
    }
    if sqrt && sign != 0 && !ty.is_zero(v) && !ty.is_denormal(v) {
        return ty.indefinite();
    }
    if ty.is_zero(v) || ty.is_denormal(v) {
        return sign | 0x7f80_0000;
    }
    if v & 0x7fff_ffff == 0x7f80_0000 {
        return sign;
    }
    let one = u64::from(1f32.to_bits());
    let (r, _) = sp::with(0, 80, || {
        if sqrt {
            let s = sfc!(f32_sqrt(f32v(v)));
            u64::from(sfc!(f32_div(f32v(one), s)).v)
        } else {
            u64::from(sfc!(f32_div(f32v(one), f32v(v))).v)
        }
    });
    if ty.is_denormal(r) {
        return sign;
    }
    r & !0x7ff
}

fn rcp(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let scalar = matches!(ins.mnemonic(), M::Rcpss | M::Rsqrtss);
    let sqrt = matches!(ins.mnemonic(), M::Rsqrtps | M::Rsqrtss);
    let d = ins.op0_register();
    let src = cpu.read_vop(ins, 1, if scalar { 4 } else { 16 })?;
    let n = if scalar { 1 } else { 4 };
    let out = (0..n).fold(cpu.vreg(d), |r, i| put(r, Ty::S, i, estimate(elem(src, Ty::S, i), sqrt)));
    cpu.set_vreg(d, out);
    Ok(())
}
