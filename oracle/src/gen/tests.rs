//! Tests of the generator, including running many generated snippets on
//! the host.

use std::collections::BTreeSet;

use iced_x86::Mnemonic;

use super::*;
use crate::flags::FlagTracker;
use crate::layout::{in_data_region, CODE_BASE, SNIPPET_ADDR};
use crate::native::{Exception, NativeRunner, Outcome};

#[test]
fn generation_is_deterministic_per_seed() {
    let cases = |seed| {
        let mut generator = Generator::with_config(seed, GenConfig::baseline());
        (0..5).map(|_| generator.case(16)).collect::<Vec<_>>()
    };
    assert_eq!(cases(7), cases(7));
    assert_ne!(cases(7), cases(8));
}

#[test]
fn initial_states_point_at_the_data_region() {
    let mut generator = Generator::new(1);
    for _ in 0..100 {
        let state = generator.initial_state();
        assert_eq!(state.gpr[reg::RBX], DATA_BASE);
        assert_eq!(state.gpr[reg::RSP], STACK_TOP);
        assert_eq!(state.rflags & !(rflags::ARITH | rflags::DF), rflags::FIXED);
        assert_eq!(state.mxcsr & 0x1F80, 0x1F80, "all SIMD exceptions masked");
    }
}

#[test]
fn snippets_never_name_rbx_or_rsp_explicitly() {
    let mut generator = Generator::new(2);
    for _ in 0..300 {
        let snippet = generator.snippet(20);
        for instruction in &snippet.instructions {
            for operand in 0..instruction.op_count() {
                if instruction.op_kind(operand) == iced_x86::OpKind::Register {
                    let full = instruction.op_register(operand).full_register();
                    assert!(full != Register::RBX && full != Register::RSP, "{snippet:?}");
                }
            }
            if instruction.memory_base() != Register::None && instruction.mnemonic() != Mnemonic::Lea {
                assert_eq!(instruction.memory_base(), Register::RBX, "{}", snippet.description);
            }
        }
    }
}

#[test]
fn no_instruction_reads_an_undefined_flag() {
    let mut generator = Generator::new(3);
    for _ in 0..500 {
        let snippet = generator.snippet(24);
        let mut tracker = FlagTracker::new();
        for instruction in &snippet.instructions {
            assert_eq!(flags::flags_read(instruction) & tracker.undefined(), 0, "{}", snippet.description);
            tracker.step(instruction, None);
        }
        assert_eq!(tracker.undefined(), snippet.undefined_flags);
    }
}

#[test]
fn every_group_is_generated() {
    let mut generator = Generator::new(4);
    let mut mnemonics = BTreeSet::new();
    for _ in 0..2_000 {
        for instruction in generator.snippet(8).instructions {
            mnemonics.insert(format!("{:?}", instruction.mnemonic()));
        }
    }
    let expected = [
        "Add", "Adc", "Sub", "Sbb", "And", "Or", "Xor", "Cmp", "Test", "Inc", "Dec", "Neg", "Not", "Mov", "Movzx", "Movsx",
        "Movsxd", "Lea", "Xchg", "Cmove", "Setb", "Bswap", "Cbw", "Cqo", "Shl", "Shr", "Sar", "Rol", "Ror", "Rcl", "Rcr",
        "Shld", "Shrd", "Mul", "Imul", "Div", "Idiv", "Bt", "Bts", "Btr", "Btc", "Bsf", "Bsr", "Xadd", "Cmpxchg",
        "Cmpxchg8b", "Clc", "Stc", "Cmc", "Push", "Pop", "Pushfq", "Popfq", "Movsb", "Stosq", "Lodsw", "Scasd", "Cmpsb",
        "Paddd", "Pxor", "Addps", "Mulpd", "Movdqa",
    ];
    for mnemonic in expected {
        assert!(mnemonics.contains(mnemonic), "{mnemonic} never generated");
    }
    let config = generator.config();
    let optional: [(bool, &[&str]); 3] = [
        (config.ssse3, &["Pshufb", "Phaddw", "Palignr", "Pabsd"]),
        (config.sse41, &["Ptest", "Pblendvb", "Roundsd", "Dpps", "Pmovzxbw", "Pextrb", "Insertps", "Movntdqa"]),
        (config.sse42, &["Pcmpgtq", "Pcmpestri", "Pcmpistrm", "Crc32"]),
    ];
    for (enabled, names) in optional {
        for mnemonic in names.iter().filter(|_| enabled) {
            assert!(mnemonics.contains(*mnemonic), "{mnemonic} never generated");
        }
    }
}

/// The main property: thousands of random snippets run natively, only
/// ever fault with #DE (from DIV/IDIV) or #GP (from a misaligned SSE
/// operand), keep RBX and a sane RSP, and give the same result when run
/// twice.
#[test]
fn random_snippets_run_natively_inside_the_regions() {
    const CASES: usize = 2_000;
    let mut generator = Generator::new(0x00C0_FFEE);
    let mut runner = NativeRunner::new().unwrap();
    let (mut completed, mut divide_errors, mut misaligned) = (0, 0, 0);
    for case_number in 0..CASES {
        let case = generator.case(1 + case_number % 32);
        let outcome = runner.run(&case.snippet.bytes, &case.state, &case.data).unwrap();
        let context = || format!("case {case_number}:\n{}", case.snippet.description);
        match &outcome {
            Outcome::Completed(state, _) => {
                completed += 1;
                assert_eq!(state.gpr[reg::RBX], DATA_BASE, "{}", context());
                assert!(in_data_region(state.gpr[reg::RSP]), "{}", context());
            }
            Outcome::Fault(fault) => {
                let offset = fault.snippet_offset().unwrap_or_else(|| panic!("fault outside the snippet at {:#x} (code base {CODE_BASE:#x})", fault.rip));
                let faulting = case.snippet.instructions.iter().find(|i| i.ip() == SNIPPET_ADDR + offset).unwrap();
                if fault.exception == Exception::GeneralProtection {
                    misaligned += 1;
                    assert!(faulting.memory_displacement64() % 16 != 0, "{fault}\n{}", context());
                } else {
                    divide_errors += 1;
                    assert_eq!(fault.exception, Exception::DivideError, "{fault}\n{}", context());
                    assert!(matches!(faulting.mnemonic(), Mnemonic::Div | Mnemonic::Idiv), "{}", context());
                }
            }
        }
        if case_number % 10 == 0 {
            let again = runner.run(&case.snippet.bytes, &case.state, &case.data).unwrap();
            assert_eq!(outcome, again, "{}", context());
        }
    }
    assert!(completed > CASES / 2, "{completed} completed, {divide_errors} divide errors, {misaligned} misaligned");
    assert!(divide_errors > 0, "DIV/IDIV should fault now and then");
}

#[test]
fn snippets_decode_from_their_bytes() {
    let mut generator = Generator::new(5);
    let snippet = generator.snippet(40);
    let decoded = Snippet::from_bytes(&snippet.bytes).unwrap();
    assert_eq!(decoded, snippet);
    assert_eq!(snippet.description.lines().count(), snippet.instruction_count);
    assert!(Snippet::from_bytes(&[0x0F, 0x0B, 0x06]).is_err(), "PUSH ES is invalid in 64-bit mode");
}

#[test]
fn baseline_config_avoids_optional_extensions() {
    let mut generator = Generator::with_config(6, GenConfig::baseline());
    for _ in 0..1_000 {
        for instruction in generator.snippet(8).instructions {
            assert!(!matches!(
                instruction.mnemonic(),
                Mnemonic::Lzcnt | Mnemonic::Tzcnt | Mnemonic::Popcnt | Mnemonic::Cmpxchg16b | Mnemonic::Lahf | Mnemonic::Sahf
            ));
        }
    }
}
