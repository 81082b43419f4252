//! The whitelist of instruction forms the generator draws from.
//!
//! Forms are selected by mnemonic from iced's full `Code` table, keeping
//! every encoding that is valid in 64-bit mode, uses the legacy encoding,
//! and whose operands the generator knows how to fill (see
//! [`fillable`]). So a mnemonic brings all its operand sizes (8/16/32/64)
//! and forms (r/m,r; r,r/m; r/m,imm; accumulator,imm; by 1/CL/imm8...) at
//! once.

use iced_x86::{Code, CpuidFeature, EncodingKind, Mnemonic, OpCodeOperandKind};

use crate::gen::GenConfig;

/// A set of forms drawn with equal probability as a whole (so the 16
/// CMOVcc mnemonics together weigh as much as ADD).
#[derive(Clone, Debug)]
pub(crate) struct Group {
    pub name: &'static str,
    pub kind: GroupKind,
    pub codes: Vec<Code>,
}

/// How a group's instructions are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GroupKind {
    /// Operands filled from the opcode's operand kinds.
    Generic,
    /// MOVS/STOS/LODS/SCAS/CMPS with RSI/RDI/RCX set up first.
    String,
    /// POPF, preceded by a push of a sanitized flags image.
    Popf,
}

use Mnemonic as M;

/// Integer groups, always available (subject to the host's CPUID).
const INTEGER_GROUPS: &[(&str, &[Mnemonic])] = &[
    ("add", &[M::Add]),
    ("adc", &[M::Adc]),
    ("sub", &[M::Sub]),
    ("sbb", &[M::Sbb]),
    ("and", &[M::And]),
    ("or", &[M::Or]),
    ("xor", &[M::Xor]),
    ("cmp", &[M::Cmp]),
    ("test", &[M::Test]),
    ("inc/dec", &[M::Inc, M::Dec]),
    ("neg/not", &[M::Neg, M::Not]),
    ("mov", &[M::Mov]),
    ("movzx/movsx", &[M::Movzx, M::Movsx, M::Movsxd]),
    ("lea", &[M::Lea]),
    ("xchg", &[M::Xchg]),
    (
        "cmovcc",
        &[
            M::Cmovo, M::Cmovno, M::Cmovb, M::Cmovae, M::Cmove, M::Cmovne, M::Cmovbe, M::Cmova, M::Cmovs, M::Cmovns, M::Cmovp,
            M::Cmovnp, M::Cmovl, M::Cmovge, M::Cmovle, M::Cmovg,
        ],
    ),
    (
        "setcc",
        &[
            M::Seto, M::Setno, M::Setb, M::Setae, M::Sete, M::Setne, M::Setbe, M::Seta, M::Sets, M::Setns, M::Setp, M::Setnp,
            M::Setl, M::Setge, M::Setle, M::Setg,
        ],
    ),
    ("bswap", &[M::Bswap]),
    ("convert", &[M::Cbw, M::Cwde, M::Cdqe, M::Cwd, M::Cdq, M::Cqo]),
    ("shift", &[M::Shl, M::Shr, M::Sar]),
    ("rotate", &[M::Rol, M::Ror]),
    ("rotate-carry", &[M::Rcl, M::Rcr]),
    ("shld/shrd", &[M::Shld, M::Shrd]),
    ("mul", &[M::Mul]),
    ("imul", &[M::Imul]),
    ("div/idiv", &[M::Div, M::Idiv]),
    ("bt", &[M::Bt, M::Bts, M::Btr, M::Btc]),
    ("bsf/bsr", &[M::Bsf, M::Bsr]),
    ("lzcnt", &[M::Lzcnt]),
    ("tzcnt", &[M::Tzcnt]),
    ("popcnt", &[M::Popcnt]),
    ("xadd", &[M::Xadd]),
    ("cmpxchg", &[M::Cmpxchg]),
    ("cmpxchg8b/16b", &[M::Cmpxchg8b, M::Cmpxchg16b]),
    ("carry", &[M::Clc, M::Stc, M::Cmc]),
    ("lahf/sahf", &[M::Lahf, M::Sahf]),
    ("push/pop", &[M::Push, M::Pop]),
    ("pushf", &[M::Pushf, M::Pushfq]),
];

/// SSE/SSE2 groups whose results are bit-exact on every x86-64 CPU
/// (no RCPPS/RSQRTPS approximations).
const SSE_GROUPS: &[(&str, &[Mnemonic])] = &[
    ("sse-move", &[M::Movdqa, M::Movdqu, M::Movaps, M::Movups, M::Movapd, M::Movupd, M::Movd, M::Movq, M::Movss, M::Movsd]),
    (
        "sse-int-arith",
        &[
            M::Paddb, M::Paddw, M::Paddd, M::Paddq, M::Psubb, M::Psubw, M::Psubd, M::Psubq, M::Paddsb, M::Paddsw, M::Paddusb,
            M::Paddusw, M::Psubsb, M::Psubsw, M::Psubusb, M::Psubusw, M::Pmullw, M::Pmulhw, M::Pmulhuw, M::Pmuludq,
            M::Pmaddwd, M::Pavgb, M::Pavgw, M::Pminub, M::Pmaxub, M::Pminsw, M::Pmaxsw, M::Psadbw,
        ],
    ),
    ("sse-logic", &[M::Pand, M::Pandn, M::Por, M::Pxor, M::Andps, M::Andpd, M::Andnps, M::Andnpd, M::Orps, M::Orpd, M::Xorps, M::Xorpd]),
    ("sse-compare", &[M::Pcmpeqb, M::Pcmpeqw, M::Pcmpeqd, M::Pcmpgtb, M::Pcmpgtw, M::Pcmpgtd]),
    (
        "sse-shuffle",
        &[
            M::Punpcklbw, M::Punpcklwd, M::Punpckldq, M::Punpcklqdq, M::Punpckhbw, M::Punpckhwd, M::Punpckhdq, M::Punpckhqdq,
            M::Packsswb, M::Packssdw, M::Packuswb, M::Pshufd, M::Pshuflw, M::Pshufhw, M::Unpcklps, M::Unpckhps, M::Unpcklpd,
            M::Unpckhpd, M::Shufps, M::Shufpd,
        ],
    ),
    (
        "sse-shift",
        &[M::Psllw, M::Pslld, M::Psllq, M::Psrlw, M::Psrld, M::Psrlq, M::Psraw, M::Psrad, M::Pslldq, M::Psrldq],
    ),
    (
        "sse-float",
        &[
            M::Addps, M::Addpd, M::Addss, M::Addsd, M::Subps, M::Subpd, M::Subss, M::Subsd, M::Mulps, M::Mulpd, M::Mulss,
            M::Mulsd, M::Divps, M::Divpd, M::Divss, M::Divsd, M::Sqrtps, M::Sqrtpd, M::Sqrtss, M::Sqrtsd, M::Minps, M::Minpd,
            M::Minss, M::Minsd, M::Maxps, M::Maxpd, M::Maxss, M::Maxsd,
        ],
    ),
    ("sse-convert", &[M::Cvtdq2ps, M::Cvtps2dq, M::Cvttps2dq, M::Cvtdq2pd, M::Cvtpd2ps, M::Cvtps2pd, M::Cvtsd2ss, M::Cvtss2sd]),
    ("sse-flags", &[M::Comiss, M::Comisd, M::Ucomiss, M::Ucomisd]),
];

/// SSSE3 groups (the MMX forms are left out: the oracle's state has no
/// MMX registers).
const SSSE3_GROUPS: &[(&str, &[Mnemonic])] = &[
    ("ssse3-shuffle", &[M::Pshufb, M::Palignr]),
    ("ssse3-horizontal", &[M::Phaddw, M::Phaddd, M::Phaddsw, M::Phsubw, M::Phsubd, M::Phsubsw]),
    ("ssse3-arith", &[M::Pmaddubsw, M::Pmulhrsw, M::Psignb, M::Psignw, M::Psignd, M::Pabsb, M::Pabsw, M::Pabsd]),
];

/// SSE4.1 groups.
const SSE41_GROUPS: &[(&str, &[Mnemonic])] = &[
    ("sse41-blend", &[M::Pblendvb, M::Blendps, M::Blendpd, M::Blendvps, M::Blendvpd, M::Pblendw]),
    (
        "sse41-int",
        &[
            M::Ptest, M::Pmuldq, M::Pmulld, M::Pcmpeqq, M::Packusdw, M::Pminsb, M::Pminsd, M::Pminuw, M::Pminud, M::Pmaxsb,
            M::Pmaxsd, M::Pmaxuw, M::Pmaxud, M::Phminposuw, M::Mpsadbw,
        ],
    ),
    (
        "sse41-pmov",
        &[
            M::Pmovsxbw, M::Pmovsxbd, M::Pmovsxbq, M::Pmovsxwd, M::Pmovsxwq, M::Pmovsxdq, M::Pmovzxbw, M::Pmovzxbd, M::Pmovzxbq,
            M::Pmovzxwd, M::Pmovzxwq, M::Pmovzxdq,
        ],
    ),
    ("sse41-round", &[M::Roundps, M::Roundpd, M::Roundss, M::Roundsd]),
    ("sse41-dot", &[M::Dpps, M::Dppd]),
    (
        "sse41-insert-extract",
        &[M::Insertps, M::Extractps, M::Pinsrb, M::Pinsrd, M::Pinsrq, M::Pextrb, M::Pextrw, M::Pextrd, M::Pextrq],
    ),
    ("sse41-load", &[M::Movntdqa]),
];

/// SSE4.2 groups (POPCNT has its own flag).
const SSE42_GROUPS: &[(&str, &[Mnemonic])] = &[
    ("sse42-pcmpgtq", &[M::Pcmpgtq]),
    ("sse42-string", &[M::Pcmpestri, M::Pcmpestri64, M::Pcmpestrm, M::Pcmpestrm64, M::Pcmpistri, M::Pcmpistrm]),
    ("sse42-crc32", &[M::Crc32]),
];

/// Forms excluded although they pass the filters, and why.
const EXCLUDED: &[Code] = &[
    // BSWAP of a 16-bit register is undefined.
    Code::Bswap_r16,
    // The undocumented TEST aliases (F6 /1, F7 /1).
    Code::Test_rm8_imm8_F6r1,
    Code::Test_rm16_imm16_F7r1,
    Code::Test_rm32_imm32_F7r1,
    Code::Test_rm64_imm32_F7r1,
    // A 16-bit SHLD/SHRD by CL may shift by more than 16, leaving the
    // result undefined; the imm8 forms are generated with counts <= 16.
    Code::Shld_rm16_r16_CL,
    Code::Shrd_rm16_r16_CL,
];

/// Builds the groups allowed by `config`.
pub(crate) fn groups(config: &GenConfig) -> Vec<Group> {
    let mut groups: Vec<Group> = INTEGER_GROUPS
        .iter()
        .chain(if config.sse { SSE_GROUPS } else { &[] })
        .chain(if config.ssse3 { SSSE3_GROUPS } else { &[] })
        .chain(if config.sse41 { SSE41_GROUPS } else { &[] })
        .chain(if config.sse42 { SSE42_GROUPS } else { &[] })
        .filter_map(|&(name, mnemonics)| {
            let codes: Vec<Code> = Code::values().filter(|&code| mnemonics.contains(&code.mnemonic()) && usable(code, config)).collect();
            (!codes.is_empty()).then_some(Group { name, kind: GroupKind::Generic, codes })
        })
        .collect();
    groups.push(Group { name: "string", kind: GroupKind::String, codes: Vec::new() });
    groups.push(Group { name: "popf", kind: GroupKind::Popf, codes: vec![Code::Popfq, Code::Popfw] });
    groups
}

/// Whether `code` can be generated for this host and configuration.
fn usable(code: Code, config: &GenConfig) -> bool {
    let op_code = code.op_code();
    op_code.is_instruction()
        && op_code.mode64()
        && op_code.encoding() == EncodingKind::Legacy
        && !EXCLUDED.contains(&code)
        && op_code.op_kinds().iter().all(|&kind| fillable(kind))
        && code.cpuid_features().iter().all(|&feature| feature_available(feature, config))
        && (!matches!(code.mnemonic(), M::Lahf | M::Sahf) || config.lahf_sahf)
}

/// Operand kinds the generic builder fills.
pub(crate) fn fillable(kind: OpCodeOperandKind) -> bool {
    use OpCodeOperandKind as K;
    matches!(
        kind,
        K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r64_or_mem
            | K::r8_reg
            | K::r8_opcode
            | K::r16_reg
            | K::r16_opcode
            | K::r16_rm
            | K::r32_reg
            | K::r32_opcode
            | K::r32_rm
            | K::r64_reg
            | K::r64_opcode
            | K::r64_rm
            | K::mem
            | K::xmm_reg
            | K::xmm_rm
            | K::xmm_or_mem
            | K::al
            | K::cl
            | K::ax
            | K::eax
            | K::rax
            | K::imm8
            | K::imm8_const_1
            | K::imm8sex16
            | K::imm8sex32
            | K::imm8sex64
            | K::imm16
            | K::imm32
            | K::imm32sex64
            | K::imm64
    )
}

/// Whether a CPUID feature is usable under `config` (baseline x86-64
/// features always are).
fn feature_available(feature: CpuidFeature, config: &GenConfig) -> bool {
    use CpuidFeature as F;
    match feature {
        F::INTEL8086 | F::INTEL186 | F::INTEL286 | F::INTEL386 | F::INTEL486 | F::X64 | F::CMOV | F::CX8 => true,
        F::SSE | F::SSE2 => config.sse,
        F::SSSE3 => config.ssse3,
        F::SSE4_1 => config.sse41,
        F::SSE4_2 => config.sse42,
        F::CMPXCHG16B => config.cmpxchg16b,
        F::LZCNT => config.lzcnt,
        F::BMI1 => config.tzcnt,
        F::POPCNT => config.popcnt,
        _ => false,
    }
}
