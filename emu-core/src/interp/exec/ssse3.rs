//! SSSE3: PSHUFB, the horizontal PHADD*/PHSUB*, PMADDUBSW, PMULHRSW,
//! PSIGN*, PABS* and PALIGNR, each on MMX registers (64-bit vectors) or
//! XMM registers (128-bit), chosen by the operands as in `sse_int`.

use iced_x86::{Instruction, Mnemonic as M};

use super::super::fault::R;
use super::super::Interpreter;
use super::sse::{trunc, width};
use super::sse_int::{lane, map2, sat_s, sx};
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(
        &[
            M::Pshufb, M::Phaddw, M::Phaddd, M::Phaddsw, M::Phsubw, M::Phsubd, M::Phsubsw, M::Pmaddubsw, M::Pmulhrsw, M::Psignb,
            M::Psignw, M::Psignd, M::Pabsb, M::Pabsw, M::Pabsd,
        ],
        binary,
    );
    t.set(&[M::Palignr], palignr);
}

/// Byte `i` of `v`.
fn byte(v: u128, i: usize) -> u8 {
    (v >> (8 * i)) as u8
}

/// PSHUFB: each byte of `sel` picks a byte of `a` (index modulo the
/// width), or zero when its top bit is set.
fn pshufb(a: u128, sel: u128, n: usize) -> u128 {
    (0..n).fold(0, |r, i| {
        let s = byte(sel, i);
        let v = if s & 0x80 != 0 { 0 } else { byte(a, usize::from(s) & (n - 1)) };
        r | u128::from(v) << (8 * i)
    })
}

/// The horizontal forms: adjacent `w`-byte pairs of `a` fill the low half
/// of the result, those of `b` the high half; `f(even, odd)`.
fn horizontal(a: u128, b: u128, n: usize, w: usize, f: impl Fn(u64, u64) -> u64) -> u128 {
    let lanes = n / w;
    let half = lanes / 2;
    (0..lanes).fold(0, |r, i| {
        let src = if i < half { a } else { b };
        let j = 2 * (i % half);
        r | trunc(u128::from(f(lane(src, w, j), lane(src, w, j + 1))), w) << (8 * w * i)
    })
}

/// PSIGN: `x` negated, zeroed or kept by the sign of `y`.
fn sign(x: u64, y: u64, w: usize) -> u64 {
    match sx(y, w) {
        v if v < 0 => x.wrapping_neg(),
        0 => 0,
        _ => x,
    }
}

fn binary(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.simd_enter(ins)?;
    let d = ins.op0_register();
    let n = width(d);
    let a = cpu.vreg(d);
    let b = trunc(cpu.read_vop(ins, 1, n)?, n);
    let v = match ins.mnemonic() {
        M::Pshufb => pshufb(a, b, n),
        M::Phaddw => horizontal(a, b, n, 2, u64::wrapping_add),
        M::Phaddd => horizontal(a, b, n, 4, u64::wrapping_add),
        M::Phaddsw => horizontal(a, b, n, 2, |x, y| sat_s(sx(x, 2) + sx(y, 2), 2)),
        M::Phsubw => horizontal(a, b, n, 2, u64::wrapping_sub),
        M::Phsubd => horizontal(a, b, n, 4, u64::wrapping_sub),
        M::Phsubsw => horizontal(a, b, n, 2, |x, y| sat_s(sx(x, 2) - sx(y, 2), 2)),
        // Unsigned bytes of the destination times signed bytes of the
        // source, pairs summed with signed saturation.
        M::Pmaddubsw => map2(a, b, n, 2, |x, y| {
            let p = |s: u32| i64::from((x >> s) as u8) * sx((y >> s) & 0xff, 1);
            sat_s(p(0) + p(8), 2)
        }),
        M::Pmulhrsw => map2(a, b, n, 2, |x, y| ((((sx(x, 2) * sx(y, 2)) >> 14) + 1) >> 1) as u64),
        M::Psignb => map2(a, b, n, 1, |x, y| sign(x, y, 1)),
        M::Psignw => map2(a, b, n, 2, |x, y| sign(x, y, 2)),
        M::Psignd => map2(a, b, n, 4, |x, y| sign(x, y, 4)),
        M::Pabsb => map2(b, 0, n, 1, |x, _| sx(x, 1).unsigned_abs()),
        M::Pabsw => map2(b, 0, n, 2, |x, _| sx(x, 2).unsigned_abs()),
        _ => map2(b, 0, n, 4, |x, _| sx(x, 4).unsigned_abs()),
    };
    cpu.set_vreg(d, v);
    Ok(())
}

/// PALIGNR: the destination:source concatenation shifted right by imm8
/// bytes; shifts of twice the width or more leave zero.
fn palignr(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.simd_enter(ins)?;
    let d = ins.op0_register();
    let n = width(d);
    let a = cpu.vreg(d);
    let b = trunc(cpu.read_vop(ins, 1, n)?, n);
    let shift = usize::from(ins.immediate8());
    let v = (0..n).fold(0u128, |r, i| {
        let k = shift + i;
        let x = if k < n {
            byte(b, k)
        } else if k < 2 * n {
            byte(a, k - n)
        } else {
            0
        };
        r | u128::from(x) << (8 * i)
    });
    cpu.set_vreg(d, v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(b: &[u8]) -> u128 {
        b.iter().enumerate().fold(0, |r, (i, &x)| r | u128::from(x) << (8 * i))
    }

    #[test]
    fn pshufb_selects_and_zeroes() {
        let a = bytes(&(0..16).map(|i| 0x10 + i).collect::<Vec<_>>());
        let sel = bytes(&[15, 0, 0x80, 0x13, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0xff]);
        let r = pshufb(a, sel, 16);
        assert_eq!(byte(r, 0), 0x1f);
        assert_eq!(byte(r, 1), 0x10);
        assert_eq!(byte(r, 2), 0);
        assert_eq!(byte(r, 3), 0x13, "index taken modulo 16");
        assert_eq!(byte(r, 15), 0);
        // MMX: three index bits.
        assert_eq!(pshufb(a, bytes(&[9]), 8) & 0xff, 0x11);
    }

    #[test]
    fn horizontal_pairs_and_saturation() {
        let a = 0x0004_0003_0002_0001u128 | 0x7fff_0001_0000_0000u128 << 64;
        let b = 0x8000_ffff_0000_0005u128;
        let r = horizontal(a, b, 16, 2, u64::wrapping_add);
        assert_eq!(lane(r, 2, 0), 3);
        assert_eq!(lane(r, 2, 1), 7);
        assert_eq!(lane(r, 2, 3), 0x8000, "wraps");
        assert_eq!(lane(r, 2, 4), 5);
        let r = horizontal(a, b, 16, 2, |x, y| sat_s(sx(x, 2) + sx(y, 2), 2));
        assert_eq!(lane(r, 2, 3), 0x7fff, "saturates");
        assert_eq!(lane(r, 2, 5), 0x8000, "-1 + -32768 saturates");
        let r = horizontal(a, b, 8, 2, u64::wrapping_sub);
        assert_eq!(lane(r, 2, 0), 0xffff, "1 - 2");
        assert_eq!(lane(r, 2, 2), 5, "source pairs in the high half");
    }

    #[test]
    fn sign_and_products() {
        assert_eq!(sign(5, 0xff, 1), 5u64.wrapping_neg());
        assert_eq!(sign(5, 0, 1), 0);
        assert_eq!(sign(5, 1, 1), 5);
        let mulhrs = |x: u64, y: u64| map2(u128::from(x), u128::from(y), 8, 2, |x, y| ((((sx(x, 2) * sx(y, 2)) >> 14) + 1) >> 1) as u64);
        assert_eq!(mulhrs(0x8000, 0x8000), 0x8000);
        assert_eq!(mulhrs(0x4000, 0x4000), 0x2000);
    }
}
