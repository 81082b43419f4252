//! SSE4.2: PCMPGTQ, the string compares PCMPESTRI/PCMPESTRM/PCMPISTRI/
//! PCMPISTRM and CRC32 (POPCNT is in `bits`).
//!
//! The string compares follow SDM Vol. 2B 4.1: imm8[1:0] is the element
//! format (unsigned/signed bytes/words), imm8[3:2] the aggregation (equal
//! any, ranges, equal each, equal ordered), imm8[5:4] the polarity,
//! imm8[6] the index (least/most significant bit) or mask (bits/expanded
//! elements) form. The first operand is the set, range list or needle;
//! the second the string searched. Lengths are explicit (|EAX|, |EDX|,
//! or RAX/RDX with REX.W, saturated to the element count) or implicit
//! (up to the first zero element). Flags: CF = result non-zero, ZF/SF =
//! the second/first operand is shorter than a full register, OF = result
//! bit 0, AF = PF = 0. Their memory operand need not be aligned.

use iced_x86::{Instruction, Mnemonic as M, Register};

use crate::cpu::{flags, reg};

use super::super::fault::R;
use super::super::Interpreter;
use super::sse_int::{lane, map2, sx};
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Pcmpgtq], pcmpgtq);
    t.set(&[M::Pcmpestri, M::Pcmpestri64, M::Pcmpestrm, M::Pcmpestrm64, M::Pcmpistri, M::Pcmpistrm], pcmpstr);
    t.set(&[M::Crc32], crc32);
}

fn pcmpgtq(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let d = ins.op0_register();
    let a = cpu.vreg(d);
    let b = cpu.read_vop(ins, 1, 16)?;
    let v = map2(a, b, 16, 8, |x, y| if (x as i64) > (y as i64) { u64::MAX } else { 0 });
    cpu.set_vreg(d, v);
    Ok(())
}

/// The operands of a string compare, decoded from imm8 and the lengths.
struct StrCmp {
    a: u128,
    b: u128,
    /// Element width in bytes (1 or 2).
    w: usize,
    signed: bool,
    /// Elements per register (16 or 8).
    max: usize,
    /// Valid elements of `a` and `b`.
    la: usize,
    lb: usize,
}

impl StrCmp {
    fn elem(&self, v: u128, i: usize) -> i64 {
        let x = lane(v, self.w, i);
        if self.signed {
            sx(x, self.w)
        } else {
            x as i64
        }
    }

    /// IntRes1 of the aggregation in imm8[3:2].
    fn aggregate(&self, op: u32) -> u32 {
        let (a, b) = (|i| self.elem(self.a, i), |j| self.elem(self.b, j));
        let mut r = 0u32;
        for j in 0..self.max {
            let hit = match op & 3 {
                // Equal any: b[j] is one of the valid elements of a.
                0 => j < self.lb && (0..self.la).any(|i| a(i) == b(j)),
                // Ranges: a holds [low, high] pairs, both ends valid.
                1 => j < self.lb && (0..self.la / 2).any(|p| a(2 * p) <= b(j) && b(j) <= a(2 * p + 1)),
                // Equal each: two invalid elements compare equal.
                2 => match (j < self.la, j < self.lb) {
                    (true, true) => a(j) == b(j),
                    (va, vb) => !va && !vb,
                },
                // Equal ordered: the needle a starts at b[j]; invalid
                // needle elements match anything, an invalid b element
                // only an invalid needle element; the register's end
                // cuts the needle short.
                _ => (0..self.max - j).all(|i| i >= self.la || (j + i < self.lb && a(i) == b(j + i))),
            };
            r |= u32::from(hit) << j;
        }
        r
    }
}

/// An explicit length: the absolute value of the register, saturated.
fn explicit_len(v: u64, wide: bool, max: usize) -> usize {
    let abs = if wide { (v as i64).unsigned_abs() } else { u64::from((v as u32 as i32).unsigned_abs()) };
    abs.min(max as u64) as usize
}

/// An implicit length: the index of the first zero element.
fn implicit_len(v: u128, w: usize, max: usize) -> usize {
    (0..max).find(|&i| lane(v, w, i) == 0).unwrap_or(max)
}

fn pcmpstr(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    use M::*;
    let m = ins.mnemonic();
    let imm = u32::from(ins.immediate8());
    let a = cpu.vreg(ins.op0_register());
    let b = cpu.read_vop(ins, 1, 16)?;
    let w = if imm & 1 != 0 { 2 } else { 1 };
    let max = 16 / w;
    let (la, lb) = match m {
        Pcmpistri | Pcmpistrm => (implicit_len(a, w, max), implicit_len(b, w, max)),
        _ => {
            let wide = matches!(m, Pcmpestri64 | Pcmpestrm64);
            (explicit_len(cpu.s.gpr[reg::RAX], wide, max), explicit_len(cpu.s.gpr[reg::RDX], wide, max))
        }
    };
    let s = StrCmp { a, b, w, signed: imm & 2 != 0, max, la, lb };
    let r1 = s.aggregate(imm >> 2);
    let all = (1u32 << max) - 1;
    let r2 = match (imm >> 4) & 3 {
        1 => !r1 & all,
        // Masked negative: only the valid elements of the second operand.
        3 => r1 ^ ((1u32 << lb) - 1),
        _ => r1,
    };
    if matches!(m, Pcmpestri | Pcmpestri64 | Pcmpistri) {
        let index = if r2 == 0 {
            max as u32
        } else if imm & 0x40 != 0 {
            31 - r2.leading_zeros()
        } else {
            r2.trailing_zeros()
        };
        cpu.set_reg(Register::ECX, u64::from(index));
    } else {
        let mask = if imm & 0x40 != 0 {
            let ones = (1u128 << (8 * w)) - 1;
            (0..max).filter(|&i| r2 >> i & 1 != 0).fold(0, |v, i| v | ones << (8 * w * i))
        } else {
            u128::from(r2)
        };
        cpu.s.fx.xmm[0] = mask;
    }
    let mut f = 0;
    if r2 != 0 {
        f |= flags::CF;
    }
    if lb < max {
        f |= flags::ZF;
    }
    if la < max {
        f |= flags::SF;
    }
    if r2 & 1 != 0 {
        f |= flags::OF;
    }
    cpu.set_arith_flags(f);
    Ok(())
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), a byte at a
/// time from a table built at compile time.
const CRC32C: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82f6_3b78 } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Folds the low `size` bytes of `v` into `crc`, least significant first.
fn crc32c(mut crc: u32, v: u64, size: usize) -> u32 {
    for i in 0..size {
        crc = (crc >> 8) ^ CRC32C[usize::from((crc as u8) ^ (v >> (8 * i)) as u8)];
    }
    crc
}

/// CRC32 r32/r64, r/m8/16/32/64: the low 32 bits of the destination are
/// the running CRC (no pre- or post-inversion); the result is
/// zero-extended. No flags change.
fn crc32(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let d = ins.op0_register();
    let size = cpu.op_size(ins, 1);
    let v = cpu.read_op(ins, 1)?;
    let crc = crc32c(cpu.reg(d) as u32, v, size);
    cpu.set_reg(d, u64::from(crc));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &[u8]) -> u128 {
        s.iter().enumerate().fold(0, |r, (i, &x)| r | u128::from(x) << (8 * i))
    }

    fn cmp(a: &[u8], b: &[u8], op: u32) -> u32 {
        let (a, b) = (text(a), text(b));
        let s = StrCmp { a, b, w: 1, signed: false, max: 16, la: implicit_len(a, 1, 16), lb: implicit_len(b, 1, 16) };
        s.aggregate(op)
    }

    #[test]
    fn crc32c_check_value() {
        // The standard check: CRC-32C("123456789") = 0xE3069283 with the
        // usual pre- and post-inversion.
        let crc = b"123456789".iter().fold(!0u32, |c, &b| crc32c(c, u64::from(b), 1));
        assert_eq!(!crc, 0xe306_9283);
        // Wider sources fold their bytes in little-endian order.
        let word = u64::from(u32::from_le_bytes(*b"1234"));
        assert_eq!(crc32c(!0, word, 4), b"1234".iter().fold(!0u32, |c, &b| crc32c(c, u64::from(b), 1)));
    }

    #[test]
    fn aggregations() {
        // Equal any: which characters of b are vowels.
        assert_eq!(cmp(b"aeiou", b"hello world", 0), 0b000_1001_0010);
        // Ranges: a..=z.
        assert_eq!(cmp(b"az", b"Hi There", 1), 0b1111_0010);
        // Equal each: beyond both strings everything matches.
        assert_eq!(cmp(b"abc", b"abd", 2), 0xfffb);
        // Equal ordered: "lo" found at 3; a needle cut by the end of b.
        assert_eq!(cmp(b"lo", b"hello", 3), 0b1000);
        let full = *b"xxxxxxxxxxxxxxxa";
        assert_eq!(cmp(b"ab", &full, 3), 1 << 15, "a needle prefix at the register's end matches");
        // An empty needle matches everywhere.
        assert_eq!(cmp(b"", b"abc", 3), 0xffff);
    }

    #[test]
    fn lengths() {
        assert_eq!(explicit_len(u64::from((-5i32) as u32), false, 16), 5);
        assert_eq!(explicit_len(0xffff_ffff_8000_0000, false, 8), 8);
        assert_eq!(explicit_len(u64::MAX, true, 16), 1);
        assert_eq!(explicit_len(1 << 40, false, 16), 0, "upper half ignored without REX.W");
        assert_eq!(implicit_len(0x0041_0042, 2, 8), 2);
    }
}
