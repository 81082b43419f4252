//! Chaining between native blocks (translated one block at a time): links, the hop table, invalidation
//! (self-modifying code, code-cache flushes) and bounded latency for
//! interrupts. Results are checked against the plain interpreter
//! (`same_with`) and the tier's counters show the chain was used.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use emu_core::cpu::reg;
use emu_core::interp::{InterruptSource, Interpreter, Step, CHAIN_BUDGET};
use emu_core::Vcpu;
use iced_x86::code_asm::*;

use super::tests::{assemble, machine, same_with, CODE};
use super::Translator;

/// One block per translation: these tests are about links between them.
fn jit_machine(code: &[u8]) -> Interpreter {
    let mut cpu = machine(code);
    cpu.set_translator(Box::new(Translator::new().unwrap()));
    cpu.set_jit_threshold(0);
    cpu.set_jit_regions(false);
    cpu
}

pub(super) fn stat(cpu: &Interpreter, name: &str) -> u64 {
    cpu.stats().events.iter().find(|(k, _)| k == name).map_or(0, |e| e.1)
}

/// Steps until HLT; panics on a stop or if none comes.
pub(super) fn to_hlt(cpu: &mut Interpreter) {
    for _ in 0..1_000_000 {
        match cpu.step_block() {
            Step::Executed => {}
            Step::Halted => return,
            Step::Stopped(r) => panic!("stopped: {r:?} at {:#x}", Interpreter::state(cpu).rip),
        }
    }
    panic!("no HLT reached");
}

/// A loop over three blocks in one page, linked to each other.
pub(super) fn loop_code(count: u32) -> Vec<u8> {
    assemble(|a| {
        let mut top = a.create_label();
        let mut skip = a.create_label();
        a.mov(ecx, count)?;
        a.xor(eax, eax)?;
        a.set_label(&mut top)?;
        a.add(rax, rcx)?;
        a.test(cl, 1)?;
        a.je(skip)?;
        a.xor(rax, 0x55)?;
        a.set_label(&mut skip)?;
        a.dec(ecx)?;
        a.jne(top)?;
        Ok(())
    })
}

#[test]
fn loop_across_blocks_is_chained() {
    let code = loop_code(5000);
    same_with(&code, &|_| {});
    let mut cpu = jit_machine(&code);
    to_hlt(&mut cpu);
    let (runs, dispatched, chained) =
        (stat(&cpu, "jit: native block runs"), stat(&cpu, "jit: dispatcher entries"), stat(&cpu, "jit: chained runs"));
    assert!(chained > 9_000, "chained {chained} of {runs}");
    assert!(dispatched * 100 < runs, "{dispatched} dispatcher entries for {runs} runs");
    assert!(stat(&cpu, "jit: links made") >= 3);
}

#[test]
fn returns_and_indirect_jumps_use_the_hop_table() {
    let code = assemble(|a| {
        let mut f = a.create_label();
        let mut top = a.create_label();
        let mut next = a.create_label();
        a.mov(ecx, 2000)?;
        a.lea(r8, qword_ptr(next))?;
        a.set_label(&mut top)?;
        a.call(f)?;
        a.jmp(r8)?;
        a.set_label(&mut next)?;
        a.dec(ecx)?;
        a.jne(top)?;
        a.jmp(0x3000 + CODE)?;
        a.set_label(&mut f)?;
        a.add(rax, rcx)?;
        a.ret()?;
        Ok(())
    });
    // A far page holds the HLT the code ends with (a cross-page jump).
    let mut code = code;
    code.resize(0x3000, 0x90);
    code.push(0xf4);
    same_with(&code, &|_| {});
    let mut cpu = jit_machine(&code);
    to_hlt(&mut cpu);
    // Four blocks a round, two reached by RET/JMP r8: those hit the hop
    // table in native code and count as chained runs (links alone would
    // give about 4000), leaving the dispatcher's loop only the first hops.
    let (chained, hopped) = (stat(&cpu, "jit: chained runs"), stat(&cpu, "jit: hop-table runs"));
    assert!(chained > 7000, "chained {chained}, hops {hopped}");
    assert!(hopped < 100, "hops {hopped}");
    assert!(stat(&cpu, "jit: dispatcher entries") < 100);
}

#[test]
fn self_modified_chained_target_is_not_run_stale() {
    // Block `top` links to `body`; half-way the loop rewrites the
    // immediate `body` adds (`add eax, imm32`: the byte after 05), from the page's own code and from another
    // page (through a call), so the linked target must be dropped.
    let code = assemble(|a| {
        let mut top = a.create_label();
        let mut body = a.create_label();
        let mut done = a.create_label();
        a.xor(eax, eax)?;
        a.mov(ecx, 300)?;
        a.set_label(&mut top)?;
        a.dec(ecx)?;
        a.je(done)?;
        a.jmp(body)?;
        a.set_label(&mut body)?;
        a.add(eax, 1)?;
        a.cmp(ecx, 200)?;
        a.jne(top)?;
        a.lea(rdx, qword_ptr(body))?;
        a.mov(byte_ptr(rdx + 1), 2)?;
        a.mov(rsi, 0x2000 + CODE)?;
        a.call(rsi)?;
        a.jmp(top)?;
        a.set_label(&mut done)?;
        Ok(())
    });
    // At CODE + 0x2000: patch the immediate to 3 once ECX is 100.
    let far = {
        let mut a = CodeAssembler::new(64).unwrap();
        a.ret().unwrap();
        a.assemble(CODE + 0x2000).unwrap()
    };
    let mut all = code.clone();
    all.resize(0x2000, 0x90);
    all.extend_from_slice(&far);
    let s = same_with(&all, &|_| {});
    assert_eq!(s.gpr[reg::RAX], 100 + 2 * 199);
    // The same with the patch from the other page, as a loop that
    // rewrites a chained block while it spins: `top` and `body` chain
    // through links until the far code patches `body`.
    let code = assemble(|a| {
        let mut top = a.create_label();
        let mut body = a.create_label();
        let mut done = a.create_label();
        let mut skip = a.create_label();
        a.xor(eax, eax)?;
        a.mov(ecx, 300)?;
        a.lea(rdx, qword_ptr(body))?;
        a.set_label(&mut top)?;
        a.dec(ecx)?;
        a.je(done)?;
        a.jmp(body)?;
        a.set_label(&mut body)?;
        a.add(eax, 1)?;
        a.cmp(ecx, 100)?;
        a.jne(skip)?;
        a.mov(rsi, 0x2000 + CODE)?;
        a.call(rsi)?;
        a.set_label(&mut skip)?;
        a.jmp(top)?;
        a.set_label(&mut done)?;
        Ok(())
    });
    let far = {
        let mut a = CodeAssembler::new(64).unwrap();
        a.mov(byte_ptr(rdx + 1), 5).unwrap();
        a.ret().unwrap();
        a.assemble(CODE + 0x2000).unwrap()
    };
    let mut all = code;
    all.resize(0x2000, 0x90);
    all.extend_from_slice(&far);
    let s = same_with(&all, &|_| {});
    assert_eq!(s.gpr[reg::RAX], 200 + 5 * 99);
    let mut cpu = jit_machine(&all);
    to_hlt(&mut cpu);
    assert_eq!(Interpreter::state(&cpu).gpr[reg::RAX], 200 + 5 * 99);
    assert!(stat(&cpu, "jit: chained runs") > 300);
}

#[test]
fn direct_exits_to_other_pages_hand_over_in_native_code() {
    // A loop calls a routine two pages away: a direct exit no link may
    // take (the other page may map elsewhere next time), which probes the
    // hop table inline and tail-calls the routine's code.
    let mut code = assemble(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 3000)?;
        a.set_label(&mut top)?;
        a.call(0x2000 + CODE)?;
        a.dec(ecx)?;
        a.jne(top)?;
        a.hlt()?;
        Ok(())
    });
    code.resize(0x2000, 0x90);
    code.extend(assemble(|a| {
        a.add(rax, rcx)?;
        a.ret()?;
        Ok(())
    }));
    same_with(&code, &|_| {});
    let mut cpu = jit_machine(&code);
    to_hlt(&mut cpu);
    let (chained, hopped, dispatched) =
        (stat(&cpu, "jit: chained runs"), stat(&cpu, "jit: hop-table runs"), stat(&cpu, "jit: dispatcher entries"));
    // Two hand-overs a round (CALL and RET, each to another page); the
    // dispatcher's loop sees only the first of each and one in 64 others.
    assert!(chained > 5500, "chained {chained}, hops {hopped}");
    assert!(hopped < 20, "hops {hopped}");
    assert!(dispatched < 100, "dispatcher entries {dispatched}");
}

/// Two blocks jumping to each other forever, with interrupts enabled.
fn spin_code() -> Vec<u8> {
    assemble(|a| {
        let mut one = a.create_label();
        let mut two = a.create_label();
        a.sti()?;
        a.set_label(&mut one)?;
        a.inc(rax)?;
        a.jmp(two)?;
        a.set_label(&mut two)?;
        a.inc(rdx)?;
        a.jmp(one)?;
        Ok(())
    })
}

#[test]
fn interrupt_stops_a_spinning_chain() {
    let mut cpu = jit_machine(&spin_code());
    let pending = Arc::new(AtomicBool::new(false));
    // The first acknowledge finds nothing (as a spurious INTR would), so
    // the block runs with the flag still up; the next one answers.
    let acks = Arc::new(AtomicU32::new(0));
    let acks2 = Arc::clone(&acks);
    cpu.set_interrupt_source(InterruptSource {
        pending: Arc::clone(&pending),
        acknowledge: Box::new(move || (acks2.fetch_add(1, Ordering::Relaxed) > 0).then_some(5)),
    });
    // Warm up: the links form, and one step is bounded by the budget.
    for _ in 0..10 {
        let before = cpu.retired();
        assert_eq!(cpu.step_block(), Step::Executed);
        assert!(cpu.retired() - before <= 2 * u64::from(CHAIN_BUDGET + 1));
    }
    let before = cpu.retired();
    assert_eq!(cpu.step_block(), Step::Executed);
    assert!(cpu.retired() - before > u64::from(CHAIN_BUDGET), "not chained: {}", cpu.retired() - before);
    // The interrupt arrives: the chain stops after the block it is in.
    pending.store(true, Ordering::Release);
    let before = cpu.retired();
    assert_eq!(cpu.step_block(), Step::Executed);
    assert!(cpu.retired() - before <= 2, "ran {} instructions with an interrupt pending", cpu.retired() - before);
    // And it is delivered at the next boundary: vector 5's HLT.
    assert_eq!(cpu.step_block(), Step::Executed);
    assert_eq!(Interpreter::state(&cpu).rip, 0x9000 + 16 * 5);
    assert_eq!(cpu.step_block(), Step::Halted);
}

#[test]
fn code_flush_while_links_exist() {
    let code = loop_code(20_000);
    let reference = same_with(&code, &|_| {});
    let mut cpu = jit_machine(&code);
    let mut flushes = 0;
    for i in 0..1_000_000u32 {
        if i % 3 == 2 && stat(&cpu, "jit: links made") > 0 {
            // Drops every block and, at the next boundary, the module
            // the linked code lives in.
            cpu.state_changed();
            flushes += 1;
        }
        match cpu.step_block() {
            Step::Executed => {}
            Step::Halted => break,
            Step::Stopped(r) => panic!("stopped: {r:?}"),
        }
    }
    assert!(flushes > 3, "{flushes} flushes");
    assert!(stat(&cpu, "jit: code flushes") >= 3);
    let s = Vcpu::state(&mut cpu).unwrap();
    assert_eq!(s.gpr, reference.gpr);
    assert_eq!(s.rip, reference.rip);
}

/// A port that asks the machine to stop when written, as `isa-debug-exit`.
struct StopPort(Arc<emu_core::MachineControl>);

impl emu_core::BusDevice for StopPort {
    fn write(&mut self, _base: u64, _offset: u64, _data: &[u8]) {
        self.0.request_stop(emu_core::StopReason::Error("stop port".into()));
    }
}

/// Raises its interrupt line at its `after`th write.
struct IrqPortAfter(Arc<AtomicBool>, u32);

impl emu_core::BusDevice for IrqPortAfter {
    fn write(&mut self, _base: u64, _offset: u64, _data: &[u8]) {
        self.1 = self.1.saturating_sub(1);
        if self.1 == 0 {
            self.0.store(true, Ordering::Release);
        }
    }
}

#[test]
fn an_interrupt_raised_by_an_out_in_hot_code_comes_before_the_next_instruction() {
    // The OUT's block hands over to the next through its link, in native
    // code once both are hot: the interrupt its 15,000th write raises must
    // still be taken before the INC after it (vector 5's handler is a HLT).
    let code = assemble(|a| {
        let mut top = a.create_label();
        a.sti()?;
        a.mov(ecx, 20_000)?;
        a.xor(ebx, ebx)?;
        a.set_label(&mut top)?;
        a.out(0xf4, al)?;
        a.inc(ebx)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        Ok(())
    });
    let pending = Arc::new(AtomicBool::new(false));
    let mut pio = emu_core::Bus::new();
    pio.insert(Arc::new(std::sync::Mutex::new(IrqPortAfter(Arc::clone(&pending), 15_000))), 0xf4, 1).unwrap();
    let mut cpu = super::tests::machine_with(&code, pio, emu_core::MachineControl::new());
    cpu.set_translator(Box::new(Translator::new().unwrap()));
    cpu.set_jit_threshold(20);
    let taken = Arc::clone(&pending);
    cpu.set_interrupt_source(InterruptSource {
        pending: Arc::clone(&pending),
        acknowledge: Box::new(move || taken.swap(false, Ordering::AcqRel).then_some(5)),
    });
    to_hlt(&mut cpu);
    let s = Interpreter::state(&cpu);
    assert_eq!(s.rip, 0x9000 + 16 * 5 + 1, "not vector 5's HLT");
    assert_eq!(s.gpr[reg::RBX], 14_999, "instructions ran before the interrupt the OUT raised");
    assert!(stat(&cpu, "jit: chained runs") > 10_000);
}

#[test]
fn an_out_chains_to_the_next_block_and_a_stop_it_asks_for_comes_first() {
    // 20,000 OUTs to port 0x80 (nothing there), each ending its block:
    // native code goes on through the chain, not the dispatcher. Then an
    // OUT to the stop port: the MOV after it never runs.
    let code = assemble(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 20_000)?;
        a.set_label(&mut top)?;
        a.out(0x80, al)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.out(0xf4, al)?;
        a.mov(ebx, 0xdead)?;
        Ok(())
    });
    let control = emu_core::MachineControl::new();
    let mut pio = emu_core::Bus::new();
    pio.insert(Arc::new(std::sync::Mutex::new(StopPort(Arc::clone(&control)))), 0xf4, 1).unwrap();
    let mut cpu = super::tests::machine_with(&code, pio, Arc::clone(&control));
    cpu.set_translator(Box::new(Translator::new().unwrap()));
    cpu.set_jit_threshold(20);
    let stopped = (0..100_000).find_map(|_| match cpu.step_block() {
        Step::Executed => None,
        Step::Halted => panic!("halted past the stop"),
        Step::Stopped(r) => Some(r),
    });
    assert!(stopped.is_some(), "no stop");
    let s = Interpreter::state(&cpu);
    assert_eq!(s.gpr[reg::RCX], 0);
    assert_ne!(s.gpr[reg::RBX] & 0xffff_ffff, 0xdead, "the MOV after the stopping OUT ran");
    let (dispatched, chained) = (stat(&cpu, "jit: dispatcher entries"), stat(&cpu, "jit: chained runs"));
    assert!(dispatched < 1_000, "{dispatched} dispatcher entries");
    assert!(chained > 15_000, "{chained} chained runs");
}

/// A device that, at its `after`th write, writes `code` at `at` in the
/// memory it is given once the machine exists (DMA).
struct LateCodeWriter {
    memory: Arc<std::sync::OnceLock<Arc<emu_core::GuestMemory>>>,
    at: u64,
    code: Vec<u8>,
    after: u32,
}

impl emu_core::BusDevice for LateCodeWriter {
    fn write(&mut self, _base: u64, _offset: u64, _data: &[u8]) {
        self.after = self.after.saturating_sub(1);
        if self.after == 0 {
            if let Some(memory) = self.memory.get() {
                memory.write(self.at, &std::mem::take(&mut self.code)).unwrap();
            }
        }
    }
}

#[test]
fn a_device_write_over_translated_code_drops_it() {
    // A loop calls `f`, which returns 1, 1,000 times; the device at port
    // 0x80 writes an `f` that returns 100 over it at the 600th OUT, long
    // after both were translated: the calls after it run the new `f`.
    let f = CODE + 0x100;
    let code = assemble(|a| {
        let mut top = a.create_label();
        a.xor(ebx, ebx)?;
        a.mov(ecx, 1000)?;
        a.set_label(&mut top)?;
        a.call(f)?;
        a.add(ebx, eax)?;
        a.out(0x80, al)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()?;
        Ok(())
    });
    let routine = |value: u32| {
        let mut a = CodeAssembler::new(64).unwrap();
        a.mov(eax, value).unwrap();
        a.ret().unwrap();
        a.assemble(f).unwrap()
    };
    let memory = Arc::new(std::sync::OnceLock::new());
    let writer = LateCodeWriter { memory: Arc::clone(&memory), at: f, code: routine(100), after: 600 };
    let mut pio = emu_core::Bus::new();
    pio.insert(Arc::new(std::sync::Mutex::new(writer)), 0x80, 1).unwrap();
    let mut cpu = super::tests::machine_with(&code, pio, emu_core::MachineControl::new());
    let _ = memory.set(cpu.memory());
    cpu.memory().write(f, &routine(1)).unwrap();
    cpu.set_translator(Box::new(Translator::new().unwrap()));
    cpu.set_jit_threshold(20);
    let halted = (0..100_000).any(|_| cpu.step_block() == Step::Halted);
    assert!(halted, "the loop never ended");
    assert_eq!(Interpreter::state(&cpu).gpr[reg::RBX] & 0xffff_ffff, 600 + 400 * 100);
    assert!(stat(&cpu, "jit: native block runs") > 1_000, "the loop ran native");
}
