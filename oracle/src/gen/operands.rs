//! Operand choices: the registers a generated instruction may name, memory
//! operands that stay inside the data region, and immediates.

use iced_x86::{Code, Instruction, MemoryOperand, Register};

use crate::layout::{DATA_BASE, OPERAND_AREA};
use crate::rng::Rng;

/// The base register of every generated memory operand. It holds
/// [`DATA_BASE`] and no generated instruction writes it.
pub(crate) const BASE: Register = Register::RBX;

/// 64-bit GPRs a generated instruction may name: all but RBX (the memory
/// base) and RSP (the stack, only used implicitly). Indices match
/// [`GPR32`], [`GPR16`] and [`LOW8`].
pub(crate) const GPR64: [Register; 14] = {
    use Register::*;
    [RAX, RCX, RDX, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15]
};
/// The 32-bit halves of [`GPR64`].
pub(crate) const GPR32: [Register; 14] = {
    use Register::*;
    [EAX, ECX, EDX, EBP, ESI, EDI, R8D, R9D, R10D, R11D, R12D, R13D, R14D, R15D]
};
/// The 16-bit parts of [`GPR64`].
pub(crate) const GPR16: [Register; 14] = {
    use Register::*;
    [AX, CX, DX, BP, SI, DI, R8W, R9W, R10W, R11W, R12W, R13W, R14W, R15W]
};
/// The low bytes of [`GPR64`].
pub(crate) const LOW8: [Register; 14] = {
    use Register::*;
    [AL, CL, DL, BPL, SIL, DIL, R8L, R9L, R10L, R11L, R12L, R13L, R14L, R15L]
};
/// 8-bit registers a generated instruction may name: the low bytes plus
/// AH, CH, DH (not BL/BH: RBX; not SPL: RSP). AH..DH cannot be encoded with
/// a REX prefix; the encoder rejects such combinations and the generator
/// then picks again.
pub(crate) const GPR8: [Register; 17] = {
    use Register::*;
    [AL, CL, DL, AH, CH, DH, BPL, SIL, DIL, R8L, R9L, R10L, R11L, R12L, R13L, R14L, R15L]
};
/// XMM0..XMM15.
pub(crate) const XMM: [Register; 16] = {
    use Register::*;
    [XMM0, XMM1, XMM2, XMM3, XMM4, XMM5, XMM6, XMM7, XMM8, XMM9, XMM10, XMM11, XMM12, XMM13, XMM14, XMM15]
};

/// Largest displacement of a generated memory operand.
const MAX_DISPLACEMENT: u64 = 0x800;

// Every generated access ([RBX + index(<=255)*8 + MAX_DISPLACEMENT], at
// most 16 bytes wide) stays in the operand area.
const _: () = assert!(DATA_BASE + MAX_DISPLACEMENT + 255 * 8 + 16 <= OPERAND_AREA.1);

/// A register-or-immediate-or-memory operand, before it is attached to an
/// [`Instruction`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Operand {
    Register(Register),
    Memory(MemoryOperand),
    /// An immediate that fits the instruction's immediate field (iced
    /// checks the range when the instruction is created).
    Immediate(i32),
    /// A 64-bit immediate (MOV r64, imm64).
    Immediate64(i64),
}

/// Creates the instruction `code operands...`, or `None` for a combination
/// iced rejects.
pub(crate) fn instruction(code: Code, operands: &[Operand]) -> Option<Instruction> {
    use Operand::{Immediate as I, Immediate64 as I64, Memory as M, Register as R};
    let created = match *operands {
        [] => Ok(Instruction::with(code)),
        [R(a)] => Instruction::with1(code, a),
        [M(a)] => Instruction::with1(code, a),
        [I(a)] => Instruction::with1(code, a),
        [R(a), R(b)] => Instruction::with2(code, a, b),
        [R(a), M(b)] => Instruction::with2(code, a, b),
        [M(a), R(b)] => Instruction::with2(code, a, b),
        [R(a), I(b)] => Instruction::with2(code, a, b),
        [R(a), I64(b)] => Instruction::with2(code, a, b),
        [M(a), I(b)] => Instruction::with2(code, a, b),
        [R(a), R(b), R(c)] => Instruction::with3(code, a, b, c),
        [M(a), R(b), R(c)] => Instruction::with3(code, a, b, c),
        [R(a), R(b), I(c)] => Instruction::with3(code, a, b, c),
        [R(a), M(b), I(c)] => Instruction::with3(code, a, b, c),
        [M(a), R(b), I(c)] => Instruction::with3(code, a, b, c),
        _ => return None,
    };
    created.ok()
}

/// `[RBX + disp]` with `disp` a multiple of 16, for SSE operands and
/// CMPXCHG16B, which fault on misaligned addresses.
pub(crate) fn aligned_memory(rng: &mut Rng) -> MemoryOperand {
    MemoryOperand::new(BASE, Register::None, 1, (16 * rng.below(MAX_DISPLACEMENT / 16 + 1)) as i64, 1, false, Register::None)
}

/// `[RBX + disp]` with `disp` not a multiple of 16: aligned SSE forms
/// must fault on it, unaligned ones (PCMPxSTRx, scalar operands) not.
pub(crate) fn misaligned_memory(rng: &mut Rng) -> MemoryOperand {
    let displacement = 16 * rng.below(MAX_DISPLACEMENT / 16) + 1 + rng.below(15);
    MemoryOperand::new(BASE, Register::None, 1, displacement as i64, 1, false, Register::None)
}

/// Sixteen bytes of "text" for the string compares: bytes or words from
/// a small alphabet (ASCII letters and a few values with the top bit
/// set, so signed and unsigned orders differ), about one in ten zero,
/// which ends an implicit-length string.
pub(crate) fn text(rng: &mut Rng) -> u128 {
    const ALPHABET: [u8; 8] = [b'a', b'b', b'c', b'A', b'B', b'0', 0x80, 0xFF];
    let letter = |rng: &mut Rng| if rng.chance(1, 10) { 0 } else { ALPHABET[rng.below(8) as usize] };
    let words = rng.chance(1, 2);
    let mut value = 0u128;
    for index in 0..16 {
        let byte = if words && index % 2 == 1 {
            // The high byte of a word: zero with its low byte, else
            // usually zero (characters) or a letter.
            if (value >> (8 * (index - 1))) as u8 == 0 || rng.chance(2, 3) { 0 } else { letter(rng) }
        } else {
            letter(rng)
        };
        value |= u128::from(byte) << (8 * index);
    }
    value
}

/// A memory operand inside the operand area: `[RBX + disp8]`,
/// `[RBX + disp32]` or `[RBX + index*scale + disp]`. An index register is
/// first narrowed to its low byte by a `MOVZX` pushed onto `preludes`
/// (which leaves the flags alone).
pub(crate) fn memory(rng: &mut Rng, preludes: &mut Vec<Instruction>) -> MemoryOperand {
    let (index, scale) = match rng.below(3) {
        0 | 1 => (Register::None, 1),
        _ => {
            let slot = rng.below(GPR64.len() as u64) as usize;
            if let Ok(narrow) = Instruction::with2(Code::Movzx_r32_rm8, GPR32[slot], LOW8[slot]) {
                preludes.push(narrow);
            }
            (GPR64[slot], [1, 2, 4, 8][rng.below(4) as usize])
        }
    };
    let displacement = if rng.chance(1, 2) { rng.below(128) } else { rng.below(MAX_DISPLACEMENT + 1) };
    MemoryOperand::new(BASE, index, scale, displacement as i64, 1, false, Register::None)
}

/// An arbitrary address expression for LEA, which computes but never
/// accesses it: any allowed base and index, any displacement.
pub(crate) fn lea_memory(rng: &mut Rng) -> MemoryOperand {
    let base = if rng.chance(1, 4) { Register::None } else { *rng.pick(&GPR64).unwrap_or(&Register::RAX) };
    let index = if rng.chance(1, 3) { Register::None } else { *rng.pick(&GPR64).unwrap_or(&Register::RAX) };
    let scale = [1, 2, 4, 8][rng.below(4) as usize];
    let displacement = i64::from(interesting(rng, 32) as u32 as i32);
    let displ_size = if base == Register::None && index == Register::None { 8 } else { 1 };
    MemoryOperand::new(base, index, scale, displacement, displ_size, false, Register::None)
}

/// A value of `bits` width (8..=64) biased towards the edges that flag
/// computations get wrong: 0, 1, the sign boundary, all ones.
pub(crate) fn interesting(rng: &mut Rng, bits: u32) -> u64 {
    let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let sign = 1u64 << (bits.clamp(1, 64) - 1);
    let value = match rng.below(10) {
        0 => 0,
        1 => 1,
        2 => sign,
        3 => sign - 1,
        4 => u64::MAX,
        5 => rng.below(16),
        6 => sign.wrapping_add(rng.below(4)).wrapping_sub(2),
        7 => u64::MAX - rng.below(16),
        _ => rng.next_u64(),
    };
    value & mask
}

/// A shift or rotate count: often 0, 1 or the operand width, sometimes
/// past the 5/6-bit mask.
pub(crate) fn shift_count(rng: &mut Rng, bits: u32) -> u64 {
    match rng.below(8) {
        0 => 0,
        1 | 2 => 1,
        3 => u64::from(bits),
        4 => u64::from(bits) - 1,
        5 => rng.below(256),
        _ => rng.below(u64::from(bits).min(32)),
    }
}

/// An ordinary or special single-precision value.
pub(crate) fn nice_f32(rng: &mut Rng) -> f32 {
    match rng.below(8) {
        0 => 0.0,
        1 => -0.0,
        2 => f32::INFINITY,
        3 => f32::NAN,
        4 => f32::from_bits(rng.below(0x80_0000) as u32), // denormal
        _ => (rng.below(2001) as f32 - 1000.0) / (1 + rng.below(64)) as f32,
    }
}

/// An ordinary or special double-precision value.
pub(crate) fn nice_f64(rng: &mut Rng) -> f64 {
    match rng.below(8) {
        0 => 0.0,
        1 => -0.0,
        2 => f64::NEG_INFINITY,
        3 => f64::NAN,
        4 => f64::from_bits(rng.below(1 << 52)),
        _ => (rng.below(2001) as f64 - 1000.0) / (1 + rng.below(64)) as f64,
    }
}
