//! Seeded random generation of test cases: instruction snippets, initial
//! states and data.
//!
//! Snippets are straight-line code (no branches) drawn from the whitelist
//! in [`forms`]. The generator keeps every case deterministic and inside
//! the oracle's regions:
//!
//! * RBX holds [`DATA_BASE`] and RSP the stack; no generated instruction
//!   names RBX/EBX/BX/BL/BH or RSP/ESP/SP/SPL, so neither is ever written
//!   except RSP by PUSH/POP;
//! * memory operands are `[RBX + disp]` or `[RBX + index*scale + disp]`,
//!   the index first narrowed to 0..=255 by a MOVZX of its low byte, so
//!   every access lands in the operand area; SSE memory operands,
//!   MOVNTDQA and CMPXCHG16B use 16-byte aligned `[RBX + disp]`, except
//!   now and then a misaligned one (which must fault, or not, alike);
//! * PCMPESTRI/PCMPESTRM are often preceded by `MOV RAX/RDX, -20..=20`
//!   so the explicit lengths are not always saturated; XMM values and
//!   some 16-byte chunks of data are sometimes short "text" (a small
//!   alphabet with zero bytes or words) for the string compares;
//! * BT/BTS/BTR/BTC with a memory operand and a register bit offset narrow
//!   the offset the same way (a register offset can address far beyond the
//!   operand);
//! * string instructions are preceded by `LEA RSI/RDI, [RBX + ...]` into
//!   the string area and, with a REP prefix, `MOV ECX, 0..=12`;
//! * POPF is preceded by a PUSH of an immediate holding only arithmetic
//!   flags and DF (never TF, AC, NT...);
//! * DIV/IDIV are usually preceded by a zero- or sign-extension of the
//!   dividend (MOVZX EAX, AL / MOV EDX, 0 / CBW / CWD / CDQ / CQO) so
//!   that most succeed; the others may raise #DE;
//! * the stack pointer stays within 16 KiB below and 2 KiB above its
//!   start;
//! * an instruction that reads a flag the snippet has left undefined (see
//!   [`crate::flags`]) is preceded by a CMP that defines all six, so no
//!   undefined flag reaches a register or memory;
//! * all these preludes leave the flags alone (MOVZX, MOV, LEA, PUSH,
//!   CBW...).
//!
//! Left out: branches, CALL/RET, anything privileged or nondeterministic
//! (CPUID, RDTSC, RDRAND...), x87, MMX (also the MMX forms of SSSE3), AVX, segment registers, the
//! ENTER/LEAVE pair, XLAT (reads through RBX), the BCD instructions
//! (DAA DAS AAA AAS AAM AAD: invalid in 64-bit mode), the SAL alias
//! (D0-D3 /6) and TEST F6/F7 /1 aliases, BSWAP r16 (undefined), 16-bit
//! SHLD/SHRD by CL (count may exceed 16: undefined result), CMPPS-style
//! predicates, RCPPS/RSQRTPS (approximate), moffs and RIP-relative
//! addressing, address-size and segment overrides.

pub(crate) mod forms;
pub(crate) mod operands;
mod snippet;
mod special;

use iced_x86::{Code, Instruction, Mnemonic, OpCodeOperandKind, Register};

use crate::flags;
use crate::layout::{DATA_BASE, DATA_SIZE, OPERAND_AREA, STACK_TOP};
use crate::rng::Rng;
use crate::state::{flags as rflags, reg, UserState, MXCSR_DEFAULT};
use forms::{Group, GroupKind};
use operands::{Operand, GPR16, GPR32, GPR64, GPR8, XMM};
pub use snippet::Snippet;
use snippet::Builder;

/// Attempts at one instruction before falling back to a plain move.
const MAX_ATTEMPTS: usize = 64;

/// Which optional instructions to generate. The generator output depends
/// on the seed and this configuration only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenConfig {
    /// LZCNT (ABM/LZCNT; without it the encoding runs as BSR).
    pub lzcnt: bool,
    /// TZCNT (BMI1; without it the encoding runs as BSF).
    pub tzcnt: bool,
    /// POPCNT.
    pub popcnt: bool,
    /// CMPXCHG16B.
    pub cmpxchg16b: bool,
    /// LAHF/SAHF in 64-bit mode (CPUID 8000_0001h ECX[0]).
    pub lahf_sahf: bool,
    /// SSE/SSE2 integer and floating-point instructions.
    pub sse: bool,
    /// SSSE3 (XMM forms).
    pub ssse3: bool,
    /// SSE4.1.
    pub sse41: bool,
    /// SSE4.2 (PCMPGTQ, the string compares, CRC32).
    pub sse42: bool,
}

impl GenConfig {
    /// Only what every x86-64 CPU has (SSE2 included).
    pub fn baseline() -> Self {
        Self { lzcnt: false, tzcnt: false, popcnt: false, cmpxchg16b: false, lahf_sahf: false, sse: true, ssse3: false, sse41: false, sse42: false }
    }

    /// Everything the host CPU supports.
    pub fn for_host() -> Self {
        Self {
            lzcnt: std::arch::is_x86_feature_detected!("lzcnt"),
            tzcnt: std::arch::is_x86_feature_detected!("bmi1"),
            popcnt: std::arch::is_x86_feature_detected!("popcnt"),
            cmpxchg16b: std::arch::is_x86_feature_detected!("cmpxchg16b"),
            lahf_sahf: host_has_lahf_sahf(),
            sse: true,
            ssse3: std::arch::is_x86_feature_detected!("ssse3"),
            sse41: std::arch::is_x86_feature_detected!("sse4.1"),
            sse42: std::arch::is_x86_feature_detected!("sse4.2"),
        }
    }
}

/// CPUID 8000_0001h ECX bit 0 (LAHF/SAHF in 64-bit mode).
fn host_has_lahf_sahf() -> bool {
    use std::arch::x86_64::__cpuid;
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 8000_0000h reports
    // the highest extended leaf, checked before asking for 8000_0001h.
    #[allow(unused_unsafe)]
    unsafe {
        __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & 1 != 0
    }
}

/// A complete test case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestCase {
    /// The code.
    pub snippet: Snippet,
    /// The initial registers.
    pub state: UserState,
    /// The initial data region ([`DATA_SIZE`] bytes).
    pub data: Vec<u8>,
}

/// The seeded generator; see the module docs.
#[derive(Clone, Debug)]
pub struct Generator {
    rng: Rng,
    config: GenConfig,
    groups: Vec<Group>,
}

impl Generator {
    /// A generator for `seed` using every instruction the host supports.
    pub fn new(seed: u64) -> Self {
        Self::with_config(seed, GenConfig::for_host())
    }

    /// A generator for `seed` and `config`.
    pub fn with_config(seed: u64, config: GenConfig) -> Self {
        Self { rng: Rng::new(seed), config, groups: forms::groups(&config) }
    }

    /// The configuration.
    pub fn config(&self) -> &GenConfig {
        &self.config
    }

    /// The names of the instruction groups drawn from.
    pub fn group_names(&self) -> Vec<&'static str> {
        self.groups.iter().map(|group| group.name).collect()
    }

    /// A complete case with a snippet of `len` generated instructions.
    pub fn case(&mut self, len: usize) -> TestCase {
        TestCase { snippet: self.snippet(len), state: self.initial_state(), data: self.data() }
    }

    /// A snippet of `len` generated instructions (plus the preludes they
    /// need; see [`Snippet::instruction_count`]).
    pub fn snippet(&mut self, len: usize) -> Snippet {
        let mut builder = Builder::default();
        for _ in 0..len {
            self.emit_one(&mut builder);
        }
        // Every unit was decoded back when it was appended, so this cannot
        // fail.
        Snippet::from_bytes(&builder.bytes).unwrap_or_default()
    }

    /// A random initial state: RBX = [`DATA_BASE`], RSP = [`STACK_TOP`],
    /// other GPRs biased to edge values, random arithmetic flags (DF set a
    /// quarter of the time), XMMs mixing raw bits and ordinary floats,
    /// MXCSR with a random rounding mode and occasionally FTZ/DAZ.
    pub fn initial_state(&mut self) -> UserState {
        let mut state = UserState::default();
        for value in state.gpr.iter_mut() {
            *value = operands::interesting(&mut self.rng, 64);
        }
        state.gpr[reg::RBX] = DATA_BASE;
        state.gpr[reg::RSP] = STACK_TOP;
        state.rflags = (self.rng.next_u64() & rflags::ARITH) | rflags::FIXED;
        if self.rng.chance(1, 4) {
            state.rflags |= rflags::DF;
        }
        for value in state.xmm.iter_mut() {
            *value = self.xmm_value();
        }
        state.mxcsr = MXCSR_DEFAULT | ((self.rng.below(4) as u32) << 13);
        if self.rng.chance(1, 8) {
            state.mxcsr |= 1 << 15; // FTZ
        }
        if self.rng.chance(1, 8) {
            state.mxcsr |= 1 << 6; // DAZ
        }
        state
    }

    /// [`DATA_SIZE`] random bytes, with an eighth of the 16-byte chunks
    /// of the operand area short text (see [`operands::text`]).
    pub fn data(&mut self) -> Vec<u8> {
        let mut data = vec![0; DATA_SIZE];
        self.rng.fill(&mut data);
        let operand_bytes = (OPERAND_AREA.1 - OPERAND_AREA.0) as usize;
        for chunk in data[..operand_bytes].chunks_exact_mut(16) {
            if self.rng.chance(1, 8) {
                chunk.copy_from_slice(&operands::text(&mut self.rng).to_le_bytes());
            }
        }
        data
    }

    fn xmm_value(&mut self) -> u128 {
        let rng = &mut self.rng;
        match rng.below(5) {
            0 => u128::from(rng.next_u64()) | u128::from(rng.next_u64()) << 64,
            4 => operands::text(rng),
            1 => (0..4).fold(0, |value, lane| value | u128::from(operands::nice_f32(rng).to_bits()) << (32 * lane)),
            2 => u128::from(operands::nice_f64(rng).to_bits()) | u128::from(operands::nice_f64(rng).to_bits()) << 64,
            _ => (0..4).fold(0, |value, lane| value | u128::from(operands::interesting(rng, 32) as u32) << (32 * lane)),
        }
    }

    /// Appends one generated instruction and its preludes.
    fn emit_one(&mut self, builder: &mut Builder) {
        for _ in 0..MAX_ATTEMPTS {
            let Some(mut unit) = self.unit() else { continue };
            let reads = unit.iter().fold(0, |mask, instruction| mask | flags::flags_read(instruction));
            if reads & builder.tracker.undefined() != 0 {
                unit.insert(0, self.flag_definer());
            }
            if builder.try_append(&unit) {
                return;
            }
        }
        if let Ok(fallback) = Instruction::with2(Code::Mov_r32_rm32, Register::EAX, Register::ECX) {
            builder.try_append(&[fallback]);
        }
    }

    /// One generated instruction preceded by its preludes, or `None` if
    /// the random choices made no valid instruction.
    fn unit(&mut self) -> Option<Vec<Instruction>> {
        let group = self.rng.pick(&self.groups)?;
        let kind = group.kind;
        let code = self.rng.pick(&group.codes).copied();
        match kind {
            GroupKind::Generic => self.generic(code?),
            GroupKind::String => self.string_op(),
            GroupKind::Popf => self.popf(code?),
        }
    }

    /// An instruction whose operands come from its opcode's operand kinds.
    fn generic(&mut self, code: Code) -> Option<Vec<Instruction>> {
        let mnemonic = code.mnemonic();
        let kinds = code.op_code().op_kinds();
        let bits = operand_bits(kinds);
        let aligned = matches!(mnemonic, Mnemonic::Cmpxchg16b | Mnemonic::Movntdqa) || kinds.contains(&OpCodeOperandKind::xmm_or_mem);
        let mut preludes = Vec::new();
        let mut operands = Vec::with_capacity(kinds.len());
        for &kind in kinds {
            operands.push(self.operand(kind, mnemonic, bits, aligned, &mut preludes)?);
        }
        if is_bit_test(mnemonic) {
            if let [Operand::Memory(_), Operand::Register(offset)] = operands[..] {
                preludes.push(special::narrow(offset)?);
            }
        }
        let mut instruction = operands::instruction(code, &operands)?;
        if matches!(operands.first(), Some(Operand::Memory(_))) && code.op_code().can_use_lock_prefix() && self.rng.chance(1, 3) {
            instruction.set_has_lock_prefix(true);
        }
        if matches!(mnemonic, Mnemonic::Div | Mnemonic::Idiv) && self.rng.chance(3, 4) {
            preludes.push(special::dividend_extension(mnemonic, bits)?);
        }
        if is_explicit_length(mnemonic) {
            for register in [Register::RAX, Register::RDX] {
                if self.rng.chance(1, 2) {
                    preludes.push(special::string_length(&mut self.rng, register)?);
                }
            }
        }
        preludes.push(instruction);
        Some(preludes)
    }

    /// One operand of the given kind.
    fn operand(&mut self, kind: OpCodeOperandKind, mnemonic: Mnemonic, bits: u32, aligned: bool, preludes: &mut Vec<Instruction>) -> Option<Operand> {
        use OpCodeOperandKind as K;
        let rng = &mut self.rng;
        let register = |rng: &mut Rng, set: &[Register]| rng.pick(set).copied().map(Operand::Register);
        let memory = |rng: &mut Rng, preludes: &mut Vec<Instruction>| {
            Operand::Memory(if aligned && rng.chance(1, 32) {
                operands::misaligned_memory(rng)
            } else if aligned {
                operands::aligned_memory(rng)
            } else {
                operands::memory(rng, preludes)
            })
        };
        let use_memory = rng.chance(1, 3);
        Some(match kind {
            K::r8_or_mem | K::r16_or_mem | K::r32_or_mem | K::r64_or_mem | K::xmm_or_mem if use_memory => memory(rng, preludes),
            K::mem if mnemonic == Mnemonic::Lea => Operand::Memory(operands::lea_memory(rng)),
            K::mem => memory(rng, preludes),
            K::r8_or_mem | K::r8_reg | K::r8_opcode => register(rng, &GPR8)?,
            K::r16_or_mem | K::r16_reg | K::r16_opcode | K::r16_rm => register(rng, &GPR16)?,
            K::r32_or_mem | K::r32_reg | K::r32_opcode | K::r32_rm => register(rng, &GPR32)?,
            K::r64_or_mem | K::r64_reg | K::r64_opcode | K::r64_rm => register(rng, &GPR64)?,
            K::xmm_or_mem | K::xmm_reg | K::xmm_rm => register(rng, &XMM)?,
            K::al => Operand::Register(Register::AL),
            K::cl => Operand::Register(Register::CL),
            K::ax => Operand::Register(Register::AX),
            K::eax => Operand::Register(Register::EAX),
            K::rax => Operand::Register(Register::RAX),
            K::imm8_const_1 => Operand::Immediate(1),
            K::imm8 if is_count(mnemonic) => {
                let count = if bits == 16 && matches!(mnemonic, Mnemonic::Shld | Mnemonic::Shrd) {
                    // Counts above 16 leave a 16-bit result undefined.
                    rng.below(17)
                } else {
                    operands::shift_count(rng, bits)
                };
                Operand::Immediate(count as i32)
            }
            // Control bytes: every bit matters, so uniformly random half
            // the time.
            K::imm8 if is_control_byte(mnemonic) && rng.chance(1, 2) => Operand::Immediate(rng.below(256) as i32),
            K::imm8 => Operand::Immediate(operands::interesting(rng, 8) as i32),
            K::imm8sex16 | K::imm8sex32 | K::imm8sex64 => Operand::Immediate(i32::from(operands::interesting(rng, 8) as u8 as i8)),
            K::imm16 => Operand::Immediate(operands::interesting(rng, 16) as i32),
            K::imm32 | K::imm32sex64 => Operand::Immediate(operands::interesting(rng, 32) as u32 as i32),
            K::imm64 => Operand::Immediate64(operands::interesting(rng, 64) as i64),
            _ => return None,
        })
    }
}

/// The operand size of a form, from its first sized operand kind.
fn operand_bits(kinds: &[OpCodeOperandKind]) -> u32 {
    use OpCodeOperandKind as K;
    kinds
        .iter()
        .find_map(|kind| match kind {
            K::r8_or_mem | K::r8_reg | K::r8_opcode | K::al => Some(8),
            K::r16_or_mem | K::r16_reg | K::r16_opcode | K::r16_rm | K::ax => Some(16),
            K::r32_or_mem | K::r32_reg | K::r32_opcode | K::r32_rm | K::eax => Some(32),
            K::r64_or_mem | K::r64_reg | K::r64_opcode | K::r64_rm | K::rax => Some(64),
            K::xmm_or_mem | K::xmm_reg | K::xmm_rm => Some(128),
            _ => None,
        })
        .unwrap_or(64)
}

/// Mnemonics whose imm8 is a shift or rotate count.
fn is_count(mnemonic: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        mnemonic,
        M::Shl | M::Shr | M::Sar | M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shld | M::Shrd | M::Psllw | M::Pslld | M::Psllq
            | M::Psrlw | M::Psrld | M::Psrlq | M::Psraw | M::Psrad | M::Pslldq | M::Psrldq
    )
}

/// Mnemonics whose imm8 is a set of control fields (SSE4 selectors and
/// modes).
fn is_control_byte(mnemonic: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        mnemonic,
        M::Pcmpestri | M::Pcmpestri64 | M::Pcmpestrm | M::Pcmpestrm64 | M::Pcmpistri | M::Pcmpistrm | M::Roundps | M::Roundpd
            | M::Roundss | M::Roundsd | M::Dpps | M::Dppd | M::Insertps | M::Mpsadbw | M::Pblendw | M::Blendps | M::Blendpd
            | M::Palignr
    )
}

/// The string compares that take lengths in RAX and RDX.
fn is_explicit_length(mnemonic: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(mnemonic, M::Pcmpestri | M::Pcmpestri64 | M::Pcmpestrm | M::Pcmpestrm64)
}

fn is_bit_test(mnemonic: Mnemonic) -> bool {
    matches!(mnemonic, Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc)
}

#[cfg(test)]
mod tests;
