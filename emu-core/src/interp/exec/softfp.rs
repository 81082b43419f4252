//! Glue to the soft-float library shared by the x87 and SSE families:
//! Berkeley SoftFloat 3e through the `softfloat-rs` bindings, built with
//! its 8086-SSE specialisation (x86 NaN propagation, the negative
//! "indefinite" default NaN, tininess detected after rounding, integer
//! indefinite on invalid conversions). Its rounding mode, flags and the
//! 80-bit rounding precision are thread-local C variables: every
//! operation sets them, runs, and reads the flags back, so CPUs on
//! different threads never mix state.
//!
//! What SoftFloat does not model is done around it here: the denormal
//! operand flag, DAZ/FTZ, x87 unsupported encodings and the C1
//! round-up bit.

use softfloat_rs as sf;

pub(crate) use sf::extFloat80_t as F80;
pub(crate) use sf::{float32_t as F32, float64_t as F64};

/// Exception flags, in the common FSW/MXCSR layout.
pub(crate) mod fl {
    /// Invalid operation.
    pub const IE: u32 = 1;
    /// Denormal operand.
    pub const DE: u32 = 2;
    /// Divide by zero.
    pub const ZE: u32 = 4;
    /// Overflow.
    pub const OE: u32 = 8;
    /// Underflow.
    pub const UE: u32 = 0x10;
    /// Precision (inexact).
    pub const PE: u32 = 0x20;
    /// All six.
    pub const ALL: u32 = 0x3f;
}

/// x86 rounding control (FCW.RC / MXCSR.RC): nearest, down, up, zero.
pub(crate) const RC_NEAREST: u32 = 0;
/// Round toward minus infinity.
pub(crate) const RC_DOWN: u32 = 1;
/// Round toward plus infinity.
pub(crate) const RC_UP: u32 = 2;
/// Round toward zero.
pub(crate) const RC_ZERO: u32 = 3;

/// SoftFloat's rounding mode for an x86 RC field.
pub(crate) fn sf_mode(rc: u32) -> u8 {
    match rc & 3 {
        RC_NEAREST => sf::softfloat_round_near_even,
        RC_DOWN => sf::softfloat_round_min,
        RC_UP => sf::softfloat_round_max,
        _ => sf::softfloat_round_minMag,
    }
}

fn x86_flags(f: u8) -> u32 {
    let mut r = 0;
    if f & sf::softfloat_flag_invalid != 0 {
        r |= fl::IE;
    }
    if f & sf::softfloat_flag_infinite != 0 {
        r |= fl::ZE;
    }
    if f & sf::softfloat_flag_overflow != 0 {
        r |= fl::OE;
    }
    if f & sf::softfloat_flag_underflow != 0 {
        r |= fl::UE;
    }
    if f & sf::softfloat_flag_inexact != 0 {
        r |= fl::PE;
    }
    r
}

/// Runs `f` under rounding control `rc` and 80-bit rounding precision
/// `pc` (32, 64 or 80 bits) and returns its value with the x86 flags it
/// raised. `f` calls SoftFloat functions only.
pub(crate) fn with<T>(rc: u32, pc: u8, f: impl FnOnce() -> T) -> (T, u32) {
    // SAFETY: the helpers only read or write SoftFloat's thread-local
    // mode and flag variables.
    unsafe {
        sf::softfloat_roundingMode_write_helper(sf_mode(rc));
        sf::extF80_roundingPrecision_write_helper(pc);
        sf::softfloat_detectTininess_write_helper(sf::softfloat_tininess_afterRounding);
        sf::softfloat_exceptionFlags_write_helper(0);
    }
    let v = f();
    // SAFETY: as above.
    let flags = unsafe { sf::softfloat_exceptionFlags_read_helper() };
    (v, x86_flags(flags))
}

/// Calls into SoftFloat. Every SoftFloat function is a pure function of
/// its arguments and the thread-local mode, safe to call at any time.
macro_rules! sfc {
    ($f:ident($($a:expr),*)) => {{
        // SAFETY: SoftFloat functions take and return plain values and
        // touch only their thread-local mode and flag variables.
        #[allow(unused_unsafe)]
        unsafe { softfloat_rs::$f($($a),*) }
    }};
}
pub(crate) use sfc;

// ---------------------------------------------------------------------
// 80-bit values.

/// An 80-bit value from its sign/exponent and significand.
pub(crate) fn f80(se: u16, sig: u64) -> F80 {
    F80 { signif: sig, signExp: se }
}

/// The QNaN floating-point indefinite.
pub(crate) const INDEFINITE: F80 = F80 { signif: 0xc000_0000_0000_0000, signExp: 0xffff };

/// Reads an 80-bit value from the first ten bytes of a register slot.
pub(crate) fn f80_from_bytes(b: &[u8]) -> F80 {
    let mut s = [0u8; 8];
    s.copy_from_slice(&b[0..8]);
    f80(u16::from_le_bytes([b[8], b[9]]), u64::from_le_bytes(s))
}

/// Writes an 80-bit value into the first ten bytes of a register slot.
pub(crate) fn f80_to_bytes(v: F80, b: &mut [u8]) {
    b[0..8].copy_from_slice(&v.signif.to_le_bytes());
    b[8..10].copy_from_slice(&v.signExp.to_le_bytes());
}

/// The biased exponent.
pub(crate) fn exp80(v: F80) -> u16 {
    v.signExp & 0x7fff
}

/// The sign bit.
pub(crate) fn sign80(v: F80) -> bool {
    v.signExp & 0x8000 != 0
}

/// Same bits (SoftFloat's struct has no `PartialEq`).
pub(crate) fn eq80(a: F80, b: F80) -> bool {
    a.signExp == b.signExp && a.signif == b.signif
}

/// Any NaN, pseudo-NaNs included.
pub(crate) fn is_nan80(v: F80) -> bool {
    exp80(v) == 0x7fff && v.signif << 1 != 0
}

/// A signalling NaN (integer bit set, quiet bit clear).
pub(crate) fn is_snan80(v: F80) -> bool {
    is_nan80(v) && v.signif >> 62 == 0b10
}

/// An infinity.
pub(crate) fn is_inf80(v: F80) -> bool {
    exp80(v) == 0x7fff && v.signif == 1 << 63
}

/// A zero.
pub(crate) fn is_zero80(v: F80) -> bool {
    exp80(v) == 0 && v.signif == 0
}

/// A denormal or pseudo-denormal.
pub(crate) fn is_denormal80(v: F80) -> bool {
    exp80(v) == 0 && v.signif != 0
}

/// An encoding the 387 and later reject: pseudo-NaN, pseudo-infinity,
/// unnormal (non-zero exponent with the integer bit clear).
pub(crate) fn is_unsupported80(v: F80) -> bool {
    exp80(v) != 0 && v.signif >> 63 == 0
}

/// A pseudo-denormal (exponent 0, integer bit set) rewritten with
/// exponent 1, the same value, which SoftFloat compares and computes
/// correctly.
pub(crate) fn canon80(v: F80) -> F80 {
    if exp80(v) == 0 && v.signif >> 63 == 1 {
        f80(v.signExp | 1, v.signif)
    } else {
        v
    }
}

/// The value with its sign flipped.
pub(crate) fn neg80(v: F80) -> F80 {
    f80(v.signExp ^ 0x8000, v.signif)
}

/// Signed zero or infinity.
pub(crate) fn zero80(neg: bool) -> F80 {
    f80(if neg { 0x8000 } else { 0 }, 0)
}

/// Signed infinity.
pub(crate) fn inf80(neg: bool) -> F80 {
    f80(if neg { 0xffff } else { 0x7fff }, 1 << 63)
}

/// +1.0.
pub(crate) const ONE80: F80 = F80 { signif: 1 << 63, signExp: 0x3fff };

/// Builds the 80-bit value `(-1)^neg * m * 2^e` exactly, for a
/// non-zero `m`, when it is representable (normal or denormal); for the
/// callers that know it is (remainders, scaling within range).
pub(crate) fn exact80(neg: bool, m: u128, e: i32) -> F80 {
    if m == 0 {
        return zero80(neg);
    }
    let lz = m.leading_zeros() as i32;
    // Normalise to a 64-bit significand with the integer bit set.
    let top = 127 - lz; // bit index of the leading one
    let mut exp = e + top + 16383; // biased exponent of the value
    let sig: u64 = if top >= 63 { (m >> (top - 63)) as u64 } else { (m << (63 - top)) as u64 };
    let s = if neg { 0x8000 } else { 0 };
    if exp <= 0 {
        // Denormal: shift right so the exponent field reads 0 (which
        // means 2^-16382 with the integer bit clear).
        let shift = 1 - exp;
        let sig = if shift >= 64 { 0 } else { sig >> shift };
        exp = 0;
        return f80(s | exp as u16, sig);
    }
    f80(s | exp as u16, sig)
}

/// Splits a finite non-zero 80-bit value into significand and unbiased
/// exponent of its integer bit (`v = sig * 2^(e - 63)`), normalising
/// denormals.
pub(crate) fn unpack80(v: F80) -> (u64, i32) {
    let mut e = i32::from(exp80(v)).max(1) - 16383;
    let mut sig = v.signif;
    let lz = sig.leading_zeros() as i32;
    sig <<= lz;
    e -= lz;
    (sig, e)
}

// ---------------------------------------------------------------------
// 32- and 64-bit values.

/// Bit-level classification of binary32/binary64 values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    /// binary32.
    S,
    /// binary64.
    D,
}

impl Ty {
    /// Bytes per value.
    pub(crate) fn size(self) -> usize {
        match self {
            Ty::S => 4,
            Ty::D => 8,
        }
    }
    fn exp_mask(self) -> u64 {
        match self {
            Ty::S => 0x7f80_0000,
            Ty::D => 0x7ff0_0000_0000_0000,
        }
    }
    fn frac_mask(self) -> u64 {
        match self {
            Ty::S => 0x007f_ffff,
            Ty::D => 0x000f_ffff_ffff_ffff,
        }
    }
    /// The sign bit.
    pub(crate) fn sign(self) -> u64 {
        match self {
            Ty::S => 0x8000_0000,
            Ty::D => 1 << 63,
        }
    }
    /// The quiet bit.
    pub(crate) fn quiet(self) -> u64 {
        match self {
            Ty::S => 0x0040_0000,
            Ty::D => 1 << 51,
        }
    }
    /// A NaN.
    pub(crate) fn is_nan(self, v: u64) -> bool {
        v & self.exp_mask() == self.exp_mask() && v & self.frac_mask() != 0
    }
    /// A signalling NaN.
    pub(crate) fn is_snan(self, v: u64) -> bool {
        self.is_nan(v) && v & self.quiet() == 0
    }
    /// A denormal.
    pub(crate) fn is_denormal(self, v: u64) -> bool {
        v & self.exp_mask() == 0 && v & self.frac_mask() != 0
    }
    /// A zero of either sign.
    pub(crate) fn is_zero(self, v: u64) -> bool {
        v & !self.sign() == 0
    }
    /// The default (indefinite) QNaN.
    pub(crate) fn indefinite(self) -> u64 {
        match self {
            Ty::S => 0xffc0_0000,
            Ty::D => 0xfff8_0000_0000_0000,
        }
    }
    /// Mask of a value's bits.
    pub(crate) fn mask(self) -> u64 {
        match self {
            Ty::S => 0xffff_ffff,
            Ty::D => u64::MAX,
        }
    }
}

/// SoftFloat binary32 from bits.
pub(crate) fn f32v(v: u64) -> F32 {
    F32 { v: v as u32 }
}

/// SoftFloat binary64 from bits.
pub(crate) fn f64v(v: u64) -> F64 {
    F64 { v }
}

/// Converts a binary32 or binary64 to 80 bits (exact; SNaN raises IE).
pub(crate) fn to80(ty: Ty, v: u64) -> F80 {
    match ty {
        Ty::S => sfc!(f32_to_extF80(f32v(v))),
        Ty::D => sfc!(f64_to_extF80(f64v(v))),
    }
}

/// Rounds an 80-bit value to binary32 or binary64 under the current mode.
pub(crate) fn from80(ty: Ty, v: F80) -> u64 {
    match ty {
        Ty::S => u64::from(sfc!(extF80_to_f32(v)).v),
        Ty::D => sfc!(extF80_to_f64(v)).v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softfloat_links_and_rounds() {
        // 1/3 in binary64 rounds down under nearest, up under +inf.
        let (v, f) = with(RC_NEAREST, 80, || sfc!(f64_div(f64v(1f64.to_bits()), f64v(3f64.to_bits()))).v);
        assert_eq!(f64::from_bits(v), 1.0 / 3.0);
        assert_eq!(f, fl::PE);
        let (up, _) = with(RC_UP, 80, || sfc!(f64_div(f64v(1f64.to_bits()), f64v(3f64.to_bits()))).v);
        assert_eq!(up, v + 1);
        // 80-bit: 1/3 at 24-bit precision is the binary32 value.
        let one = ONE80;
        let three = sfc!(i32_to_extF80(3));
        let (t, _) = with(RC_NEAREST, 32, || sfc!(extF80_div(one, three)));
        assert_eq!(t.signif, u64::from((1f32 / 3.0).to_bits() & 0x7f_ffff | 0x80_0000) << 40);
        assert!(eq80(exact80(false, 3, 0), three));
        assert_eq!(unpack80(three), (0xc000_0000_0000_0000, 1));
        assert!(eq80(exact80(true, 1, -16445), f80(0x8000, 1)));
    }
}
