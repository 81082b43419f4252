//! Instructions that need set-up or care beyond filling operands: string
//! instructions, POPF, the flag-defining CMP, DIV/IDIV dividends and
//! narrowed bit offsets.

use iced_x86::{Code, Instruction, Mnemonic, Register, RepPrefixKind};

use super::operands::{BASE, GPR16, GPR32, GPR64, LOW8};
use super::Generator;
use crate::layout::{DATA_BASE, STRING_AREA};
use crate::rng::Rng;
use crate::state::flags as rflags;

/// Largest REP count the generator loads into ECX.
const MAX_REP_COUNT: u64 = 12;

impl Generator {
    /// MOVS/STOS/LODS/SCAS/CMPS of a random size, with or without REP,
    /// after pointing RSI/RDI into the string area and setting a small
    /// count.
    pub(super) fn string_op(&mut self) -> Option<Vec<Instruction>> {
        let rng = &mut self.rng;
        let (low, high) = STRING_AREA;
        // Stay 128 bytes away from the area's ends: REP counts times the
        // element size never reach further, in either direction.
        let pointer = |rng: &mut Rng| (rng.range(low + 0x80, high - 0x80) - DATA_BASE) as i64;
        let source = pointer(rng);
        let destination = pointer(rng);
        let mut unit = vec![
            Instruction::with2(Code::Lea_r64_m, Register::RSI, iced_x86::MemoryOperand::with_base_displ(BASE, source)).ok()?,
            Instruction::with2(Code::Lea_r64_m, Register::RDI, iced_x86::MemoryOperand::with_base_displ(BASE, destination)).ok()?,
        ];
        let repeat = rng.chance(1, 2);
        if repeat {
            unit.push(Instruction::with2(Code::Mov_r32_imm32, Register::ECX, rng.below(MAX_REP_COUNT + 1) as u32).ok()?);
        }
        let compare_prefix = if !repeat {
            RepPrefixKind::None
        } else if rng.chance(1, 2) {
            RepPrefixKind::Repe
        } else {
            RepPrefixKind::Repne
        };
        // For MOVS/STOS/LODS, "REPE" is the plain REP (F3) prefix.
        let move_prefix = if repeat { RepPrefixKind::Repe } else { RepPrefixKind::None };
        let none = Register::None;
        let instruction = match (rng.below(5), rng.below(4)) {
            (0, 0) => Instruction::with_movsb(64, none, move_prefix),
            (0, 1) => Instruction::with_movsw(64, none, move_prefix),
            (0, 2) => Instruction::with_movsd(64, none, move_prefix),
            (0, _) => Instruction::with_movsq(64, none, move_prefix),
            (1, 0) => Instruction::with_stosb(64, move_prefix),
            (1, 1) => Instruction::with_stosw(64, move_prefix),
            (1, 2) => Instruction::with_stosd(64, move_prefix),
            (1, _) => Instruction::with_stosq(64, move_prefix),
            (2, 0) => Instruction::with_lodsb(64, none, move_prefix),
            (2, 1) => Instruction::with_lodsw(64, none, move_prefix),
            (2, 2) => Instruction::with_lodsd(64, none, move_prefix),
            (2, _) => Instruction::with_lodsq(64, none, move_prefix),
            (3, 0) => Instruction::with_scasb(64, compare_prefix),
            (3, 1) => Instruction::with_scasw(64, compare_prefix),
            (3, 2) => Instruction::with_scasd(64, compare_prefix),
            (3, _) => Instruction::with_scasq(64, compare_prefix),
            (_, 0) => Instruction::with_cmpsb(64, none, compare_prefix),
            (_, 1) => Instruction::with_cmpsw(64, none, compare_prefix),
            (_, 2) => Instruction::with_cmpsd(64, none, compare_prefix),
            (_, _) => Instruction::with_cmpsq(64, none, compare_prefix),
        };
        unit.push(instruction.ok()?);
        Some(unit)
    }

    /// POPFQ/POPFW after a PUSH of a flags image with only the arithmetic
    /// flags, DF (a quarter of the time) and bit 1.
    pub(super) fn popf(&mut self, code: Code) -> Option<Vec<Instruction>> {
        let mut image = (self.rng.next_u64() & rflags::ARITH) | rflags::FIXED;
        if self.rng.chance(1, 4) {
            image |= rflags::DF;
        }
        let push = if code == Code::Popfw { Code::Push_imm16 } else { Code::Pushq_imm32 };
        Some(vec![Instruction::with1(push, image as i32).ok()?, Instruction::with(code)])
    }

    /// A CMP that defines all six arithmetic flags and writes nothing else.
    pub(super) fn flag_definer(&mut self) -> Instruction {
        let slot = self.rng.below(GPR64.len() as u64) as usize;
        let created = if self.rng.chance(1, 2) {
            Instruction::with2(Code::Cmp_rm32_imm8, GPR32[slot], i32::from(self.rng.next_u64() as u8 as i8))
        } else {
            let other = self.rng.below(GPR64.len() as u64) as usize;
            Instruction::with2(Code::Cmp_rm64_r64, GPR64[slot], GPR64[other])
        };
        // Both forms always encode; CMP EAX, EAX is the safe fallback.
        created.unwrap_or_else(|_| Instruction::with2(Code::Cmp_rm32_r32, Register::EAX, Register::EAX).unwrap_or_default())
    }
}

/// `MOV register, -20..=20` (sign-extended): an explicit string length
/// that is not always saturated.
pub(super) fn string_length(rng: &mut Rng, register: Register) -> Option<Instruction> {
    Instruction::with2(Code::Mov_rm64_imm32, register, rng.below(41) as i32 - 20).ok()
}

/// `MOVZX r32, r8` narrowing the GPR that contains `register` to its low
/// byte.
pub(super) fn narrow(register: Register) -> Option<Instruction> {
    let slot = [&GPR16[..], &GPR32[..], &GPR64[..]].iter().find_map(|set| set.iter().position(|&r| r == register))?;
    Instruction::with2(Code::Movzx_r32_rm8, GPR32[slot], LOW8[slot]).ok()
}

/// The zero- or sign-extension that makes a DIV/IDIV dividend fit.
pub(super) fn dividend_extension(mnemonic: Mnemonic, bits: u32) -> Option<Instruction> {
    let signed = mnemonic == Mnemonic::Idiv;
    Some(match (signed, bits) {
        (false, 8) => Instruction::with2(Code::Movzx_r32_rm8, Register::EAX, Register::AL).ok()?,
        (false, _) => Instruction::with2(Code::Mov_r32_imm32, Register::EDX, 0u32).ok()?,
        (true, 8) => Instruction::with(Code::Cbw),
        (true, 16) => Instruction::with(Code::Cwd),
        (true, 32) => Instruction::with(Code::Cdq),
        (true, _) => Instruction::with(Code::Cqo),
    })
}
