//! Differential test: random snippets in the interpreter against the host
//! CPU. `POPEK_ORACLE_COUNT` sets the number of cases (default 2,000),
//! `POPEK_ORACLE_SEED` the seed, `POPEK_ORACLE_LEN` the longest snippet
//! (default 16 instructions). The instruction mix is what both the host
//! and the interpreter's CPUID model support (`POPEK_ORACLE_SSE=1` adds
//! SSE/SSE2 even before the model advertises it).

use oracle::guest::{differential, interpreter_config};
use oracle::{GenConfig, Generator, NativeRunner};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

#[test]
fn interpreter_matches_host() {
    let count = env_number("POPEK_ORACLE_COUNT", 2_000);
    let seed = env_number("POPEK_ORACLE_SEED", 0x5EED);
    let longest = env_number("POPEK_ORACLE_LEN", 16).max(1);
    let mut config = interpreter_config();
    if env_number("POPEK_ORACLE_SSE", 0) != 0 {
        config.sse = GenConfig::for_host().sse;
    }
    let mut generator = Generator::with_config(seed, config);
    eprintln!("{count} cases, seed {seed:#x}, {config:?}");
    let mut runner = NativeRunner::new().expect("the oracle's fixed regions can be mapped");
    let mut failures = Vec::new();
    for case_number in 0..count {
        let case = generator.case(1 + (case_number % longest) as usize);
        if let Err(mismatch) = differential(&mut runner, &case) {
            failures.push(format!("case {case_number} (seed {seed:#x}):\n{mismatch}"));
            if failures.len() >= 5 {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{} failing case(s), first ones:\n\n{}", failures.len(), failures.join("\n"));
}
