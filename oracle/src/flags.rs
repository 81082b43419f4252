//! Which RFLAGS bits an instruction sequence leaves undefined.
//!
//! The Intel SDM leaves some arithmetic flags "undefined" after some
//! instructions; real CPUs set them to something, but not necessarily what
//! the interpreter chooses, so a comparison must ignore them. The rules,
//! from the SDM's instruction pages ("Flags Affected"):
//!
//! | instructions | defined | undefined |
//! |---|---|---|
//! | ADD ADC SUB SBB CMP NEG XADD CMPXCHG POPCNT | all six | - |
//! | INC DEC | OF SF ZF AF PF | - (CF untouched) |
//! | AND OR XOR TEST | CF=OF=0, SF ZF PF | AF |
//! | MUL IMUL | CF OF | SF ZF AF PF |
//! | DIV IDIV | - | all six |
//! | BT BTS BTR BTC | CF | OF SF AF PF (ZF untouched) |
//! | BSF BSR | ZF | CF OF SF AF PF |
//! | LZCNT TZCNT | CF ZF | OF SF AF PF |
//! | CMPXCHG8B/16B | ZF | - |
//! | CLC STC | CF | - (CMC flips CF: as defined as it was) |
//! | SAHF | SF ZF AF PF CF | - |
//! | POPF | all | - |
//! | COMIS* UCOMIS* PTEST PCMPxSTRx | all six | - |
//! | SHL/SAL SHR SAR by c | c=0: nothing; else CF SF ZF PF, OF iff c=1 | AF; OF if c>1; CF for SHL/SHR when c >= operand bits |
//! | ROL ROR by c | c=0: nothing; else CF, OF iff c=1 | OF if c>1 |
//! | RCL RCR by c | c=0: nothing; else OF iff c=1 (CF is a function of the old CF) | OF if c>1 |
//! | SHLD SHRD by c | c=0: nothing; c>bits: nothing defined; else CF SF ZF PF, OF iff c=1 | AF; OF if c>1; all six if c>bits |
//! | CMPS SCAS | all six (with REP and RCX=0: nothing) | - |
//! | DAA DAS | CF AF SF ZF PF | OF |
//! | AAA AAS | AF CF | OF SF ZF PF |
//! | AAM AAD | SF ZF PF | OF AF CF |
//!
//! The count c is masked to 5 bits (6 for 64-bit operands) first. When a
//! count comes from CL and the caller does not know RCX, the rule is the
//! union over all counts: nothing becomes defined (the count may be 0), and
//! whatever some count leaves undefined becomes undefined. Instructions
//! not listed leave the flags alone. (The BCD instructions are invalid in
//! 64-bit mode and never generated; they are listed for the interpreter's
//! 32-bit tests.)
//!
//! A [`FlagTracker`] follows a sequence: an instruction's defined flags
//! leave the undefined set, its undefined flags join it.

use iced_x86::{Instruction, Mnemonic, OpKind, Register, RflagsBits};

use crate::state::flags::{AF, ARITH, CF, DF, OF, PF, SF, ZF};

/// What one instruction does to the arithmetic flags' definedness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlagEffect {
    /// Flags it sets to architecturally defined values.
    pub defined: u64,
    /// Flags it leaves undefined.
    pub undefined: u64,
}

impl FlagEffect {
    const NONE: Self = Self { defined: 0, undefined: 0 };

    const fn defines(defined: u64) -> Self {
        Self { defined, undefined: 0 }
    }

    const fn new(defined: u64, undefined: u64) -> Self {
        Self { defined, undefined }
    }
}

/// Tracks, instruction by instruction, which arithmetic flags are
/// currently undefined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlagTracker {
    undefined: u64,
}

impl FlagTracker {
    /// A tracker whose flags are all defined (as in a loaded state).
    pub fn new() -> Self {
        Self::default()
    }

    /// Accounts for `instruction`; `rcx` is RCX before it runs, if known
    /// (it decides shift counts from CL and REP iteration counts).
    pub fn step(&mut self, instruction: &Instruction, rcx: Option<u64>) {
        let effect = effect(instruction, rcx);
        self.undefined = (self.undefined & !effect.defined) | effect.undefined;
    }

    /// The flags currently undefined (a mask of RFLAGS bits).
    pub fn undefined(&self) -> u64 {
        self.undefined
    }
}

/// The flags a sequence leaves undefined, not knowing any register values
/// (conservative for counts in CL and REP counts).
pub fn undefined_flags(instructions: &[Instruction]) -> u64 {
    let mut tracker = FlagTracker::new();
    for instruction in instructions {
        tracker.step(instruction, None);
    }
    tracker.undefined()
}

/// The arithmetic flags and DF that `instruction` reads (from iced's
/// instruction info), as RFLAGS bits.
pub fn flags_read(instruction: &Instruction) -> u64 {
    from_iced(instruction.rflags_read())
}

/// Converts iced's [`RflagsBits`] to RFLAGS bits (arithmetic flags and DF).
pub fn from_iced(bits: u32) -> u64 {
    [(RflagsBits::CF, CF), (RflagsBits::PF, PF), (RflagsBits::AF, AF), (RflagsBits::ZF, ZF), (RflagsBits::SF, SF), (RflagsBits::DF, DF), (RflagsBits::OF, OF)]
        .into_iter()
        .filter(|&(iced, _)| bits & iced != 0)
        .fold(0, |mask, (_, flag)| mask | flag)
}

/// The effect of one instruction; `rcx` as in [`FlagTracker::step`].
pub fn effect(instruction: &Instruction, rcx: Option<u64>) -> FlagEffect {
    use Mnemonic as M;
    match instruction.mnemonic() {
        M::Add | M::Adc | M::Sub | M::Sbb | M::Cmp | M::Neg | M::Xadd | M::Cmpxchg | M::Popcnt => FlagEffect::defines(ARITH),
        M::Inc | M::Dec => FlagEffect::defines(ARITH & !CF),
        M::And | M::Or | M::Xor | M::Test => FlagEffect::new(ARITH & !AF, AF),
        M::Mul | M::Imul => FlagEffect::new(CF | OF, SF | ZF | AF | PF),
        M::Div | M::Idiv => FlagEffect::new(0, ARITH),
        M::Bt | M::Bts | M::Btr | M::Btc => FlagEffect::new(CF, OF | SF | AF | PF),
        M::Bsf | M::Bsr => FlagEffect::new(ZF, CF | OF | SF | AF | PF),
        M::Lzcnt | M::Tzcnt => FlagEffect::new(CF | ZF, OF | SF | AF | PF),
        M::Cmpxchg8b | M::Cmpxchg16b => FlagEffect::defines(ZF),
        M::Clc | M::Stc => FlagEffect::defines(CF),
        M::Sahf => FlagEffect::defines(SF | ZF | AF | PF | CF),
        M::Popf | M::Popfd | M::Popfq => FlagEffect::defines(ARITH | DF),
        M::Daa | M::Das => FlagEffect::new(CF | AF | SF | ZF | PF, OF),
        M::Aaa | M::Aas => FlagEffect::new(AF | CF, OF | SF | ZF | PF),
        M::Aam | M::Aad => FlagEffect::new(SF | ZF | PF, OF | AF | CF),
        M::Comiss | M::Comisd | M::Ucomiss | M::Ucomisd => FlagEffect::defines(ARITH),
        M::Ptest | M::Pcmpestri | M::Pcmpestri64 | M::Pcmpestrm | M::Pcmpestrm64 | M::Pcmpistri | M::Pcmpistrm => {
            FlagEffect::defines(ARITH)
        }
        M::Shl | M::Sal | M::Shr | M::Sar => shift(instruction, rcx),
        M::Rol | M::Ror => rotate(instruction, rcx, CF),
        M::Rcl | M::Rcr => rotate(instruction, rcx, 0),
        M::Shld | M::Shrd => double_shift(instruction, rcx),
        M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq | M::Scasb | M::Scasw | M::Scasd | M::Scasq if is_string(instruction) => {
            string_compare(instruction, rcx)
        }
        _ => FlagEffect::NONE,
    }
}

/// SHL/SAL/SHR/SAR.
fn shift(instruction: &Instruction, rcx: Option<u64>) -> FlagEffect {
    let bits = operand_bits(instruction);
    let shl_or_shr = matches!(instruction.mnemonic(), Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr);
    let counts_past_width = |count: u64| shl_or_shr && count >= u64::from(bits);
    match masked_count(instruction, 1, rcx, bits) {
        Some(0) => FlagEffect::NONE,
        Some(count) => {
            let (cf_defined, cf_undefined) = if counts_past_width(count) { (0, CF) } else { (CF, 0) };
            let (of_defined, of_undefined) = if count == 1 { (OF, 0) } else { (0, OF) };
            FlagEffect::new(cf_defined | SF | ZF | PF | of_defined, AF | cf_undefined | of_undefined)
        }
        // Any count up to the mask: counts of 8 or 16 and more reach
        // narrow operands only.
        None => FlagEffect::new(0, AF | OF | if counts_past_width(31) && bits < 32 { CF } else { 0 }),
    }
}

/// ROL/ROR (`carry_defined` = CF) and RCL/RCR (`carry_defined` = 0: the new
/// CF derives from the old one).
fn rotate(instruction: &Instruction, rcx: Option<u64>, carry_defined: u64) -> FlagEffect {
    match masked_count(instruction, 1, rcx, operand_bits(instruction)) {
        Some(0) => FlagEffect::NONE,
        Some(1) => FlagEffect::defines(carry_defined | OF),
        Some(_) => FlagEffect::new(carry_defined, OF),
        None => FlagEffect::new(0, OF),
    }
}

/// SHLD/SHRD.
fn double_shift(instruction: &Instruction, rcx: Option<u64>) -> FlagEffect {
    let bits = operand_bits(instruction);
    match masked_count(instruction, 2, rcx, bits) {
        Some(0) => FlagEffect::NONE,
        Some(count) if count > u64::from(bits) => FlagEffect::new(0, ARITH),
        Some(1) => FlagEffect::new(CF | SF | ZF | PF | OF, AF),
        Some(_) => FlagEffect::new(CF | SF | ZF | PF, AF | OF),
        // A 5-bit count can exceed a 16-bit operand's width.
        None if bits == 16 => FlagEffect::new(0, ARITH),
        None => FlagEffect::new(0, AF | OF),
    }
}

/// CMPS/SCAS, which with a REP prefix and RCX = 0 do nothing.
fn string_compare(instruction: &Instruction, rcx: Option<u64>) -> FlagEffect {
    if !(instruction.has_repe_prefix() || instruction.has_repne_prefix()) {
        return FlagEffect::defines(ARITH);
    }
    let kinds: Vec<OpKind> = (0..instruction.op_count()).map(|operand| instruction.op_kind(operand)).collect();
    // The count register is CX, ECX or RCX by address size.
    let count_mask = if kinds.iter().any(|kind| matches!(kind, OpKind::MemorySegSI | OpKind::MemorySegDI | OpKind::MemoryESDI)) {
        0xFFFF
    } else if kinds.iter().any(|kind| matches!(kind, OpKind::MemorySegESI | OpKind::MemorySegEDI | OpKind::MemoryESEDI)) {
        0xFFFF_FFFF
    } else {
        u64::MAX
    };
    let count = rcx.map(|value| value & count_mask);
    match count {
        Some(0) | None => FlagEffect::NONE,
        Some(_) => FlagEffect::defines(ARITH),
    }
}

/// Whether `instruction` is a string instruction (its memory operands are
/// the implicit [rSI]/[rDI] kinds), telling CMPSD from the SSE CMPSD.
fn is_string(instruction: &Instruction) -> bool {
    (0..instruction.op_count()).any(|operand| {
        matches!(
            instruction.op_kind(operand),
            OpKind::MemorySegSI
                | OpKind::MemorySegESI
                | OpKind::MemorySegRSI
                | OpKind::MemorySegDI
                | OpKind::MemorySegEDI
                | OpKind::MemorySegRDI
                | OpKind::MemoryESDI
                | OpKind::MemoryESEDI
                | OpKind::MemoryESRDI
        )
    })
}

/// Width in bits of operand 0 (register or memory).
fn operand_bits(instruction: &Instruction) -> u32 {
    let bytes = match instruction.op0_kind() {
        OpKind::Register => instruction.op0_register().size(),
        _ => instruction.memory_size().size(),
    };
    (bytes as u32 * 8).clamp(8, 64)
}

/// The shift count in `operand` after masking to 5 bits (6 for 64-bit
/// operands): an immediate, or CL when `rcx` is known.
fn masked_count(instruction: &Instruction, operand: u32, rcx: Option<u64>, bits: u32) -> Option<u64> {
    let mask = if bits == 64 { 0x3F } else { 0x1F };
    let raw = match instruction.op_kind(operand) {
        OpKind::Immediate8 => Some(u64::from(instruction.immediate8())),
        OpKind::Register if instruction.op_register(operand) == Register::CL => rcx.map(|value| value & 0xFF),
        _ => None,
    };
    raw.map(|count| count & mask)
}

#[cfg(test)]
mod tests {
    use iced_x86::{Code, Instruction, MemoryOperand, Register};

    use super::*;

    /// `Instruction::with2(...).unwrap()`.
    macro_rules! instruction2 {
        ($code:expr, $a:expr, $b:expr) => {
            Instruction::with2($code, $a, $b).unwrap()
        };
    }

    #[test]
    fn table_matches_the_sdm_examples() {
        let and = instruction2!(Code::And_rm64_r64, Register::RAX, Register::RCX);
        assert_eq!(effect(&and, None), FlagEffect::new(CF | OF | SF | ZF | PF, AF));
        let mul = Instruction::with1(Code::Mul_rm32, Register::ECX).unwrap();
        assert_eq!(effect(&mul, None), FlagEffect::new(CF | OF, SF | ZF | AF | PF));
        let div = Instruction::with1(Code::Div_rm8, Register::CL).unwrap();
        assert_eq!(effect(&div, None).undefined, ARITH);
        let bsf = instruction2!(Code::Bsf_r32_rm32, Register::EAX, Register::ECX);
        assert_eq!(effect(&bsf, None), FlagEffect::new(ZF, CF | OF | SF | AF | PF));
        let bt = instruction2!(Code::Bt_rm64_imm8, Register::RAX, 3);
        assert_eq!(effect(&bt, None), FlagEffect::new(CF, OF | SF | AF | PF));
        let inc = Instruction::with1(Code::Inc_rm16, Register::AX).unwrap();
        assert_eq!(effect(&inc, None), FlagEffect::defines(OF | SF | ZF | AF | PF));
    }

    #[test]
    fn shift_flags_depend_on_the_count() {
        let by_one = instruction2!(Code::Shl_rm32_1, Register::EAX, 1);
        assert_eq!(effect(&by_one, None), FlagEffect::new(CF | SF | ZF | PF | OF, AF));
        let by_zero = instruction2!(Code::Shl_rm32_imm8, Register::EAX, 32); // masked to 0
        assert_eq!(effect(&by_zero, None), FlagEffect::NONE);
        let by_three = instruction2!(Code::Sar_rm64_imm8, Register::RAX, 3);
        assert_eq!(effect(&by_three, None), FlagEffect::new(CF | SF | ZF | PF, AF | OF));
        // SHL of a byte by 9: CF undefined too.
        let past_width = instruction2!(Code::Shl_rm8_imm8, Register::AL, 9);
        assert_eq!(effect(&past_width, None), FlagEffect::new(SF | ZF | PF, AF | OF | CF));
        let by_cl = instruction2!(Code::Shr_rm64_CL, Register::RAX, Register::CL);
        assert_eq!(effect(&by_cl, None), FlagEffect::new(0, AF | OF));
        assert_eq!(effect(&by_cl, Some(0x40)), FlagEffect::NONE, "count masked to 0");
        assert_eq!(effect(&by_cl, Some(1)), FlagEffect::new(CF | SF | ZF | PF | OF, AF));
        let rotate = instruction2!(Code::Rol_rm16_CL, Register::AX, Register::CL);
        assert_eq!(effect(&rotate, Some(5)), FlagEffect::new(CF, OF));
        let through_carry = instruction2!(Code::Rcr_rm8_imm8, Register::AL, 1);
        assert_eq!(effect(&through_carry, None), FlagEffect::defines(OF));
        let shld = Instruction::with3(Code::Shld_rm16_r16_imm8, Register::AX, Register::CX, 17).unwrap();
        assert_eq!(effect(&shld, None), FlagEffect::new(0, ARITH));
    }

    #[test]
    fn rep_compare_with_zero_count_leaves_flags() {
        let plain = Instruction::with_cmpsb(64, Register::None, iced_x86::RepPrefixKind::None).unwrap();
        assert_eq!(effect(&plain, None), FlagEffect::defines(ARITH));
        let repeated = Instruction::with_repe_cmpsb(64).unwrap();
        assert_eq!(effect(&repeated, None), FlagEffect::NONE);
        assert_eq!(effect(&repeated, Some(0)), FlagEffect::NONE);
        assert_eq!(effect(&repeated, Some(3)), FlagEffect::defines(ARITH));
        // SSE CMPSD is not a string instruction.
        let sse = Instruction::with3(Code::Cmpsd_xmm_xmmm64_imm8, Register::XMM0, Register::XMM1, 0).unwrap();
        assert_eq!(effect(&sse, None), FlagEffect::NONE);
    }

    #[test]
    fn tracker_follows_definitions() {
        let mul = Instruction::with1(Code::Mul_rm64, MemoryOperand::with_base(Register::RBX)).unwrap();
        let add = instruction2!(Code::Add_rm32_r32, Register::EAX, Register::ECX);
        let and = instruction2!(Code::And_rm32_r32, Register::EAX, Register::ECX);
        let inc = Instruction::with1(Code::Inc_rm32, Register::EAX).unwrap();
        let mov = instruction2!(Code::Mov_r32_rm32, Register::EAX, Register::ECX);
        assert_eq!(undefined_flags(&[mul]), SF | ZF | AF | PF);
        assert_eq!(undefined_flags(&[mul, mov]), SF | ZF | AF | PF);
        assert_eq!(undefined_flags(&[mul, add]), 0);
        assert_eq!(undefined_flags(&[and, inc]), 0);
        assert_eq!(undefined_flags(&[inc, and]), AF);
    }

    #[test]
    fn reads_come_from_iced() {
        let adc = instruction2!(Code::Adc_rm32_r32, Register::EAX, Register::ECX);
        assert_eq!(flags_read(&adc), CF);
        let setle = Instruction::with1(Code::Setle_rm8, Register::AL).unwrap();
        assert_eq!(flags_read(&setle), ZF | SF | OF);
    }
}
