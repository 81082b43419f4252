//! Regions: loops and calls within a page run as one native function.
//! Each program runs once with the interpreter alone and once with a
//! translator at a small threshold (so successors are warm when a block
//! becomes hot); both must end in the same state, and the counters show
//! the region was used.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use emu_core::cpu::reg;
use emu_core::interp::{InterruptSource, Interpreter, Step};
use emu_core::Vcpu;
use iced_x86::code_asm::*;

use super::tests::{assemble, machine, CODE};
use super::tests_chain::{stat, to_hlt};
use super::Translator;

fn run(code: &[u8], jit: bool) -> Interpreter {
    let mut cpu = machine(code);
    if jit {
        cpu.set_translator(Box::new(Translator::new().unwrap()));
        cpu.set_jit_threshold(20);
    }
    to_hlt(&mut cpu);
    cpu
}

/// Runs `code` both ways, compares the end states and returns the JIT run.
fn same(code: &[u8]) -> Interpreter {
    let mut interp = run(code, false);
    let mut jit = run(code, true);
    let (a, b) = (Vcpu::state(&mut interp).unwrap(), Vcpu::state(&mut jit).unwrap());
    assert_eq!(a.gpr, b.gpr, "registers (interp, jit)");
    assert_eq!(a.rip, b.rip);
    assert_eq!(a.rflags, b.rflags, "rflags {:#x} vs {:#x}", a.rflags, b.rflags);
    jit
}

/// Native instructions as a share of all retired, in percent.
fn native_share(cpu: &Interpreter) -> u64 {
    stat(cpu, "jit: instructions native") * 100 / cpu.retired().max(1)
}

#[test]
fn a_loop_over_several_blocks_stays_native() {
    let code = super::tests_chain::loop_code(20_000);
    let cpu = same(&code);
    assert!(native_share(&cpu) > 95, "{}% native", native_share(&cpu));
    // The loop's blocks jump to each other inside one function: the
    // dispatcher sees the entries the budget forces, not every block.
    let (entries, runs) = (stat(&cpu, "jit: dispatcher entries"), stat(&cpu, "jit: native block runs"));
    assert!(runs < 200, "{runs} native runs");
    assert!(entries < 200, "{entries} dispatcher entries");
}

#[test]
fn calls_and_returns_within_the_page_stay_native() {
    // The compute ROM's shape: a call to a routine in the same page and a
    // conditional skip, 10,000 times.
    let code = assemble(|a| {
        let mut top = a.create_label();
        let mut skip = a.create_label();
        let mut sub = a.create_label();
        let mut done = a.create_label();
        a.mov(ecx, 10_000)?;
        a.mov(eax, 1)?;
        a.xor(ebx, ebx)?;
        a.mov(r8, 6_364_136_223_846_793_005u64)?;
        a.set_label(&mut top)?;
        a.imul_2(rax, r8)?;
        a.add(rax, 1_442_695_041)?;
        a.mov(rdx, rax)?;
        a.shr(rdx, 33)?;
        a.xor(rbx, rdx)?;
        a.call(sub)?;
        a.test(al, 1)?;
        a.jz(skip)?;
        a.inc(r10)?;
        a.set_label(&mut skip)?;
        a.dec(rcx)?;
        a.jnz(top)?;
        a.jmp(done)?;
        a.set_label(&mut sub)?;
        a.rol(rbx, 5)?;
        a.ret()?;
        a.set_label(&mut done)?;
        Ok(())
    });
    let cpu = same(&code);
    assert!(native_share(&cpu) > 95, "{}% native", native_share(&cpu));
    assert!(stat(&cpu, "jit: hop-table runs") < 100, "returns left the region");
    assert!(stat(&cpu, "jit: native block runs") < 200);
}

#[test]
fn a_block_hot_inside_a_region_enters_it() {
    // `body` joins `top`'s region while the first loop runs; then it is
    // reached 200 times by an indirect jump from outside, hot on its own.
    let code = assemble(|a| {
        let mut top = a.create_label();
        let mut body = a.create_label();
        let mut after = a.create_label();
        let mut done = a.create_label();
        a.mov(ecx, 200)?;
        a.mov(r11d, 201)?;
        a.xor(eax, eax)?;
        a.lea(r9, qword_ptr(body))?;
        a.set_label(&mut top)?;
        a.add(rax, rcx)?;
        a.jmp(body)?;
        a.set_label(&mut body)?;
        a.add(rax, 3)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.set_label(&mut after)?;
        a.dec(r11d)?;
        a.jz(done)?;
        a.mov(ecx, 1)?;
        a.jmp(r9)?;
        a.set_label(&mut done)?;
        Ok(())
    });
    let cpu = same(&code);
    // `top`'s region, `after`'s and the indirect jump's: `body` enters
    // the first instead of being translated again.
    assert!(stat(&cpu, "jit: blocks compiled") <= 3, "{} compiled", stat(&cpu, "jit: blocks compiled"));
    assert!(native_share(&cpu) > 80, "{}% native", native_share(&cpu));
}

#[test]
fn a_region_loop_that_rewrites_itself_runs_the_new_code() {
    // The loop adds an immediate; at ECX = 500 it rewrites that immediate
    // (a store into its own page, inside the region), so the rest of the
    // iterations must add the new value.
    let code = assemble(|a| {
        let mut top = a.create_label();
        let mut body = a.create_label();
        a.mov(ecx, 1000)?;
        a.xor(eax, eax)?;
        a.lea(rdx, qword_ptr(body))?;
        a.set_label(&mut top)?;
        a.cmp(ecx, 500)?;
        a.jne(body)?;
        a.mov(byte_ptr(rdx + 1), 7)?;
        a.set_label(&mut body)?;
        a.add(eax, 1)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        Ok(())
    });
    let mut cpu = same(&code);
    assert_eq!(Interpreter::state(&cpu).gpr[reg::RAX], 500 + 7 * 500);
    assert_eq!(Vcpu::state(&mut cpu).unwrap().gpr[reg::RAX], 500 + 7 * 500);
}

#[test]
fn an_interrupt_leaves_a_region_loop() {
    // A loop of one block jumping to itself, interrupts enabled.
    let code = assemble(|a| {
        let mut one = a.create_label();
        a.sti()?;
        a.set_label(&mut one)?;
        a.inc(rax)?;
        a.inc(rdx)?;
        a.jmp(one)?;
        Ok(())
    });
    let mut cpu = machine(&code);
    cpu.set_translator(Box::new(Translator::new().unwrap()));
    cpu.set_jit_threshold(20);
    let pending = Arc::new(AtomicBool::new(false));
    // The first acknowledge finds nothing (as a spurious INTR would), so
    // the loop runs with the flag up; the next one answers.
    let acks = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let acks2 = Arc::clone(&acks);
    cpu.set_interrupt_source(InterruptSource {
        pending: Arc::clone(&pending),
        acknowledge: Box::new(move || (acks2.fetch_add(1, Ordering::Relaxed) > 0).then_some(5)),
    });
    for _ in 0..100 {
        assert_eq!(cpu.step_block(), Step::Executed);
    }
    // Native and looping: one step runs the whole budget.
    let before = cpu.retired();
    assert_eq!(cpu.step_block(), Step::Executed);
    assert!(cpu.retired() - before > 1000, "not looping natively: {}", cpu.retired() - before);
    // The interrupt arrives: the loop leaves at the first backward jump
    // that looks (one in ATTENTION_EVERY), three instructions a round.
    pending.store(true, Ordering::Release);
    let before = cpu.retired();
    assert_eq!(cpu.step_block(), Step::Executed);
    let most = 3 * u64::from(crate::translate::ATTENTION_EVERY) + 3;
    assert!(cpu.retired() - before <= most, "ran {} instructions with an interrupt pending", cpu.retired() - before);
    assert_eq!(cpu.step_block(), Step::Executed);
    assert_eq!(Interpreter::state(&cpu).rip, 0x9000 + 16 * 5);
    let _ = CODE;
}

#[test]
fn a_hot_loop_gets_its_optimised_translation_and_a_short_one_does_not() {
    use emu_core::interp::HOT_LOOP_BACK_EDGES;
    // Twice the back edges that make a loop hot: the optimised code runs
    // the second half, and the result is the interpreter's.
    let code = super::tests_chain::loop_code(2 * HOT_LOOP_BACK_EDGES);
    let cpu = same(&code);
    assert_eq!(stat(&cpu, "jit: loops optimized"), 1);
    assert!(native_share(&cpu) > 95, "{}% native", native_share(&cpu));

    let code = super::tests_chain::loop_code(HOT_LOOP_BACK_EDGES / 4);
    let cpu = same(&code);
    assert_eq!(stat(&cpu, "jit: loops optimized"), 0);
}

/// A loop of `iterations` that reads and writes a qword in page
/// `0x10_0000 + (iteration >> page_shift & 0x7f) * 4 KiB`, first dropping
/// that page from the TLB when `invlpg`.
fn page_walk(iterations: u32, page_shift: u32, invlpg: bool) -> Vec<u8> {
    assemble(|a| {
        let mut top = a.create_label();
        a.mov(ecx, iterations)?;
        a.xor(eax, eax)?;
        a.set_label(&mut top)?;
        a.mov(esi, ecx)?;
        a.shr(esi, page_shift)?;
        a.and(esi, 0x7f)?;
        a.shl(esi, 12)?;
        a.add(esi, 0x10_0000)?;
        if invlpg {
            a.invlpg(byte_ptr(rsi))?;
        }
        a.add(rax, qword_ptr(rsi + 8))?;
        a.mov(qword_ptr(rsi + 8), rcx)?;
        a.dec(ecx)?;
        a.jne(top)?;
        Ok(())
    })
}

#[test]
fn an_optimised_loop_leaves_its_tlb_misses_to_the_interpreter() {
    use emu_core::interp::HOT_LOOP_BACK_EDGES;
    // A new page every 1,024 iterations: the optimised code finds each
    // one missing from the TLB once, leaves that access to the
    // interpreter and runs on once it is filled.
    let cpu = same(&page_walk(2 * HOT_LOOP_BACK_EDGES, 10, false));
    assert_eq!(stat(&cpu, "jit: loops optimized"), 1);
    let misses = stat(&cpu, "jit: TLB misses left to the interpreter");
    assert!((1..=128).contains(&misses), "{misses} misses left to the interpreter");
    assert_eq!(stat(&cpu, "jit: loops compiled again for their misses"), 0);
    assert!(native_share(&cpu) > 95, "{}% native", native_share(&cpu));
}

#[test]
fn a_loop_that_keeps_missing_is_compiled_again_with_helpers() {
    use emu_core::interp::{HOT_LOOP_BACK_EDGES, MISS_EXITS_BEFORE_HELPERS};
    // INVLPG before every access: each run of the optimised code would
    // leave at its first access. After the limit the loop is compiled
    // again, with helper calls for misses, and stays native.
    let cpu = same(&page_walk(3 * HOT_LOOP_BACK_EDGES, 4, true));
    assert_eq!(stat(&cpu, "jit: TLB misses left to the interpreter"), u64::from(MISS_EXITS_BEFORE_HELPERS));
    assert_eq!(stat(&cpu, "jit: loops compiled again for their misses"), 1);
    assert_eq!(stat(&cpu, "jit: loops optimized"), 2);
    assert!(native_share(&cpu) > 90, "{}% native", native_share(&cpu));
}

#[test]
fn a_loop_writing_data_beside_its_code_keeps_its_code() {
    // The loop stores to a quadword in its own page, before its code: the
    // write drops no block (it overwrites none), so the loop stays native.
    let code = assemble(|a| {
        let mut start = a.create_label();
        let mut data = a.create_label();
        let mut top = a.create_label();
        a.jmp(start)?;
        a.set_label(&mut data)?;
        a.db(&[0; 8])?;
        a.set_label(&mut start)?;
        a.mov(ecx, 20_000)?;
        a.xor(eax, eax)?;
        a.lea(rdx, qword_ptr(data))?;
        a.set_label(&mut top)?;
        a.mov(qword_ptr(rdx), rcx)?;
        a.add(rax, qword_ptr(rdx))?;
        a.dec(ecx)?;
        a.jnz(top)?;
        Ok(())
    });
    let cpu = same(&code);
    assert!(native_share(&cpu) > 95, "{}% native", native_share(&cpu));
    let dropped = stat(&cpu, "blocks dropped by writes");
    assert!(dropped < 5, "{dropped} blocks dropped by writes");
}

#[test]
fn a_miss_that_faults_leaves_the_state_before_the_access() {
    use super::tests::{HANDLERS, HOLE, READ_ONLY};
    use emu_core::interp::HOT_LOOP_BACK_EDGES;
    // Once optimised, the loop reads (then writes) a page that is not
    // present (read-only): the miss leaves the access to the interpreter,
    // which raises #PF with the state before the instruction.
    for (target, write) in [(HOLE, false), (READ_ONLY, true)] {
        let code = assemble(|a| {
            let mut top = a.create_label();
            a.mov(ecx, 2 * HOT_LOOP_BACK_EDGES)?;
            a.xor(eax, eax)?;
            a.mov(rdi, target)?;
            a.set_label(&mut top)?;
            a.mov(esi, 0x10_0000)?;
            a.cmp(ecx, 100)?;
            a.cmove(rsi, rdi)?;
            if write {
                a.mov(qword_ptr(rsi + 8), rcx)?;
            } else {
                a.add(rax, qword_ptr(rsi + 8))?;
            }
            a.add(rax, rcx)?;
            a.dec(ecx)?;
            a.jne(top)?;
            Ok(())
        });
        let mut cpu = same(&code);
        assert_eq!(stat(&cpu, "jit: loops optimized"), 1);
        let state = Vcpu::state(&mut cpu).unwrap();
        assert_eq!(state.rip, HANDLERS + 16 * 14 + 1, "#PF");
        assert_eq!(state.gpr[reg::RCX], 100);
        assert_eq!(state.cr2, target + 8);
    }
}
