//! The software CPU: an x86 interpreter over the iced-x86 decoder with a
//! soft MMU. It is popek's reference for instruction semantics and, later,
//! the cold tier under the JIT.
//!
//! Layout:
//! - [`fault`]: exceptions and stop reasons an instruction can end with;
//! - `access`: segmented, linear and physical memory access through the
//!   soft TLB (`crate::mmu`), MMIO through the bus;
//! - `decode`: instruction fetch and a decoded-instruction cache keyed by
//!   physical address, invalidated when the guest writes its page;
//! - `operand`: registers, effective addresses, operands, the stack, flags;
//! - `delivery`: exception and interrupt delivery in every mode, double
//!   and triple faults;
//! - `segment`: descriptors, segment loads, far transfers;
//! - `cpuid`: the one CPUID model;
//! - `exec`: the instruction families, dispatched by mnemonic through a
//!   table each family fills.

mod access;
pub mod cpuid;
mod decode;
mod delivery;
mod exec;
pub mod fault;
mod lockstep;
mod operand;
mod region;
mod segment;
mod tier;
mod tier_helpers;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bus::Bus;
use crate::clock::{HostClock, SharedClock};
use crate::control::{MachineControl, StopReason};
use crate::cpu::CpuState;
use crate::memory::GuestMemory;
use crate::mmu::Tlb;
use crate::vcpu::{MachineContext, Vcpu, VcpuError, VcpuStats, VmExit};

pub use fault::{Exception, Fault};
pub use tier::{
    ends_block_for_the_chain, exit, offsets, BlockTranslator, Finished, JitFrame, LinkSlot, NativeBlock, RegionBlock, TierSlot, TranslationJob, TranslationRequest, CHAIN_BUDGET, DEFAULT_HOT_THRESHOLD,
    HOT_LOOP_BACK_EDGES, MISS_EXITS_BEFORE_HELPERS,
};
pub use tier_helpers::{jit_carry, jit_div128, jit_fallback, jit_flags, jit_rdtsc, jit_read, jit_write, Helpers, HELPERS};

/// Where external interrupts come from: a flag the controller raises when
/// its INTR output may be asserted, and the INTA cycle.
pub struct InterruptSource {
    /// Set by the controller (the PIC's notifier, the LAPIC's) when an
    /// interrupt may be pending; cleared by `acknowledge` when none is.
    pub pending: Arc<AtomicBool>,
    /// Acknowledges the highest-priority interrupt and returns its vector,
    /// or `None` when nothing is pending after all.
    pub acknowledge: Box<dyn FnMut() -> Option<u8> + Send>,
}

impl std::fmt::Debug for InterruptSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterruptSource").field("pending", &self.pending).finish_non_exhaustive()
    }
}

/// What one [`Interpreter::step`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// An instruction retired, or an exception or interrupt was delivered.
    Executed,
    /// The CPU is halted, waiting for an interrupt.
    Halted,
    /// The machine must stop.
    Stopped(StopReason),
}

/// How many blocks run between checks of the machine control.
const BATCH: u32 = 1024;

/// The interpreter: one virtual CPU.
pub struct Interpreter {
    /// Architectural state.
    pub(crate) s: CpuState,
    pub(crate) mem: Arc<GuestMemory>,
    pub(crate) pio: Arc<Bus>,
    pub(crate) mmio: Arc<Bus>,
    pub(crate) control: Arc<MachineControl>,
    pub(crate) tlb: Tlb,
    pub(crate) code: decode::CodeCache,
    /// RIP of the instruction after the one executing.
    pub(crate) next_rip: u64,
    /// The jump-cache index of the block run last (`CodeCache::successor`).
    last_jump: usize,
    pub(crate) intr: Option<InterruptSource>,
    /// Instructions retired.
    pub(crate) retired: u64,
    /// The machine's monotonic clock: the TSC counts it at 1 GHz.
    pub(crate) clock: SharedClock,
    /// The local APIC's CPU-side registers (CR8, TSC deadline), where the
    /// machine has one.
    pub(crate) local_apic: Option<Box<dyn LocalApicPort>>,
    /// The machine has a local APIC (CPUID says so).
    pub(crate) has_apic: bool,
    /// Event counts for `--stats`.
    pub(crate) counters: Counters,
    /// The JIT tier, when a translator is attached.
    pub(crate) tier: Option<tier::Tier>,
    /// A fault a JIT helper saw, for the dispatcher to raise.
    pub(crate) jit_fault: Option<Fault>,
    /// Set when native code left an instruction to the interpreter
    /// (`exit::INTERPRET`): the next block is interpreted.
    pub(crate) interpret_next: bool,
    /// Lockstep checking of native code, when on.
    pub(crate) lockstep: Option<Box<lockstep::Lockstep>>,
    /// What native code runs with: beside the state, at a fixed distance
    /// (`offsets::STATE_FROM_FRAME`), so translated code needs one base
    /// pointer for both.
    pub(crate) frame: JitFrame,
}

/// The registers of a local APIC that the CPU reaches without the bus:
/// CR8 (the TPR's priority class) and the TSC-deadline timer, whose
/// deadlines are in the machine clock's nanoseconds.
pub trait LocalApicPort: Send {
    /// TPR bits 7:4, as CR8 reads them.
    fn tpr_cr8(&self) -> u8;
    /// Writes TPR bits 7:4 from CR8.
    fn set_tpr_cr8(&self, value: u8);
    /// Arms the TSC-deadline timer at monotonic time `ns` (at once if that
    /// is past), or disarms it.
    fn set_tsc_deadline_ns(&self, ns: Option<u64>);
    /// The armed deadline, `None` once fired, disarmed, or outside
    /// TSC-deadline mode.
    fn tsc_deadline_ns(&self) -> Option<u64>;
}

/// What the software CPU counts for `--stats`. `Cell`s, because port and
/// MMIO accesses go through `&self`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) port_io: Cell<u64>,
    pub(crate) mmio: Cell<u64>,
    pub(crate) interrupts: Cell<u64>,
    pub(crate) exceptions: Cell<u64>,
    pub(crate) halts: Cell<u64>,
    /// Microseconds spent halted, waiting for an interrupt.
    pub(crate) halted_us: Cell<u64>,
    pub(crate) blocks_decoded: Cell<u64>,
    /// Block lookups the jump cache answered, and those the code cache
    /// answered after it missed.
    pub(crate) jump_cache_hits: Cell<u64>,
    pub(crate) code_cache_hits: Cell<u64>,
    /// Reads of the clock and the local APIC's CPU-side registers (the
    /// TSC, its deadline, CR8), which a repeated run would not repeat.
    pub(crate) clock_reads: Cell<u64>,
}

/// Adds one to a counter.
#[inline]
pub(crate) fn bump(c: &Cell<u64>) {
    c.set(c.get().wrapping_add(1));
}

impl std::fmt::Debug for Interpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interpreter").field("rip", &self.s.rip).field("retired", &self.retired).finish_non_exhaustive()
    }
}

impl Interpreter {
    /// A CPU over the machine in `ctx`, starting in `state`.
    pub fn new(ctx: MachineContext, state: CpuState) -> Self {
        let mut tlb = Tlb::new();
        // The RAM from guest-physical 0 is one host mapping (the first RAM
        // region), which identity-mapped pages may read directly.
        let low_ram = ctx.memory.low_ram_end();
        if let Some(host) = ctx.memory.host_range(0, low_ram) {
            tlb.identity.set_ram(host, low_ram);
        }
        // What the loaders wrote lies under no cached code yet.
        let _ = ctx.memory.take_device_writes();
        Self {
            s: state,
            mem: ctx.memory,
            pio: ctx.pio,
            mmio: ctx.mmio,
            control: ctx.control,
            tlb,
            code: decode::CodeCache::default(),
            next_rip: 0,
            last_jump: usize::MAX,
            intr: None,
            retired: 0,
            clock: Arc::new(HostClock::default()),
            local_apic: None,
            has_apic: false,
            counters: Counters::default(),
            tier: None,
            jit_fault: None,
            interpret_next: false,
            lockstep: None,
            frame: JitFrame::idle(),
        }
    }

    /// Connects the interrupt controller.
    pub fn set_interrupt_source(&mut self, source: InterruptSource) {
        self.intr = Some(source);
    }

    /// The architectural state.
    pub fn state(&self) -> &CpuState {
        &self.s
    }

    /// The architectural state, for changing. Changes to paging or
    /// segment state must be followed by [`Interpreter::state_changed`].
    pub fn state_mut(&mut self) -> &mut CpuState {
        &mut self.s
    }

    /// Drops cached translations after the state was replaced or edited.
    pub fn state_changed(&mut self) {
        self.flush_code();
    }

    /// Says whether the machine has a local APIC, for CPUID.
    pub fn set_has_apic(&mut self, has_apic: bool) {
        self.has_apic = has_apic;
    }

    /// Counts the TSC from `clock` (the one the machine's timers use), so
    /// the TSC, the TSC-deadline timer and the devices agree.
    pub fn set_clock(&mut self, clock: SharedClock) {
        let now = self.tsc();
        self.clock = clock;
        // Keep the guest's TSC where it was.
        self.s.msrs.tsc_offset = now.wrapping_sub(self.clock.monotonic_ns());
    }

    /// Connects the local APIC's CPU-side registers: CR8 becomes its TPR
    /// and IA32_TSC_DEADLINE (advertised from now on) arms its timer.
    pub fn set_local_apic(&mut self, apic: Box<dyn LocalApicPort>) {
        self.local_apic = Some(apic);
        self.has_apic = true;
    }

    /// The guest memory this CPU runs on.
    pub fn memory(&self) -> Arc<GuestMemory> {
        Arc::clone(&self.mem)
    }

    /// Instructions retired so far.
    pub fn retired(&self) -> u64 {
        self.retired
    }

    fn interrupt_ready(&self) -> bool {
        self.intr.as_ref().is_some_and(|i| i.pending.load(Ordering::Acquire))
    }

    /// Executes one instruction, or delivers one pending interrupt.
    pub fn step(&mut self) -> Step {
        self.step_up_to(1)
    }

    /// Executes one block as `Vcpu::run` does (natively when a translator
    /// has it), or delivers one pending interrupt.
    pub fn step_block(&mut self) -> Step {
        self.step_up_to(usize::MAX)
    }

    /// Executes up to `max` instructions of one block (stopping early at a
    /// taken branch, a mode change or self-modified code), or delivers one
    /// pending interrupt. Interrupts are taken between blocks.
    fn step_up_to(&mut self, max: usize) -> Step {
        let shadow = std::mem::take(&mut self.s.interrupt_shadow);
        if !shadow && self.s.rflags & crate::cpu::flags::IF != 0 && self.interrupt_ready() {
            let vector = self.intr.as_mut().and_then(|i| (i.acknowledge)());
            if let Some(v) = vector {
                self.s.halted = false;
                return match self.deliver_external(v) {
                    Ok(()) => Step::Executed,
                    Err(reason) => Step::Stopped(reason),
                };
            }
        }
        if self.s.halted {
            return Step::Halted;
        }
        match self.execute_block(max) {
            Ok(()) => {
                if self.s.halted {
                    Step::Halted
                } else {
                    Step::Executed
                }
            }
            Err(Fault::Exception(e)) => match self.raise(e) {
                Ok(()) => Step::Executed,
                Err(reason) => Step::Stopped(reason),
            },
            Err(Fault::Stop(reason)) => Step::Stopped(*reason),
        }
    }

    fn execute_block(&mut self, max: usize) -> fault::R<()> {
        // No native code runs here: blocks dropped since the last entry go.
        self.code.bury();
        if self.tier.is_some() {
            self.tier_boundary();
        }
        let jump = decode::CodeCache::jump_index(self.s.rip);
        let decode::FoundBlock { block: ptr, held } = self.block_at_rip()?;
        self.code.successor(self.last_jump, jump, ptr);
        self.last_jump = jump;
        // SAFETY: `ptr` comes from `Arc::as_ptr` and its block outlives
        // this call (see `FoundBlock`); `ManuallyDrop` borrows that
        // reference rather than owning one, so no count moves.
        let block = std::mem::ManuallyDrop::new(unsafe { Arc::from_raw(ptr) });
        let generation = self.code.generation;
        if self.tier.is_some() && !std::mem::take(&mut self.interpret_next) {
            if let Some(native) = self.native_for(&block, max) {
                // Links and the hop table name cached blocks alone.
                let cached = held.is_none();
                let result = if self.lockstep_on() {
                    self.run_native_lockstep(ptr, native, max, cached)
                } else {
                    self.run_native(ptr, native, max, cached)
                };
                drop(held);
                return result;
            }
        }
        let waiting = self.tier.as_mut().is_some_and(|t| std::mem::take(&mut t.waiting));
        let retired_before = self.retired;
        let wrap = if self.in_64bit_mode() { u64::MAX } else { 0xffff_ffff };
        let mut result = Ok(());
        // RIP in a local: reloading it from `self.s` would put the store
        // of each instruction's RIP on the next one's critical path.
        let mut rip = self.s.rip;
        for (handler, ins) in block.entries.iter().take(max) {
            let fallthrough = rip.wrapping_add(ins.len() as u64) & wrap;
            self.next_rip = fallthrough;
            if let Err(e) = handler(self, ins) {
                result = Err(e);
                break;
            }
            rip = self.next_rip;
            self.s.rip = rip;
            self.retired += 1;
            if rip != fallthrough || self.code.generation != generation || self.s.halted {
                break;
            }
        }
        drop(held);
        if waiting {
            if let Some(tier) = self.tier.as_mut() {
                tier.waiting_retired += self.retired - retired_before;
            }
        }
        result
    }

    /// Waits while halted until an interrupt may be pending or the machine
    /// must stop, for at most `limit`.
    fn wait_for_interrupt(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.interrupt_ready() || self.control.stop_reason().is_some() {
                return;
            }
            std::thread::park_timeout(Duration::from_micros(200));
        }
    }
}

impl Vcpu for Interpreter {
    fn run(&mut self) -> Result<VmExit, VcpuError> {
        loop {
            if let Some(reason) = self.control.stop_reason() {
                return Ok(VmExit::Stopped(reason));
            }
            for _ in 0..BATCH {
                match self.step_up_to(usize::MAX) {
                    Step::Executed => {}
                    Step::Halted => {
                        if self.s.rflags & crate::cpu::flags::IF == 0 && self.intr.is_none() {
                            // Nothing can ever wake this CPU: report it
                            // rather than spin until the timeout.
                            return Ok(VmExit::Stopped(StopReason::Error(
                                "the guest halted with interrupts disabled".into(),
                            )));
                        }
                        bump(&self.counters.halts);
                        let halted = Instant::now();
                        self.wait_for_interrupt(Duration::from_millis(10));
                        let us = halted.elapsed().as_micros() as u64;
                        self.counters.halted_us.set(self.counters.halted_us.get() + us);
                        break;
                    }
                    Step::Stopped(reason) => {
                        self.control.request_stop(reason.clone());
                        return Ok(VmExit::Stopped(self.control.stop_reason().unwrap_or(reason)));
                    }
                }
            }
        }
    }

    fn state(&mut self) -> Result<CpuState, VcpuError> {
        let mut s = self.s.clone();
        s.materialize_flags();
        Ok(s)
    }

    fn set_state(&mut self, state: &CpuState) -> Result<(), VcpuError> {
        self.s = state.clone();
        self.state_changed();
        Ok(())
    }

    fn instructions_retired(&self) -> Option<u64> {
        Some(self.retired)
    }

    fn stats(&self) -> VcpuStats {
        let c = &self.counters;
        VcpuStats {
            instructions_retired: Some(self.retired),
            tlb: Some((self.tlb.hits.get(), self.tlb.misses.get())),
            events: [
                ("port I/O", c.port_io.get()),
                ("MMIO", c.mmio.get()),
                ("interrupts", c.interrupts.get()),
                ("exceptions", c.exceptions.get()),
                ("halts", c.halts.get()),
                ("halted (us)", c.halted_us.get()),
                ("soft-TLB flushes", self.tlb.flushes),
                ("soft-TLB page flushes", self.tlb.page_flushes),
                ("blocks from the jump cache", c.jump_cache_hits.get()),
                ("blocks from the code cache", c.code_cache_hits.get()),
                ("blocks decoded", c.blocks_decoded.get()),
                ("blocks evicted", self.code.evictions),
                ("writes that dropped code", self.code.pages_written),
                ("writes beside code", self.code.writes_beside_code),
                ("blocks dropped by writes", self.code.blocks_written),
            ]
            .into_iter()
            .map(|(k, n)| (k.into(), n))
            .chain(self.tier_stats())
            .chain(self.lockstep_stats())
            .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fpu;
#[cfg(test)]
mod tests_lockstep;
#[cfg(test)]
mod tests_protect;
#[cfg(test)]
mod tests_sse4;
#[cfg(test)]
mod tests_xsave;
