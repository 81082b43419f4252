//! The interpreter side of the differential test: running a case in
//! `emu_core::interp::Interpreter` and comparing it with the host.
//!
//! The guest is a 64-bit machine with 4 MiB of RAM in which the oracle's
//! regions sit at the same virtual (= physical) addresses as on the host
//! ([`crate::layout`]):
//!
//! * identity paging with 4 KiB pages mapping only the code region (user,
//!   read-only, like the host's R-X mapping), the data region (user,
//!   read-write) and the system pages below 64 KiB (supervisor): page
//!   tables, GDT, IDT, a 64-bit TSS and the exception handlers' stack. The
//!   host's control block needs no guest mapping. A stray access faults
//!   in both worlds;
//! * the snippet runs at CPL 3 like on the host (this matters: POPF at
//!   CPL 0 would change IF), CS = 64-bit user code, SS/DS/ES/FS/GS = flat
//!   user data, CR0.PE|PG|ET|NE, CR4.PAE|OSFXSR|OSXMMEXCPT, EFER.LME|LMA;
//! * registers one to one: `UserState::gpr[i]` -> `CpuState::gpr[i]`,
//!   `xmm` -> `fx.xmm`, [`UserState::loadable_mxcsr`] -> `fx.mxcsr`,
//!   [`UserState::loadable_rflags`] (IF=1, as PUSHF shows on the host) ->
//!   `set_flags`; RIP = `SNIPPET_ADDR`;
//! * every exception vector's IDT gate leads to its own address in a
//!   handler area, so when RIP lands there after a step the vector is
//!   known, and the frame on the TSS's RSP0 stack gives RIP, RFLAGS and
//!   RSP at the fault (the other registers are unchanged by delivery),
//!   the counterpart of the host's [`crate::Fault`];
//! * before each step, the instruction and the current RCX go to a
//!   [`FlagTracker`], which gives the exact undefined-flags mask (shift
//!   counts in CL and REP counts are known then).

use std::sync::Arc;

use emu_core::cpu::{cr0, efer, seg};
use emu_core::interp::{BlockTranslator, Interpreter, Step};
use emu_core::Vcpu;
use emu_core::{Bus, CpuState, DescriptorTable, GuestMemory, MachineContext, MachineControl, Segment};
use iced_x86::Instruction;

use crate::compare::{compare, compare_data, Difference, Mismatch};
use crate::gen::{GenConfig, Snippet, TestCase};
use crate::layout::{CODE_BASE, CODE_SIZE, DATA_BASE, DATA_SIZE, SNIPPET_ADDR};
use crate::native::{NativeRunner, Outcome};
use crate::state::{flags, reg, UserState, GPR_NAMES, USER_FLAGS};
use crate::FlagTracker;

const RAM_SIZE: u64 = 4 << 20;
const PAGE: u64 = 0x1000;
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PAGE_DIRECTORY: u64 = 0x3000;
/// Page tables for the first and second 2 MiB.
const PAGE_TABLES: [u64; 2] = [0x4000, 0x5000];
const GDT: u64 = 0x6000;
const IDT: u64 = 0x7000;
const TSS: u64 = 0x8000;
/// Vector `v`'s handler is at `HANDLERS + HANDLER_STRIDE * v`.
const HANDLERS: u64 = 0x9000;
const HANDLER_STRIDE: u64 = 16;
const VECTORS: u64 = 32;
/// TSS.RSP0: exception frames go here, away from the data region.
const KERNEL_STACK_TOP: u64 = 0xF000;
/// Supervisor pages: everything from PML4 to the kernel stack.
const SYSTEM_PAGES: (u64, u64) = (PML4, 0x1_0000);

const KERNEL_CS: u16 = 0x08;
const USER_DS: u16 = 0x1B;
const USER_CS: u16 = 0x23;
const TSS_SELECTOR: u16 = 0x28;

/// Page-table entry bits.
const PRESENT: u64 = 1;
const WRITABLE: u64 = 2;
const USER: u64 = 4;

/// CR4 bits the interpreter's `mmu::cr4` does not name.
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;

/// Steps after which a snippet is considered stuck.
const MAX_STEPS: usize = 100_000;

/// How the interpreter ended a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterpOutcome {
    /// RIP reached the end of the snippet.
    Completed {
        /// Final registers, normalized like the host's.
        state: UserState,
        /// The data region.
        data: Vec<u8>,
        /// Flags the executed instructions left undefined.
        undefined_flags: u64,
    },
    /// An exception was delivered.
    Exception {
        /// Its vector.
        vector: u8,
        /// RIP of the faulting instruction (from the exception frame).
        rip: u64,
        /// Registers at the fault.
        state: UserState,
        /// The data region at the fault.
        data: Vec<u8>,
        /// Flags undefined before the faulting instruction.
        undefined_flags: u64,
    },
    /// The interpreter stopped, halted, ran away, or could not be set up.
    Stopped(String),
}

/// The instructions both the host and the interpreter's CPUID model
/// (`emu_core::interp::cpuid`) offer: a differential test must not
/// generate, say, TZCNT for a CPU model that runs F3 0F BC as BSF.
pub fn interpreter_config() -> GenConfig {
    use emu_core::interp::cpuid::{cpuid, Platform};
    let bit = |register: u32, index: u32| register & (1 << index) != 0;
    let (_, _, leaf1_ecx, leaf1_edx) = cpuid(1, 0, Platform::default());
    let (_, leaf7_ebx, _, _) = cpuid(7, 0, Platform::default());
    let (_, _, ext1_ecx, _) = cpuid(0x8000_0001, 0, Platform::default());
    let host = GenConfig::for_host();
    GenConfig {
        lzcnt: host.lzcnt && bit(ext1_ecx, 5),
        tzcnt: host.tzcnt && bit(leaf7_ebx, 3),
        popcnt: host.popcnt && bit(leaf1_ecx, 23),
        cmpxchg16b: host.cmpxchg16b && bit(leaf1_ecx, 13),
        lahf_sahf: host.lahf_sahf && bit(ext1_ecx, 0),
        sse: host.sse && bit(leaf1_edx, 25) && bit(leaf1_edx, 26),
        ssse3: host.ssse3 && bit(leaf1_ecx, 9),
        sse41: host.sse41 && bit(leaf1_ecx, 19),
        sse42: host.sse42 && bit(leaf1_ecx, 20),
    }
}

/// Runs `snippet` in the interpreter from `input` with `data` in the data
/// region.
pub fn run_interpreter(snippet: &Snippet, input: &UserState, data: &[u8]) -> InterpOutcome {
    match Guest::new(snippet, input, data) {
        Ok(guest) => guest.run(snippet),
        Err(why) => InterpOutcome::Stopped(why),
    }
}

/// Runs `case` on the host and in the interpreter and compares the two.
pub fn differential(runner: &mut NativeRunner, case: &TestCase) -> Result<(), Mismatch> {
    let native = runner.run(&case.snippet.bytes, &case.state, &case.data);
    let interp = run_interpreter(&case.snippet, &case.state, &case.data);
    let result = match (native, interp) {
        (Err(error), _) => Err(single("host", format!("oracle error: {error}"), "-".into())),
        (Ok(Outcome::Completed(native_state, native_data)), InterpOutcome::Completed { state, data, undefined_flags }) => {
            both(compare(&native_state, &state, undefined_flags), compare_data(&native_data, &data))
        }
        (Ok(Outcome::Fault(fault)), InterpOutcome::Exception { vector, rip, state, data, undefined_flags }) => {
            let mut outcome = Ok(());
            if fault.exception.vector() != vector || fault.rip != rip {
                outcome = Err(single("exception", format!("{} at {:#x}", fault.exception, fault.rip), format!("vector {vector} at {rip:#x}")));
            }
            both(both(outcome, compare(&fault.state, &state, undefined_flags)), compare_data(&fault.data, &data))
        }
        (Ok(native), interp) => Err(single("outcome", describe_native(&native), describe_interp(&interp))),
    };
    result.map_err(|mismatch| mismatch.with_disassembly(case.snippet.description.clone()).with_context(describe_state(&case.state)))
}

fn single(location: &str, native: String, interp: String) -> Mismatch {
    Mismatch { differences: vec![Difference { location: location.into(), native, interp }], ..Mismatch::default() }
}

fn both(first: Result<(), Mismatch>, second: Result<(), Mismatch>) -> Result<(), Mismatch> {
    match (first, second) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(a), Err(b)) => Err(a.merge(b)),
        (Err(a), Ok(())) | (Ok(()), Err(a)) => Err(a),
    }
}

fn describe_native(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Completed(..) => "completed".into(),
        Outcome::Fault(fault) => fault.to_string(),
    }
}

fn describe_interp(outcome: &InterpOutcome) -> String {
    match outcome {
        InterpOutcome::Completed { .. } => "completed".into(),
        InterpOutcome::Exception { vector, rip, .. } => format!("vector {vector} at {rip:#x}"),
        InterpOutcome::Stopped(why) => format!("stopped: {why}"),
    }
}

/// The initial registers, for the report.
fn describe_state(state: &UserState) -> String {
    let mut text = String::from("initial state:");
    for (index, value) in state.gpr.iter().enumerate() {
        if index % 4 == 0 {
            text.push_str("\n ");
        }
        text.push_str(&format!(" {:>3}={value:#018x}", GPR_NAMES[index]));
    }
    text.push_str(&format!("\n  rflags={:#x} mxcsr={:#x}", state.rflags, state.mxcsr));
    for (index, value) in state.xmm.iter().enumerate() {
        if index % 2 == 0 {
            text.push_str("\n ");
        }
        text.push_str(&format!(" xmm{index:<2}={value:#034x}"));
    }
    text
}

/// Runs `snippet` a block at a time, as `Vcpu::run` does, in the plain
/// interpreter or (with `translator`, translating every block at first
/// sight) in its JIT tier. A HLT follows the snippet; at CPL 3 it raises
/// #GP at the end address, which ends the run as `Completed`.
pub fn run_blocks(snippet: &Snippet, input: &UserState, data: &[u8], translator: Option<Box<dyn BlockTranslator>>) -> InterpOutcome {
    let guest = match Guest::new(snippet, input, data) {
        Ok(guest) => guest,
        Err(why) => return InterpOutcome::Stopped(why),
    };
    guest.run_blocks(snippet, translator)
}

/// Runs `case` in the interpreter and in its JIT tier (block by block both)
/// and compares the two exactly: in a [`Mismatch`], "native" is the
/// interpreter and "interp" the JIT.
pub fn jit_differential(case: &TestCase, translator: Box<dyn BlockTranslator>) -> Result<(), Mismatch> {
    let interp = run_blocks(&case.snippet, &case.state, &case.data, None);
    let jit = run_blocks(&case.snippet, &case.state, &case.data, Some(translator));
    let result = match (&interp, &jit) {
        (InterpOutcome::Completed { state: a, data: da, .. }, InterpOutcome::Completed { state: b, data: db, .. }) => {
            both(compare(a, b, 0), compare_data(da, db))
        }
        (
            InterpOutcome::Exception { vector: va, rip: ra, state: a, data: da, .. },
            InterpOutcome::Exception { vector: vb, rip: rb, state: b, data: db, .. },
        ) => {
            let mut outcome = Ok(());
            if va != vb || ra != rb {
                outcome = Err(single("exception", format!("vector {va} at {ra:#x}"), format!("vector {vb} at {rb:#x}")));
            }
            both(both(outcome, compare(a, b, 0)), compare_data(da, db))
        }
        (InterpOutcome::Stopped(a), InterpOutcome::Stopped(b)) if a == b => Ok(()),
        (a, b) => Err(single("outcome", describe_interp(a), describe_interp(b))),
    };
    result.map_err(|mismatch| mismatch.with_disassembly(case.snippet.description.clone()).with_context(describe_state(&case.state)))
}

/// A guest machine loaded with one case.
struct Guest {
    memory: Arc<GuestMemory>,
    cpu: Interpreter,
}

impl Guest {
    fn new(snippet: &Snippet, input: &UserState, data: &[u8]) -> Result<Self, String> {
        let memory = Arc::new(GuestMemory::new(RAM_SIZE).map_err(|e| format!("guest memory: {e}"))?);
        build_system_tables(&memory).map_err(|e| format!("guest tables: {e}"))?;
        let write = |address: u64, bytes: &[u8]| memory.write(address, bytes).map_err(|e| format!("guest write: {e}"));
        write(SNIPPET_ADDR, &snippet.bytes)?;
        write(DATA_BASE, data)?;
        let context = MachineContext {
            memory: memory.clone(),
            pio: Arc::new(Bus::new()),
            mmio: Arc::new(Bus::new()),
            control: MachineControl::new(),
        };
        let cpu = Interpreter::new(context, user_state(input));
        Ok(Self { memory, cpu })
    }

    fn run(mut self, snippet: &Snippet) -> InterpOutcome {
        let end = snippet.end_address();
        let mut tracker = FlagTracker::new();
        for _ in 0..MAX_STEPS {
            let rip = self.cpu.state().rip;
            if rip == end {
                return InterpOutcome::Completed {
                    state: self.user_state(None),
                    data: self.data(),
                    undefined_flags: tracker.undefined(),
                };
            }
            let Some(instruction) = instruction_at(snippet, rip) else {
                return InterpOutcome::Stopped(format!("RIP left the snippet: {rip:#x}"));
            };
            let before = tracker;
            tracker.step(instruction, Some(self.cpu.state().gpr[reg::RCX]));
            match self.cpu.step() {
                Step::Executed => {}
                Step::Halted => return InterpOutcome::Stopped(format!("halted at {rip:#x}")),
                Step::Stopped(reason) => return InterpOutcome::Stopped(format!("{reason:?} at {rip:#x}")),
            }
            let new_rip = self.cpu.state().rip;
            if (HANDLERS..HANDLERS + HANDLER_STRIDE * VECTORS).contains(&new_rip) {
                return self.exception(((new_rip - HANDLERS) / HANDLER_STRIDE) as u8, before.undefined());
            }
        }
        InterpOutcome::Stopped(format!("no end after {MAX_STEPS} steps"))
    }

    fn run_blocks(mut self, snippet: &Snippet, translator: Option<Box<dyn BlockTranslator>>) -> InterpOutcome {
        let end = snippet.end_address();
        if end >= CODE_BASE + CODE_SIZE as u64 || self.memory.write(end, &[0xF4]).is_err() {
            return InterpOutcome::Stopped("no room for the final HLT".into());
        }
        let jit = translator.is_some();
        if let Some(t) = translator {
            self.cpu.set_translator(t);
            self.cpu.set_jit_threshold(0);
        }
        let outcome = self.run_blocks_until_end(end);
        let native_runs = self.cpu.stats().events.iter().find(|(k, _)| k == "jit: native block runs").map_or(0, |e| e.1);
        if jit && native_runs == 0 {
            return InterpOutcome::Stopped("jit: no block ran natively".into());
        }
        outcome
    }

    fn run_blocks_until_end(&mut self, end: u64) -> InterpOutcome {
        for _ in 0..MAX_STEPS {
            match self.cpu.step_block() {
                Step::Executed => {}
                Step::Halted => return InterpOutcome::Stopped(format!("halted at {:#x}", self.cpu.state().rip)),
                Step::Stopped(reason) => return InterpOutcome::Stopped(format!("{reason:?} at {:#x}", self.cpu.state().rip)),
            }
            let rip = self.cpu.state().rip;
            if (HANDLERS..HANDLERS + HANDLER_STRIDE * VECTORS).contains(&rip) {
                let vector = ((rip - HANDLERS) / HANDLER_STRIDE) as u8;
                let outcome = self.exception(vector, 0);
                return match outcome {
                    InterpOutcome::Exception { vector: 13, rip, state, data, .. } if rip == end => {
                        InterpOutcome::Completed { state, data, undefined_flags: 0 }
                    }
                    other => other,
                };
            }
        }
        InterpOutcome::Stopped(format!("no end after {MAX_STEPS} blocks"))
    }

    /// The outcome after the CPU entered the handler of `vector`.
    fn exception(&self, vector: u8, undefined_flags: u64) -> InterpOutcome {
        // The frame: [error code,] RIP, CS, RFLAGS, RSP, SS.
        let rsp = self.cpu.state().gpr[reg::RSP];
        let has_error_code = KERNEL_STACK_TOP - rsp == 48;
        let frame = rsp + if has_error_code { 8 } else { 0 };
        let read = |offset: u64| self.memory.read_u64(frame + offset).unwrap_or(u64::MAX);
        let (rip, rflags, user_rsp) = (read(0), read(16), read(24));
        InterpOutcome::Exception { vector, rip, state: self.user_state(Some((rflags, user_rsp))), data: self.data(), undefined_flags }
    }

    /// The CPU state as a [`UserState`]; `frame` overrides RFLAGS and RSP
    /// (for a state taken in an exception handler).
    fn user_state(&self, frame: Option<(u64, u64)>) -> UserState {
        let s = self.cpu.state();
        let mut state = UserState { gpr: s.gpr, rflags: s.flags(), xmm: s.fx.xmm, mxcsr: s.fx.mxcsr };
        if let Some((rflags, rsp)) = frame {
            state.rflags = rflags;
            state.gpr[reg::RSP] = rsp;
        }
        state.rflags = (state.rflags & USER_FLAGS) | flags::FIXED;
        state
    }

    fn data(&self) -> Vec<u8> {
        let mut data = vec![0; DATA_SIZE];
        // The region is inside guest RAM by construction.
        let _ = self.memory.read(DATA_BASE, &mut data);
        data
    }
}

fn instruction_at(snippet: &Snippet, rip: u64) -> Option<&Instruction> {
    let index = snippet.instructions.binary_search_by_key(&rip, Instruction::ip).ok()?;
    snippet.instructions.get(index)
}

/// The CPU state that starts a case: CPL 3 in a 64-bit code segment.
fn user_state(input: &UserState) -> CpuState {
    let mut s = CpuState::reset();
    s.cr0 = cr0::PE | cr0::PG | cr0::ET | cr0::NE;
    s.cr3 = PML4;
    s.cr4 = emu_core::mmu::cr4::PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    s.efer = efer::LME | efer::LMA;
    s.segs[seg::CS] = Segment { selector: USER_CS, dpl: 3, ..Segment::flat(USER_CS, true, true) };
    for register in [seg::SS, seg::DS, seg::ES, seg::FS, seg::GS] {
        s.segs[register] = Segment { selector: USER_DS, dpl: 3, ..Segment::flat(USER_DS, false, false) };
    }
    s.gdtr = DescriptorTable { base: GDT, limit: 7 * 8 - 1 };
    s.idtr = DescriptorTable { base: IDT, limit: (VECTORS * 16 - 1) as u16 };
    s.tr = Segment { base: TSS, limit: 0x67, selector: TSS_SELECTOR, type_: 0xB, s: 0, present: 1, ..Segment::default() };
    s.rip = SNIPPET_ADDR;
    s.gpr = input.gpr;
    s.set_flags(input.loadable_rflags());
    s.fx.xmm = input.xmm;
    s.fx.mxcsr = input.loadable_mxcsr();
    s
}

/// Page tables, GDT, IDT, TSS and handler area.
fn build_system_tables(memory: &GuestMemory) -> Result<(), emu_core::MemoryError> {
    let directory_entry = PRESENT | WRITABLE | USER;
    memory.write_u64(PML4, PDPT | directory_entry)?;
    memory.write_u64(PDPT, PAGE_DIRECTORY | directory_entry)?;
    for (index, table) in PAGE_TABLES.iter().enumerate() {
        memory.write_u64(PAGE_DIRECTORY + 8 * index as u64, table | directory_entry)?;
    }
    let regions = [
        (SYSTEM_PAGES.0, SYSTEM_PAGES.1, PRESENT | WRITABLE),
        (CODE_BASE, CODE_BASE + CODE_SIZE as u64, PRESENT | USER),
        (DATA_BASE, DATA_BASE + DATA_SIZE as u64, PRESENT | WRITABLE | USER),
    ];
    for (start, end, bits) in regions {
        for page in (start..end).step_by(PAGE as usize) {
            let table = PAGE_TABLES[(page >> 21) as usize];
            memory.write_u64(table + 8 * ((page >> 12) & 511), page | bits)?;
        }
    }

    let kernel_code = 0x00AF_9B00_0000_FFFFu64;
    let kernel_data = 0x00CF_9300_0000_FFFFu64;
    let user_data = 0x00CF_F300_0000_FFFFu64;
    let user_code = 0x00AF_FB00_0000_FFFFu64;
    let tss_limit = 0x67u64;
    let tss_low = tss_limit | (TSS & 0xFF_FFFF) << 16 | 0x89 << 40 | ((TSS >> 24) & 0xFF) << 56;
    let tss_high = TSS >> 32;
    for (index, descriptor) in [0, kernel_code, kernel_data, user_data, user_code, tss_low, tss_high].into_iter().enumerate() {
        memory.write_u64(GDT + 8 * index as u64, descriptor)?;
    }

    for vector in 0..VECTORS {
        let handler = HANDLERS + HANDLER_STRIDE * vector;
        let low = (handler & 0xFFFF) | u64::from(KERNEL_CS) << 16 | 0x8E << 40 | ((handler >> 16) & 0xFFFF) << 48;
        memory.write_u64(IDT + 16 * vector, low)?;
        memory.write_u64(IDT + 16 * vector + 8, handler >> 32)?;
    }
    // HLT everywhere: the harness stops before a handler runs anyway.
    memory.write(HANDLERS, &vec![0xF4; (HANDLER_STRIDE * VECTORS) as usize])?;
    memory.write_u64(TSS + 4, KERNEL_STACK_TOP)
}

#[cfg(test)]
mod tests {
    use iced_x86::code_asm::*;

    use super::*;
    use crate::layout::STACK_TOP;

    fn case(build: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) -> TestCase {
        let mut assembler = CodeAssembler::new(64).unwrap();
        build(&mut assembler).unwrap();
        let snippet = Snippet::from_bytes(&assembler.assemble(SNIPPET_ADDR).unwrap()).unwrap();
        let mut state = UserState { rflags: flags::FIXED | flags::CF, mxcsr: 0x1F80, ..UserState::default() };
        for (index, value) in state.gpr.iter_mut().enumerate() {
            *value = 0x0101_0101_0101_0101u64.wrapping_mul(index as u64 + 3);
        }
        state.gpr[reg::RBX] = DATA_BASE;
        state.gpr[reg::RSP] = STACK_TOP;
        TestCase { snippet, state, data: (0..DATA_SIZE).map(|i| (i * 7) as u8).collect() }
    }

    #[test]
    fn simple_case_agrees() {
        let mut runner = NativeRunner::new().unwrap();
        let case = case(|a| {
            a.add(rax, rcx)?;
            a.push(rax)?;
            a.pushfq()?;
            a.pop(rdx)?;
            a.mov(dword_ptr(rbx + 8), esi)
        });
        if let Err(mismatch) = differential(&mut runner, &case) {
            panic!("{mismatch}");
        }
    }

    #[test]
    fn exceptions_agree() {
        let mut runner = NativeRunner::new().unwrap();
        let divide = case(|a| {
            a.xor(ecx, ecx)?;
            a.div(rcx)
        });
        let page_fault = case(|a| a.mov(rax, qword_ptr(0x1000u64)));
        for case in [divide, page_fault] {
            assert!(matches!(run_interpreter(&case.snippet, &case.state, &case.data), InterpOutcome::Exception { .. }));
            if let Err(mismatch) = differential(&mut runner, &case) {
                panic!("{mismatch}");
            }
        }
    }

    #[test]
    fn a_difference_is_reported() {
        // The interpreter stops at the end of the snippet; a host-only
        // change of state (here: a different input) must show up.
        let mut runner = NativeRunner::new().unwrap();
        let case = case(|a| a.inc(rax));
        let Outcome::Completed(native, _) = runner.run(&case.snippet.bytes, &case.state, &case.data).unwrap() else { panic!() };
        let mut other = case.state;
        other.gpr[reg::RAX] += 1;
        let InterpOutcome::Completed { state, .. } = run_interpreter(&case.snippet, &other, &case.data) else { panic!() };
        let mismatch = compare(&native, &state, 0).unwrap_err();
        assert_eq!(mismatch.differences[0].location, "rax");
    }
}
