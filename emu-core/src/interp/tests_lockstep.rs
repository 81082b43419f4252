//! Lockstep mode with a stand-in translator whose "native code" is a Rust
//! function: a correct one passes, and one that gets a register or a
//! stored byte wrong stops the machine with a report naming it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use iced_x86::code_asm::*;

use super::tests::long_mode_cpu;
use super::*;
use crate::cpu::{reg, seg};
use crate::interp::tier::{exit, BlockTranslator, JitFrame, NativeBlock, TranslationRequest};

const CODE: u64 = 0x1_0000;
const DATA: u64 = 0x9000;

/// `mov eax, 41; add eax, 1; mov [DATA], eax; hlt`, and where the HLT is.
fn program() -> (Vec<u8>, u64) {
    let mut a = CodeAssembler::new(64).unwrap();
    let mut halt = a.create_label();
    a.mov(eax, 41u32).unwrap();
    a.add(eax, 1).unwrap();
    a.mov(dword_ptr(DATA), eax).unwrap();
    a.set_label(&mut halt).unwrap();
    a.hlt().unwrap();
    let result = a.assemble_options(CODE, iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS).unwrap();
    let hlt_at = result.label_ip(&halt).unwrap();
    (result.inner.code_buffer, hlt_at)
}

/// The first three instructions as native code would run them, with the
/// value for RAX and the value stored at DATA as given.
///
/// # Safety
/// `frame` must be a live frame (the dispatcher's).
unsafe fn emulate(frame: *mut JitFrame, rax_value: u64, stored: u64) -> u32 {
    // SAFETY: the dispatcher passes its live frame; nothing else touches
    // the state while native code runs.
    let s = unsafe { &mut *(*frame).state };
    s.gpr[reg::RAX] = rax_value;
    // 41 + 1: every arithmetic flag clear.
    s.set_flags(s.flags() & !0x8d5);
    // SAFETY: as above; the helper is how native code writes.
    if unsafe { jit_write(frame, seg::DS as u32, DATA, 4, stored) } != exit::CONTINUE {
        return exit::FAULT;
    }
    // SAFETY: as above.
    let s = unsafe { &mut *(*frame).state };
    s.rip = program().1;
    // SAFETY: as above.
    unsafe { (*frame).retired = 3 };
    exit::END_BLOCK
}

unsafe extern "C" fn correct(frame: *mut JitFrame) -> u32 {
    // SAFETY: called by the dispatcher with its frame.
    unsafe { emulate(frame, 42, 42) }
}

unsafe extern "C" fn wrong_register(frame: *mut JitFrame) -> u32 {
    // SAFETY: as above.
    unsafe { emulate(frame, 43, 42) }
}

unsafe extern "C" fn wrong_store(frame: *mut JitFrame) -> u32 {
    // SAFETY: as above.
    unsafe { emulate(frame, 42, 0x2b) }
}

/// Translates only the program's first block, to `code` (or refuses),
/// and notes whether the request asked for writes through the helper.
struct StandIn {
    code: Option<unsafe extern "C" fn(*mut JitFrame) -> u32>,
    journal_writes: Arc<AtomicBool>,
}

impl BlockTranslator for StandIn {
    fn translate(&mut self, req: &TranslationRequest<'_>) -> Option<NativeBlock> {
        self.journal_writes.store(req.journal_writes, Ordering::Relaxed);
        let code = self.code.filter(|_| req.rip == CODE)?;
        Some(NativeBlock { entry: code, index: 0, generation: 0, tiered: false })
    }
    fn wants_flush(&self) -> bool {
        false
    }
    fn flush(&mut self) {}
    fn generation(&self) -> u64 {
        0
    }
    fn stats(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

/// The program's machine in lockstep with a stand-in translating to `code`.
fn lockstep_cpu(code: Option<unsafe extern "C" fn(*mut JitFrame) -> u32>, journal_writes: &Arc<AtomicBool>) -> Interpreter {
    let mut cpu = long_mode_cpu(&program().0);
    cpu.set_translator(Box::new(StandIn { code, journal_writes: Arc::clone(journal_writes) }));
    cpu.set_jit_threshold(0);
    cpu.set_lockstep(true);
    cpu
}

/// Runs the program in lockstep with `code` until HLT or a stop.
fn run_lockstep(code: unsafe extern "C" fn(*mut JitFrame) -> u32) -> (Interpreter, Step) {
    let mut cpu = lockstep_cpu(Some(code), &Arc::default());
    for _ in 0..10 {
        match cpu.step_block() {
            Step::Executed => {}
            other => return (cpu, other),
        }
    }
    panic!("neither HLT nor a stop");
}

fn stat(cpu: &Interpreter, name: &str) -> u64 {
    cpu.stats().events.iter().find(|(k, _)| k == name).map_or(0, |e| e.1)
}

fn report(step: Step) -> String {
    match step {
        Step::Stopped(StopReason::Error(text)) => text,
        other => panic!("expected a lockstep report, got {other:?}"),
    }
}

#[test]
fn agreeing_code_runs_on_and_is_counted() {
    let (cpu, step) = run_lockstep(correct);
    assert_eq!(step, Step::Halted);
    assert_eq!(cpu.s.gpr[reg::RAX], 42);
    assert_eq!(cpu.mem.read_u32(DATA).unwrap(), 42);
    assert_eq!(stat(&cpu, "jit lockstep: native runs compared"), 1);
    assert_eq!(stat(&cpu, "jit lockstep: instructions compared"), 3);
}

#[test]
fn a_wrong_register_stops_with_a_report() {
    let (_, step) = run_lockstep(wrong_register);
    let text = report(step);
    assert!(text.contains("from RIP 0x10000 (3 instructions"), "{text}");
    assert!(text.contains("rax: jit 0x2b, interp 0x2a"), "{text}");
    assert!(text.contains("add eax,1"), "the block's listing: {text}");
    assert!(!text.contains("memory at"), "{text}");
}

#[test]
fn a_wrong_store_stops_with_a_report_and_the_interpreter_result_stays() {
    let (cpu, step) = run_lockstep(wrong_store);
    let text = report(step);
    assert!(text.contains("memory at linear 0x9000: jit 0x2b, interp 0x2a"), "{text}");
    assert!(!text.contains("rax:"), "{text}");
    // Native code's write was undone; the interpreter's stands.
    assert_eq!(cpu.mem.read_u32(DATA).unwrap(), 42);
}

#[test]
fn lockstep_asks_for_code_that_writes_through_the_helper() {
    let asked = Arc::new(AtomicBool::new(false));
    let mut cpu = lockstep_cpu(None, &asked);
    // The block runs to its HLT, interpreted (this translator refuses).
    assert_eq!(cpu.step_block(), Step::Halted);
    assert!(asked.load(Ordering::Relaxed));
}
