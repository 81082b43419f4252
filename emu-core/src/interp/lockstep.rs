//! Lockstep checking of the JIT tier against the interpreter (`popek run
//! --jit-lockstep`).
//!
//! Every native run (a translated region and the regions it chains to, as
//! the trampoline runs them) is repeated by the interpreter from the same
//! state, and the two results must agree: registers, flags (undefined ones
//! too: both tiers use the same semantics), segment, control and SSE
//! state, the bytes either wrote, the number of instructions retired and
//! the exception raised at the end, if any. The first difference stops
//! the machine with a report naming the run's first RIP, its instructions
//! and what differs.
//!
//! How a run is repeated: every guest write the interpreter's access
//! paths make journals the bytes it overwrites, and in lockstep native code
//! writes only through `jit_write` (its requests ask for no inline
//! stores, `TranslationRequest::journal_writes`), which uses those paths.
//! After the native run its writes are undone from the journal, the state is put back and the interpreter runs the same number
//! of instructions with the tier set aside; its result is the one kept.
//! Page-table accessed and dirty bits are not journaled: both tiers set
//! the same ones.
//!
//! A run that did port I/O, MMIO or read the clock (RDTSC, the TSC MSR,
//! the TSC deadline, CR8 through the local APIC) cannot be repeated
//! without repeating its side effects; it is kept as native code left it
//! and counted as not repeatable.

use std::fmt::Write as _;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::control::StopReason;
use crate::cpu::{CpuState, LazyFlags};

use super::decode::Block;
use super::fault::{Exception, Fault, R};
use super::tier::NativeBlock;
use super::Interpreter;

/// Lockstep bookkeeping, present while the mode is on.
#[derive(Debug, Default)]
pub(crate) struct Lockstep {
    /// Writes are journaled (during a native run and its repetition).
    recording: bool,
    journal: Vec<Written>,
    /// Native runs repeated and found equal.
    pub(crate) compared: u64,
    /// Instructions in those runs.
    pub(crate) instructions: u64,
    /// Native runs kept without a comparison (I/O, the clock).
    pub(crate) unrepeatable: u64,
}

/// One journaled guest write: where, how wide, what it overwrote.
#[derive(Clone, Copy, Debug)]
struct Written {
    linear: u64,
    /// The host address (a `usize` so the journal stays `Send`).
    host: usize,
    size: u8,
    old: u64,
}

/// What the interpreter did when it repeated a run.
enum Replay {
    /// It retired the instructions (and raised this exception after them,
    /// when the native run ended in one).
    Done(Option<Exception>),
    /// It differed in a way that leaves no state to compare.
    Differs(String),
}

impl Interpreter {
    /// Turns lockstep checking of native code on or off (it matters only
    /// with a translator attached).
    pub fn set_lockstep(&mut self, on: bool) {
        self.lockstep = on.then(Box::default);
        // Code translated before has inline stores.
        self.flush_code();
    }

    /// Whether lockstep checking is on.
    pub(crate) fn lockstep_on(&self) -> bool {
        self.lockstep.is_some()
    }

    /// Whether guest writes are being journaled (a run is being recorded).
    pub(crate) fn journaling(&self) -> bool {
        self.lockstep.as_deref().is_some_and(|ls| ls.recording)
    }

    /// Journals the `size` bytes at `host` (guest-linear `linear`) about to
    /// be written, when a run is being recorded.
    #[inline]
    pub(crate) fn journal_write(&mut self, linear: u64, host: *mut u8, size: usize) {
        if let Some(ls) = self.lockstep.as_deref_mut().filter(|ls| ls.recording) {
            let old = super::access::read_host(host, size);
            ls.journal.push(Written { linear, host: host as usize, size: size as u8, old });
        }
    }

    /// Events whose side effects a repeated run would repeat, or whose
    /// results would differ: port I/O, MMIO, clock reads.
    fn unrepeatable_events(&self) -> u64 {
        let c = &self.counters;
        c.port_io.get().wrapping_add(c.mmio.get()).wrapping_add(c.clock_reads.get())
    }

    fn record(&mut self, on: bool) -> Vec<Written> {
        let Some(ls) = self.lockstep.as_deref_mut() else { return Vec::new() };
        ls.recording = on;
        std::mem::take(&mut ls.journal)
    }

    /// [`Interpreter::run_native`], then the same instructions again under
    /// the interpreter from the same state; the interpreter's result is
    /// kept, and a difference stops the machine with a report. `block` is
    /// an `Arc<Block>`'s pointer, as `execute_block` passes it.
    pub(crate) fn run_native_lockstep(&mut self, block: *const Block, native: NativeBlock, max: usize, cached: bool) -> R<()> {
        let before = self.s.clone();
        let retired_before = self.retired;
        let events = self.unrepeatable_events();
        // SAFETY: `block` comes from `Arc::as_ptr` of a block the caller
        // keeps alive for this call; one more reference keeps it for a
        // report (the repeat may drop it from the cache).
        let first_block = unsafe {
            Arc::increment_strong_count(block);
            Arc::from_raw(block)
        };
        self.record(true);
        let result = self.run_native(block, native, max, cached);
        let native_writes = self.record(false);
        let retired = self.retired - retired_before;
        let native_fault = match &result {
            Ok(()) => None,
            Err(Fault::Exception(e)) => Some(*e),
            // A stop ends the machine anyway.
            Err(Fault::Stop(_)) => return result,
        };
        if self.unrepeatable_events() != events || retired == 0 && native_fault.is_none() {
            if let Some(ls) = self.lockstep.as_deref_mut() {
                ls.unrepeatable += 1;
            }
            return result;
        }
        let native_state = comparable(&self.s);
        let native_bytes = written_bytes(&native_writes, true);
        undo(&native_writes);

        // The interpreter's turn, from the same state, without the tier.
        self.s = before;
        self.retired = retired_before;
        self.jit_fault = None;
        let tier = self.tier.take();
        self.record(true);
        let replay_events = self.unrepeatable_events();
        let replay = self.replay(retired, native_fault.is_some());
        let interp_writes = self.record(false);
        self.tier = tier;

        let mut report = Vec::new();
        if self.unrepeatable_events() != replay_events {
            // Native code skipped an access to a device or the clock that
            // the interpreter made (which has now happened once).
            report.push("the interpreter did port I/O, MMIO or read the clock where native code did not".to_string());
        }
        match replay {
            Replay::Differs(what) => report.push(what),
            Replay::Done(interp_fault) => {
                if interp_fault != native_fault {
                    report.push(format!("exception: jit {native_fault:?}, interp {interp_fault:?}"));
                }
                state_differences(&native_state, &comparable(&self.s), &mut report);
                memory_differences(&native_bytes, &interp_writes, &mut report);
            }
        }
        if report.is_empty() {
            if let Some(ls) = self.lockstep.as_deref_mut() {
                ls.compared += 1;
                ls.instructions += retired;
            }
            return native_fault.map_or(Ok(()), |e| Err(Fault::Exception(e)));
        }
        let mut text = format!(
            "jit lockstep: native code and the interpreter differ after a native run from RIP {:#x} ({retired} instructions; POPEK_JIT_REGIONS=0 narrows it to one block)\n",
            first_block.rip
        );
        for line in &report {
            let _ = writeln!(text, "  {line}");
        }
        let _ = writeln!(text, "  first block:");
        for (_, ins) in first_block.entries.iter() {
            let _ = writeln!(text, "    {:#x}: {ins}", ins.ip());
        }
        Err(Fault::stop(StopReason::Error(text.trim_end().to_string())))
    }

    /// Interprets `count` instructions, then, when native code ended in an
    /// exception, the instruction that raised it.
    fn replay(&mut self, count: u64, fault_expected: bool) -> Replay {
        let target = self.retired + count;
        while self.retired < target {
            let done = self.retired;
            let left = usize::try_from(target - done).unwrap_or(usize::MAX);
            if let Err(e) = self.execute_block(left) {
                let at = self.retired - (target - count);
                return Replay::Differs(format!("the interpreter ended with {e:?} at RIP {:#x}, after {at} of the {count} instructions native code retired", self.s.rip));
            }
            if self.retired == done {
                return Replay::Differs(format!("the interpreter stopped at RIP {:#x} after {} of {count} instructions", self.s.rip, done + count - target));
            }
        }
        if !fault_expected {
            return Replay::Done(None);
        }
        match self.execute_block(1) {
            Err(Fault::Exception(e)) => Replay::Done(Some(e)),
            Err(Fault::Stop(r)) => Replay::Differs(format!("native code raised an exception where the interpreter stopped: {r:?}")),
            Ok(()) => Replay::Done(None),
        }
    }

    /// The lockstep counters for `--stats`.
    pub(crate) fn lockstep_stats(&self) -> Vec<(std::borrow::Cow<'static, str>, u64)> {
        let Some(ls) = self.lockstep.as_deref() else { return Vec::new() };
        vec![
            ("jit lockstep: native runs compared".into(), ls.compared),
            ("jit lockstep: instructions compared".into(), ls.instructions),
            ("jit lockstep: runs not repeatable (I/O, clock)".into(), ls.unrepeatable),
        ]
    }
}

/// The state with its flags folded into RFLAGS and the lazy record
/// cleared, so two states compare by what the guest can see.
fn comparable(s: &CpuState) -> CpuState {
    let mut s = s.clone();
    s.materialize_flags();
    s.lazy = LazyFlags { op: s.lazy.op, ..LazyFlags::default() };
    s
}

/// Each byte the journal names, by host address: its guest-linear
/// address, its value before the first write and (with `current`) its
/// value now.
fn written_bytes(journal: &[Written], current: bool) -> FxHashMap<usize, (u64, u8, u8)> {
    let mut bytes = FxHashMap::default();
    for w in journal {
        for i in 0..usize::from(w.size) {
            let host = w.host + i;
            bytes.entry(host).or_insert_with(|| {
                let old = (w.old >> (8 * i)) as u8;
                let now = if current { read_byte(host) } else { old };
                (w.linear.wrapping_add(i as u64), old, now)
            });
        }
    }
    bytes
}

/// Puts back what the journal's writes overwrote, newest first.
fn undo(journal: &[Written]) {
    for w in journal.iter().rev() {
        super::access::write_host(w.host as *mut u8, usize::from(w.size), w.old);
    }
}

fn read_byte(host: usize) -> u8 {
    super::access::read_host(host as *mut u8, 1) as u8
}

/// Compares the bytes native code left (`native`: linear, before, after)
/// with memory as the interpreter left it, over every byte either wrote.
fn memory_differences(native: &FxHashMap<usize, (u64, u8, u8)>, interp_writes: &[Written], report: &mut Vec<String>) {
    let interp = written_bytes(interp_writes, false);
    // A byte only the interpreter wrote: native code left it as it was.
    let only_interp = interp.iter().filter(|(h, _)| !native.contains_key(h)).map(|(&h, &(lin, before, _))| (h, lin, before));
    let all = native.iter().map(|(&h, &(lin, _, after))| (h, lin, after)).chain(only_interp);
    let mut differ: Vec<(u64, u8, u8)> = all
        .filter_map(|(host, linear, native_value)| {
            let interp_value = read_byte(host);
            (interp_value != native_value).then_some((linear, native_value, interp_value))
        })
        .collect();
    differ.sort_unstable();
    for &(linear, native_value, interp_value) in differ.iter().take(16) {
        report.push(format!("memory at linear {linear:#x}: jit {native_value:#04x}, interp {interp_value:#04x}"));
    }
    if differ.len() > 16 {
        report.push(format!("... {} more bytes differ", differ.len() - 16));
    }
}

/// Lists what differs between two comparable states, register by register.
fn state_differences(jit: &CpuState, interp: &CpuState, report: &mut Vec<String>) {
    if jit == interp {
        return;
    }
    const GPR: [&str; 16] = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];
    for (i, name) in GPR.iter().enumerate() {
        if jit.gpr[i] != interp.gpr[i] {
            report.push(format!("{name}: jit {:#x}, interp {:#x}", jit.gpr[i], interp.gpr[i]));
        }
    }
    let mut field = |name: &str, differs: bool, j: String, i: String| {
        if differs {
            report.push(format!("{name}: jit {j}, interp {i}"));
        }
    };
    field("rip", jit.rip != interp.rip, format!("{:#x}", jit.rip), format!("{:#x}", interp.rip));
    field("rflags", jit.rflags != interp.rflags, format!("{:#x}", jit.rflags), format!("{:#x}", interp.rflags));
    field("segments", jit.segs != interp.segs, format!("{:?}", jit.segs), format!("{:?}", interp.segs));
    for (name, j, i) in [("cr0", jit.cr0, interp.cr0), ("cr2", jit.cr2, interp.cr2), ("cr3", jit.cr3, interp.cr3), ("cr4", jit.cr4, interp.cr4), ("efer", jit.efer, interp.efer)] {
        field(name, j != i, format!("{j:#x}"), format!("{i:#x}"));
    }
    for (n, (j, i)) in jit.fx.xmm.iter().zip(&interp.fx.xmm).enumerate() {
        field(&format!("xmm{n}"), j != i, format!("{j:#034x}"), format!("{i:#034x}"));
    }
    let mut jit_rest = jit.clone();
    jit_rest.gpr = interp.gpr;
    jit_rest.rip = interp.rip;
    jit_rest.rflags = interp.rflags;
    jit_rest.segs = interp.segs;
    (jit_rest.cr0, jit_rest.cr2, jit_rest.cr3, jit_rest.cr4, jit_rest.efer) = (interp.cr0, interp.cr2, interp.cr3, interp.cr4, interp.efer);
    jit_rest.fx.xmm = interp.fx.xmm;
    if jit_rest != *interp {
        report.push(format!("other state: jit {jit_rest:?}\n    interp {interp:?}"));
    }
}
