//! SSE4.1 floating point: ROUNDPS/PD/SS/SD and the dot products
//! DPPS/DPPD, with MXCSR handled as in `sse_float` (whose element
//! operations they reuse).
//!
//! ROUND*: imm8[1:0] is the rounding mode unless imm8[2] selects
//! MXCSR.RC; imm8[3] suppresses the precision exception. Only an SNaN
//! source signals (invalid); DAZ reads denormals as zeros and DE is
//! never raised.
//!
//! DPPS/DPPD: the products selected by imm8[7:4] (others +0.0), summed
//! pairwise as the SDM's pseudo-code does, each multiply and add an SSE
//! operation of its own with its own rounding and flags; the sum goes to
//! the elements selected by imm8[3:0], +0.0 to the rest.

use iced_x86::{Instruction, Mnemonic as M};

use super::super::fault::R;
use super::super::Interpreter;
use super::softfp::{self as sp, f32v, f64v, fl, sfc, Ty};
use super::sse_float::{elem, lane_op, put, source, Mx, Op};
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Roundps, M::Roundpd, M::Roundss, M::Roundsd], round);
    t.set(&[M::Dpps, M::Dppd], dot);
}

/// Rounds one element to an integral value under `rc`.
fn round_elem(ty: Ty, v: u64, rc: u32, inexact: bool, mx: Mx) -> (u64, u32) {
    let (v, _) = source(ty, v, mx);
    let mode = sp::sf_mode(rc);
    let (r, f) = sp::with(rc, 80, || match ty {
        Ty::S => u64::from(sfc!(f32_roundToInt(f32v(v), mode, true)).v),
        Ty::D => sfc!(f64_roundToInt(f64v(v), mode, true)).v,
    });
    (r, if inexact { f } else { f & !fl::PE })
}

fn round(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let m = ins.mnemonic();
    let ty = if matches!(m, M::Roundps | M::Roundss) { Ty::S } else { Ty::D };
    let scalar = matches!(m, M::Roundss | M::Roundsd);
    let d = ins.op0_register();
    let src = cpu.read_vop(ins, 1, if scalar { ty.size() } else { 16 })?;
    let imm = u32::from(ins.immediate8());
    let mx = cpu.mx();
    let rc = if imm & 4 != 0 { mx.rc } else { imm & 3 };
    let n = if scalar { 1 } else { 16 / ty.size() };
    let mut out = cpu.vreg(d);
    let mut f = 0;
    for i in 0..n {
        let (r, lf) = round_elem(ty, elem(src, ty, i), rc, imm & 8 == 0, mx);
        out = put(out, ty, i, r);
        f |= lf;
    }
    cpu.simd_flags(f)?;
    cpu.set_vreg(d, out);
    Ok(())
}

fn dot(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let ty = if ins.mnemonic() == M::Dpps { Ty::S } else { Ty::D };
    let n = 16 / ty.size();
    let d = ins.op0_register();
    let a = cpu.vreg(d);
    let b = cpu.read_vop(ins, 1, 16)?;
    let imm = u32::from(ins.immediate8());
    let mx = cpu.mx();
    let mut f = 0;
    let mut op = |x: Op, p: u64, q: u64| {
        let (r, lf) = lane_op(x, ty, p, q, mx);
        f |= lf;
        r
    };
    let mut prod = [0u64; 4];
    for (i, p) in prod.iter_mut().enumerate().take(n) {
        if imm & (0x10 << i) != 0 {
            *p = op(Op::Mul, elem(a, ty, i), elem(b, ty, i));
        }
    }
    let sum = if n == 4 {
        let lo = op(Op::Add, prod[0], prod[1]);
        let hi = op(Op::Add, prod[2], prod[3]);
        op(Op::Add, lo, hi)
    } else {
        op(Op::Add, prod[0], prod[1])
    };
    let out = (0..n).fold(0u128, |r, i| put(r, ty, i, if imm & (1 << i) != 0 { sum } else { 0 }));
    cpu.simd_flags(f)?;
    cpu.set_vreg(d, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MX: Mx = Mx { rc: sp::RC_NEAREST, daz: false, ftz: false, masks: fl::ALL };

    fn r32(x: f32, rc: u32) -> (f32, u32) {
        let (v, f) = round_elem(Ty::S, u64::from(x.to_bits()), rc, true, MX);
        (f32::from_bits(v as u32), f)
    }

    #[test]
    fn rounding_modes_and_flags() {
        assert_eq!(r32(2.5, sp::RC_NEAREST), (2.0, fl::PE));
        assert_eq!(r32(-2.5, sp::RC_DOWN), (-3.0, fl::PE));
        assert_eq!(r32(2.1, sp::RC_UP), (3.0, fl::PE));
        assert_eq!(r32(-2.9, sp::RC_ZERO), (-2.0, fl::PE));
        assert_eq!(r32(7.0, sp::RC_UP), (7.0, 0));
        // -0.4 rounds to -0.0.
        assert_eq!(r32(-0.4, sp::RC_NEAREST).0.to_bits(), (-0.0f32).to_bits());
        // An SNaN is quieted with IE; PE can be suppressed.
        let (v, f) = round_elem(Ty::D, 0x7ff0_0000_0000_0001, 0, true, MX);
        assert_eq!((v, f), (0x7ff8_0000_0000_0001, fl::IE));
        let (_, f) = round_elem(Ty::D, 1.5f64.to_bits(), 0, false, MX);
        assert_eq!(f, 0);
        // DAZ: a denormal reads as zero, no flags.
        let daz = Mx { daz: true, ..MX };
        assert_eq!(round_elem(Ty::S, 0x8000_0001, sp::RC_DOWN, true, daz), (0x8000_0000, 0));
        assert_eq!(round_elem(Ty::S, 0x8000_0001, sp::RC_DOWN, true, MX), (u64::from((-1f32).to_bits()), fl::PE));
    }
}
