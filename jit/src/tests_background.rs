//! The compiler thread ([`Background`]): translations held in flight
//! (through its [`Gate`]) while the block they were made for is dropped
//! (self-modifying code) or the whole code cache is flushed must never be
//! run; results match the plain interpreter.

use std::time::Duration;

use emu_core::cpu::reg;
use emu_core::interp::{Interpreter, Step};
use emu_core::Vcpu;
use iced_x86::code_asm::*;

use super::tests::{assemble, machine};
use super::tests_chain::{loop_code, stat};
use super::{Background, Gate, Translator};

fn background_machine(code: &[u8]) -> (Interpreter, Gate) {
    let mut cpu = machine(code);
    let bg = Background::new(Translator::new().unwrap()).unwrap();
    let gate = bg.gate();
    cpu.set_translator(Box::new(bg));
    cpu.set_jit_threshold(10);
    (cpu, gate)
}

/// The state `code` ends in at its `halts`-th HLT under the interpreter
/// alone.
fn interpreted(code: &[u8], halts: u32) -> emu_core::cpu::CpuState {
    let mut plain = machine(code);
    run_phases(&mut plain, None, halts, &mut |_, _| {});
    Vcpu::state(&mut plain).unwrap()
}

/// Runs to the `n`-th HLT (resuming after the earlier ones), calling
/// `at_halt` at each; with a gate, waits for the compiler whenever a job
/// was queued and the gate is open, so the test does not depend on timing.
fn run_phases(cpu: &mut Interpreter, gate: Option<&Gate>, halts: u32, at_halt: &mut dyn FnMut(&mut Interpreter, u32)) {
    let mut seen = 0;
    let mut jobs = 0;
    for _ in 0..1_000_000 {
        match cpu.step_block() {
            Step::Executed => {}
            Step::Halted => {
                seen += 1;
                at_halt(cpu, seen);
                if seen == halts {
                    return;
                }
                cpu.state_mut().halted = false;
            }
            Step::Stopped(r) => panic!("stopped: {r:?}"),
        }
        if let Some(g) = gate {
            let now = stat(cpu, "jit: background jobs");
            if now != jobs {
                jobs = now;
                if !g.held_now() {
                    assert!(g.settle(Duration::from_secs(20)), "the compiler thread did not finish");
                }
            }
        }
    }
    panic!("HLT {halts} not reached");
}

#[test]
fn block_dropped_while_in_flight_never_runs_stale_code() {
    // `body` adds 1 fifty times and gets hot; while its translation is
    // held in flight the code patches it to add 7 and loops again.
    let code = assemble(|a| {
        let mut again = a.create_label();
        let mut body = a.create_label();
        let mut done = a.create_label();
        a.xor(eax, eax)?;
        a.xor(r8d, r8d)?;
        a.set_label(&mut again)?;
        a.mov(ecx, 50)?;
        a.lea(rdx, qword_ptr(body))?;
        a.set_label(&mut body)?;
        a.add(eax, 1)?;
        a.dec(ecx)?;
        a.jne(body)?;
        a.hlt()?;
        a.test(r8d, r8d)?;
        a.jne(done)?;
        a.inc(r8d)?;
        a.mov(byte_ptr(rdx + 1), 7)?;
        a.hlt()?;
        a.jmp(again)?;
        a.set_label(&mut done)?;
        Ok(())
    });
    let expected = interpreted(&code, 4);
    assert_eq!(expected.gpr[reg::RAX], 50 + 50 * 7);

    let (mut cpu, gate) = background_machine(&code);
    gate.hold();
    let g = gate.clone();
    run_phases(&mut cpu, Some(&gate), 4, &mut |cpu, n| match n {
        1 => {
            assert!(stat(cpu, "jit: background jobs") >= 1, "nothing queued");
            assert_eq!(stat(cpu, "jit: native block runs"), 0);
        }
        // The patch dropped `body`: now let its old translation finish.
        2 => {
            g.release();
            assert!(g.settle(Duration::from_secs(20)));
        }
        _ => {}
    });
    let s = Vcpu::state(&mut cpu).unwrap();
    assert_eq!(s.gpr, expected.gpr);
    assert_eq!(s.rip, expected.rip);
    assert!(stat(&cpu, "jit: background discarded") >= 1, "the stale translation was not discarded");
    assert!(stat(&cpu, "jit: background installed") >= 1, "nothing installed");
    assert!(stat(&cpu, "jit: native block runs") > 0, "nothing ran natively");
}

#[test]
fn flush_while_translations_are_in_flight() {
    let code = loop_code(3000);
    let expected = interpreted(&code, 1);

    let (mut cpu, gate) = background_machine(&code);
    gate.hold();
    // Until something is queued, then flush with it in flight.
    for _ in 0..10_000 {
        if stat(&cpu, "jit: background jobs") > 0 {
            break;
        }
        assert_eq!(cpu.step_block(), Step::Executed);
    }
    assert!(stat(&cpu, "jit: background jobs") > 0);
    cpu.state_changed();
    assert_eq!(cpu.step_block(), Step::Executed);
    gate.release();
    assert!(gate.settle(Duration::from_secs(20)));
    run_phases(&mut cpu, Some(&gate), 1, &mut |_, _| {});
    let s = Vcpu::state(&mut cpu).unwrap();
    assert_eq!(s.gpr, expected.gpr);
    assert_eq!(s.rip, expected.rip);
    assert!(stat(&cpu, "jit: code flushes") >= 1);
    // The job in flight was either compiled for the old generation and its
    // answer dropped, or dropped by the flush before it was compiled.
    let gone = stat(&cpu, "jit: stale answers dropped") + stat(&cpu, "jit: jobs dropped by flushes");
    assert!(gone >= 1, "the old generation's answer was used");
    assert!(stat(&cpu, "jit: native block runs") > 0, "nothing ran natively");
}

#[test]
fn blocks_inside_a_region_in_flight_wait_for_it() {
    // The loop's three blocks get hot together; while the region made
    // from the first is held in flight, the others (the one inside it that
    // is no entry among them) wait for it instead of being queued alone.
    let code = loop_code(3000);
    let expected = interpreted(&code, 1);

    let (mut cpu, gate) = background_machine(&code);
    gate.hold();
    for _ in 0..600 {
        assert_eq!(cpu.step_block(), Step::Executed);
    }
    assert_eq!(stat(&cpu, "jit: background jobs"), 1, "a block of the pending region was queued alone");
    gate.release();
    assert!(gate.settle(Duration::from_secs(20)));
    run_phases(&mut cpu, Some(&gate), 1, &mut |_, _| {});
    let s = Vcpu::state(&mut cpu).unwrap();
    assert_eq!(s.gpr, expected.gpr);
    assert_eq!(stat(&cpu, "jit: background jobs"), 1);
    assert!(stat(&cpu, "jit: native block runs") > 0, "nothing ran natively");
}
