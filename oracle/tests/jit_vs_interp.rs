//! Differential test of the JIT tier: random snippets run block by block
//! in the interpreter and in the interpreter with the Cranelift translator
//! attached (every block translated at first sight, both ways of keeping
//! registers in turn: `jit::RegisterHome`, and the first tier compiled by
//! the baseline backend and by Cranelift in turn); final registers,
//! flags (exactly, undefined ones too: both use the same semantics), data
//! and exceptions must agree. `POPEK_ORACLE_COUNT` sets the number of
//! cases (default 2,000), `POPEK_ORACLE_SEED` the seed, `POPEK_ORACLE_LEN`
//! the longest snippet (default 16 instructions).

use oracle::guest::{interpreter_config, jit_differential};
use oracle::Generator;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

#[test]
fn jit_matches_interpreter() {
    let count = env_number("POPEK_ORACLE_COUNT", 2_000);
    let seed = env_number("POPEK_ORACLE_SEED", 0x5EED);
    let longest = env_number("POPEK_ORACLE_LEN", 16).max(1);
    let mut generator = Generator::with_config(seed, interpreter_config());
    eprintln!("{count} cases, seed {seed:#x}");
    let mut failures = Vec::new();
    for case_number in 0..count {
        let case = generator.case(1 + (case_number % longest) as usize);
        let mut translator = jit::Translator::new().expect("cranelift supports this host");
        // Every other case keeps registers in Cranelift values, as
        // optimised code does; the rest in memory, as first-tier code.
        if case_number % 2 == 1 {
            translator.set_register_home(jit::RegisterHome::Values);
        }
        // Two cases in four have the first tier compiled by Cranelift,
        // the others by the baseline backend (the default).
        translator.set_baseline(case_number % 4 < 2);
        if let Err(mismatch) = jit_differential(&case, Box::new(translator)) {
            failures.push(format!("case {case_number} (seed {seed:#x}):\n{mismatch}"));
            if failures.len() >= 5 {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{} failing case(s), first ones:\n\n{}", failures.len(), failures.join("\n"));
}
