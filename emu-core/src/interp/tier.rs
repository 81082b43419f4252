//! The interface between the interpreter and a block translator (the JIT
//! tier), with no code generator in this crate.
//!
//! The interpreter stays in charge: it decodes blocks, counts how often
//! each runs, asks the [`BlockTranslator`] for native code once a block is
//! hot, and calls that code through a [`JitFrame`]. Native code works on
//! the same [`CpuState`] and soft TLB; what it does not handle itself it
//! hands back through helpers, which run the interpreter's own
//! code paths:
//!
//! - [`jit_fallback`](super::jit_fallback) runs one instruction of the block with its
//!   interpreter handler (as `execute_block` does);
//! - [`jit_read`](super::jit_read) / [`jit_write`](super::jit_write) are `read_mem` / `write_mem` for TLB
//!   misses, MMIO, page-crossing and faulting accesses; a write that would
//!   drop cached code (self-modifying code) or reach a device is not made
//!   but answers [`exit::INTERPRET`], so translated code never goes on
//!   past a store that may have changed it;
//! - [`jit_flags`](super::jit_flags) folds the lazy flags into RFLAGS and
//!   returns it; [`jit_carry`](super::jit_carry) returns CF alone;
//! - [`jit_rdtsc`](super::jit_rdtsc) reads the TSC, and
//!   [`jit_div128`](super::jit_div128) divides 128 bits by 64.
//!
//! They live in `tier_helpers`.
//!
//! Every helper returns or records one of the [`exit`] codes. On
//! [`exit::FAULT`] the exception (or stop) is stashed in the interpreter;
//! native code then returns at once with the state as it was before the
//! faulting instruction (RIP at it), and the dispatcher raises it exactly as
//! `execute_block`'s error path does.
//!
//! Native code never outlives its translation: it is stored in the decoded
//! [`Block`] and dropped with it (self-modifying code, `flush_code`), and a
//! [`NativeBlock`] carries the translator generation it was made in, which
//! the translator bumps when it frees code memory. The dispatcher only
//! frees memory between blocks.
//!
//! Background translation: a translator that runs on a compiler thread
//! accepts owned [`TranslationJob`]s ([`BlockTranslator::submit`]) and
//! hands back [`Finished`] translations ([`BlockTranslator::finished`]);
//! the block keeps being interpreted meanwhile. The dispatcher installs a
//! result at a block boundary only if the block it was made for is still
//! the one queued (ticket), alive and cached, and the result belongs to
//! the current generation; anything else is discarded. A flush bumps the
//! generation at once on the vCPU side, after every block was dropped, so
//! the compiler thread may free the old code when it sees the flush.
//! Without background support, with `POPEK_JIT_SYNC=1` or at threshold 0
//! the translation is made synchronously, as before.
//!
//! Chaining: native blocks do not return to the dispatcher between blocks.
//! A block's exit to a static target in its own guest page reads its
//! [`LinkSlot`]; other clean block ends (indirect jumps, returns,
//! cross-page targets) probe a per-CPU table validated by the TLB epoch.
//! On a hit native code hands over to the target's entry itself, by a
//! tail call, taking one from the chain budget; every 64th time it
//! answers [`exit::CHAIN`] instead, and [`Interpreter::run_native`], a
//! small trampoline loop, checks stop requests and pending interrupts
//! before it calls the entry. A miss answers [`exit::LOOKUP`]: the loop
//! looks the new RIP up in the same table (and fills the exit's link when
//! the target is in the same page). Retired instructions are counted on
//! across the chain. A block the cache drops is marked dead at once
//! (links and the table check its `live` flag) and freed only at the next
//! dispatcher entry, so a chained block that invalidates itself keeps its
//! instructions while it finishes.

use std::mem::offset_of;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use iced_x86::{Instruction, Mnemonic};

use crate::cpu::{seg, CpuState, LazyFlags, Segment};
use crate::mmu::TlbEntry;

use super::decode::Block;
use super::region::{Holding, Region};
use super::fault::Fault;
use super::tier_helpers::Helpers;
use super::Interpreter;

/// What native code and helpers answer.
pub mod exit {
    /// Go on with the next instruction.
    pub const CONTINUE: u32 = 0;
    /// The instruction completed, but the block must stop: a control
    /// transfer was taken, cached code was dropped (self-modifying code),
    /// the CPU halted or its mode may have changed. RIP is committed.
    pub const END_BLOCK: u32 = 1;
    /// The instruction faulted: the fault is stashed in the interpreter and
    /// RIP is the faulting instruction's.
    pub const FAULT: u32 = 2;
    /// A block ended at a linked direct exit or a hop-table hit: the
    /// state is committed (as for `CONTINUE` at a block end) and
    /// `JitFrame::next` and `JitFrame::block` hold the live target's
    /// entry and block. Native code usually hands over to that entry
    /// itself, by a tail call, taking one from the chain budget; it
    /// answers CHAIN instead every 64th time (the translator's
    /// `ATTENTION_EVERY`), for the dispatcher to look for a stop or an
    /// interrupt, and when the budget is spent.
    pub const CHAIN: u32 = 3;
    /// A block ended at a control transfer whose target may be looked up
    /// (indirect, or a direct exit not linked; `JitFrame::exit_link` then
    /// names the exit's link). The state is committed.
    pub const LOOKUP: u32 = 4;
    /// The instruction did not run: its write would have dropped cached
    /// code (which is now dropped) or gone to a device. The state is as
    /// before it, RIP at it, and the dispatcher interprets it before any
    /// native code runs again.
    pub const INTERPRET: u32 = 5;
    /// A memory access missed the TLB in code that leaves misses to the
    /// interpreter ([`super::TranslationRequest::misses_to_interpreter`]):
    /// as `INTERPRET`, the state before the instruction, which the
    /// dispatcher interprets (filling the TLB) before native code runs
    /// again.
    pub const MISS: u32 = 6;
}

/// Miss exits (`exit::MISS`) a region's optimised code may take in a row
/// before it is compiled again with helper calls for misses (it earns
/// more as it runs: `Region::note_miss_exit`): a loop whose accesses keep
/// missing (a device's registers, two pages that evict each other from
/// the TLB) would otherwise leave its code on every run.
pub const MISS_EXITS_BEFORE_HELPERS: u32 = 256;

/// Blocks one dispatcher entry may chain through before it returns (stop
/// requests and interrupts are checked every 64 hand-overs and loop back
/// edges: see [`exit::CHAIN`]).
pub const CHAIN_BUDGET: u32 = 1024;

/// A region that loops is compiled quickly first; once its back edges
/// have run this many times, it is compiled again with Cranelift's
/// optimiser. Most loops of a Linux boot run a few thousand iterations in
/// all; the decompressor's run for seconds. (A Linux boot optimises 216
/// loops at 8,192, 80 at 65,536 and 32 at 500,000; at 65,536 the kernel
/// phase was shortest.)
pub const HOT_LOOP_BACK_EDGES: u32 = 65_536;
const _: () = assert!(HOT_LOOP_BACK_EDGES.is_power_of_two(), "first-tier code tests it with a mask");

/// Where a region's first-tier code finds its optimised code, and counts
/// its loop's back edges until then (see
/// [`TranslationRequest::optimized_slot`]). `#[repr(C)]`: native code
/// uses it by its `TIER_SLOT_*` offsets.
#[repr(C)]
#[derive(Debug, Default)]
pub struct TierSlot {
    /// The optimised code's entry, or 0 until it is installed.
    pub entry: AtomicUsize,
    /// Back edges taken by the first-tier code (written by it alone).
    pub back_edges: AtomicU64,
}

/// The link of one direct exit of a native block, owned by the source
/// block; `#[repr(C)]`, read by native code at the `LINK_*` offsets.
#[repr(C)]
#[derive(Debug, Default)]
pub struct LinkSlot {
    /// The target block's `live` flag (an `AtomicBool`, one byte), or null
    /// while unlinked.
    valid: AtomicPtr<AtomicBool>,
    /// The target's native entry.
    entry: AtomicUsize,
    /// The target `Block`.
    block: AtomicPtr<std::ffi::c_void>,
    /// The target's entry index (see [`NativeBlock::index`]).
    index: AtomicU32,
    /// Keeps the flag `valid` points at allocated.
    keep: Mutex<Option<Arc<AtomicBool>>>,
}

impl LinkSlot {
    /// Points the link at `target`, a cached block in the exit's page.
    fn link(&self, target: &Block, entry: usize, index: u32) {
        let mut keep = self.keep.lock().unwrap_or_else(|e| e.into_inner());
        self.entry.store(entry, Ordering::Relaxed);
        self.index.store(index, Ordering::Relaxed);
        self.block.store(std::ptr::from_ref(target).cast_mut().cast(), Ordering::Relaxed);
        self.valid.store(Arc::as_ptr(&target.live).cast_mut(), Ordering::Release);
        // Replaced after the store above: the old flag is no longer named.
        *keep = Some(Arc::clone(&target.live));
    }
}

/// What native code is called with. `#[repr(C)]`: the translator reads it
/// by the `FRAME_*` offsets. It lives in the [`Interpreter`], at a fixed
/// distance from the CPU state (`offsets::STATE_FROM_FRAME`), so native
/// code reaches both from the one frame pointer.
#[repr(C)]
#[derive(Debug)]
pub struct JitFrame {
    /// The CPU state.
    pub state: *mut CpuState,
    /// The TLB set of the current privilege (user or supervisor), chosen
    /// at block entry; `TLB_ENTRIES` entries.
    pub tlb: *const TlbEntry,
    /// The identity pages for that privilege: the supervisor set's, or
    /// none at CPL 3 (`mmu::NO_IDENTITY_PAGES`).
    pub identity: *const crate::mmu::IdentityPages,
    /// The interpreter, for helpers.
    pub interp: *mut Interpreter,
    /// The block being run (opaque), for [`jit_fallback`](super::jit_fallback).
    pub block: *const std::ffi::c_void,
    /// Instructions retired since the dispatcher's call: zeroed before
    /// it, counted on by each region a chain hands over to (a region
    /// starts from it), and set by native code before it returns.
    pub retired: u64,
    /// The status of the last [`jit_read`](super::jit_read).
    pub status: u32,
    /// A helper's result, where native code calls helpers through an
    /// adapter that hands it back in memory (every register is restored).
    pub ret: u64,
    /// Set by native code answering [`exit::CHAIN`]: the next entry.
    pub next: usize,
    /// Set by native code answering [`exit::LOOKUP`] at a direct exit that
    /// may be linked: its [`LinkSlot`]; null otherwise.
    pub exit_link: *const LinkSlot,
    /// The tier's hop table (`HOPS` entries of `HOP_SIZE` bytes), probed
    /// by native code at indirect exits.
    pub hops: *const Hop,
    /// The TLB's epochs (`Tlb::epochs`, two words), read through a
    /// pointer: helpers called by the chain may change them.
    pub epoch: *const u64,
    /// The CPL the chain runs at (its TLB set was chosen by it).
    pub cpl: u32,
    /// Chained blocks and region back edges left before the chain must
    /// return to the dispatcher; native code takes one per back edge and
    /// leaves at zero.
    pub budget: u32,
    /// The interrupt controller's "may be pending" flag (a never-set
    /// flag without one), and the machine's stop flag: region loops leave
    /// when either says so (the first only with IF set).
    pub pending: *const AtomicBool,
    /// See `pending`.
    pub stopping: *const AtomicBool,
    /// The entry index the native function is called with (which block
    /// of its region to start at; see [`NativeBlock::index`]).
    pub entry_index: u32,
    /// Set by first-tier code of a loop (see
    /// [`TranslationRequest::optimized_slot`]) whose back edges reached a
    /// multiple of [`HOT_LOOP_BACK_EDGES`]: that slot's address, which
    /// names the region to optimise. 0 otherwise.
    pub hot_loop: usize,
    /// Hand-overs native code made itself (tail calls from one region to
    /// the next, see [`exit::CHAIN`]) since the dispatcher's call.
    pub tail_chained: u64,
}

// SAFETY: the frame's pointers lead into the interpreter that owns it (or
// to statics and the tier's tables it owns), and are only used by the
// thread running that interpreter; the frame moves with it.
unsafe impl Send for JitFrame {}

impl JitFrame {
    /// A frame between native runs: no pointer is used until `run_native`
    /// fills them in.
    pub(crate) const fn idle() -> Self {
        Self {
            state: std::ptr::null_mut(),
            tlb: std::ptr::null(),
            identity: &raw const crate::mmu::NO_IDENTITY_PAGES,
            interp: std::ptr::null_mut(),
            block: std::ptr::null(),
            retired: 0,
            status: exit::CONTINUE,
            ret: 0,
            next: 0,
            exit_link: std::ptr::null(),
            hops: std::ptr::null(),
            epoch: std::ptr::null(),
            cpl: 0,
            budget: 0,
            pending: std::ptr::null(),
            stopping: std::ptr::null(),
            entry_index: 0,
            hot_loop: 0,
            tail_chained: 0,
        }
    }
}

/// Byte offsets the translator uses instead of guessing layouts.
pub mod offsets {
    use super::*;

    /// Where the `CpuState` lies relative to the frame (both live in the
    /// interpreter): state field `f` is at `frame + STATE_FROM_FRAME + f`.
    pub const STATE_FROM_FRAME: i32 = offset_of!(Interpreter, s) as i32 - offset_of!(Interpreter, frame) as i32;
    /// `JitFrame::tlb`.
    pub const FRAME_TLB: i32 = offset_of!(JitFrame, tlb) as i32;
    /// `JitFrame::retired`.
    pub const FRAME_RETIRED: i32 = offset_of!(JitFrame, retired) as i32;
    /// `JitFrame::status`.
    pub const FRAME_STATUS: i32 = offset_of!(JitFrame, status) as i32;
    /// `JitFrame::ret`.
    pub const FRAME_RET: i32 = offset_of!(JitFrame, ret) as i32;
    /// `JitFrame::block`.
    pub const FRAME_BLOCK: i32 = offset_of!(JitFrame, block) as i32;
    /// `JitFrame::next`.
    pub const FRAME_NEXT: i32 = offset_of!(JitFrame, next) as i32;
    /// `JitFrame::exit_link`.
    pub const FRAME_EXIT_LINK: i32 = offset_of!(JitFrame, exit_link) as i32;
    /// `JitFrame::hops`.
    pub const FRAME_HOPS: i32 = offset_of!(JitFrame, hops) as i32;
    /// `JitFrame::epoch`.
    pub const FRAME_EPOCH: i32 = offset_of!(JitFrame, epoch) as i32;
    /// `JitFrame::cpl`.
    pub const FRAME_CPL: i32 = offset_of!(JitFrame, cpl) as i32;
    /// `JitFrame::budget`.
    pub const FRAME_BUDGET: i32 = offset_of!(JitFrame, budget) as i32;
    /// `JitFrame::pending`.
    pub const FRAME_PENDING: i32 = offset_of!(JitFrame, pending) as i32;
    /// `JitFrame::stopping`.
    pub const FRAME_STOPPING: i32 = offset_of!(JitFrame, stopping) as i32;
    /// `JitFrame::entry_index` (a u32).
    pub const FRAME_ENTRY: i32 = offset_of!(JitFrame, entry_index) as i32;
    /// `JitFrame::hot_loop`.
    pub const FRAME_HOT_LOOP: i32 = offset_of!(JitFrame, hot_loop) as i32;
    /// `JitFrame::tail_chained`.
    pub const FRAME_TAIL_CHAINED: i32 = offset_of!(JitFrame, tail_chained) as i32;
    /// `JitFrame::identity`.
    pub const FRAME_IDENTITY: i32 = offset_of!(JitFrame, identity) as i32;
    /// `IdentityPages::tags` and `addend` (`mmu::IdentityPages`).
    pub const IDENTITY_TAGS: i32 = offset_of!(crate::mmu::IdentityPages, tags) as i32;
    /// See `IDENTITY_TAGS`.
    pub const IDENTITY_ADDEND: i32 = offset_of!(crate::mmu::IdentityPages, addend) as i32;
    /// `TierSlot::back_edges`.
    pub const TIER_SLOT_BACK_EDGES: i32 = offset_of!(TierSlot, back_edges) as i32;
    /// `Hop::index` (a u32).
    pub const HOP_INDEX: i32 = offset_of!(Hop, index) as i32;
    /// `LinkSlot::index` (a u32).
    pub const LINK_INDEX: i32 = offset_of!(LinkSlot, index) as i32;
    /// `Hop::rip`.
    pub const HOP_RIP: i32 = offset_of!(Hop, rip) as i32;
    /// `Hop::epoch`.
    pub const HOP_EPOCH: i32 = offset_of!(Hop, epoch) as i32;
    /// `Hop::epoch_offset` (a `u32`: bytes into `Tlb::epochs`).
    pub const HOP_EPOCH_OFFSET: i32 = offset_of!(Hop, epoch_offset) as i32;
    /// `Hop::cpl` (a byte).
    pub const HOP_CPL: i32 = offset_of!(Hop, cpl) as i32;
    /// `Hop::live_ptr`.
    pub const HOP_LIVE: i32 = offset_of!(Hop, live_ptr) as i32;
    /// `Hop::block`.
    pub const HOP_BLOCK: i32 = offset_of!(Hop, block) as i32;
    /// `Hop::entry`.
    pub const HOP_ENTRY: i32 = offset_of!(Hop, entry) as i32;
    /// The size of a `Hop`, for indexing.
    pub const HOP_SIZE: u64 = std::mem::size_of::<Hop>() as u64;
    /// The number of hop-table entries (a power of two); native code
    /// indexes it as `hop_index` does.
    pub const HOP_COUNT: u64 = HOPS as u64;
    /// `LinkSlot::valid`.
    pub const LINK_VALID: i32 = offset_of!(LinkSlot, valid) as i32;
    /// `LinkSlot::entry`.
    pub const LINK_ENTRY: i32 = offset_of!(LinkSlot, entry) as i32;
    /// `LinkSlot::block`.
    pub const LINK_BLOCK: i32 = offset_of!(LinkSlot, block) as i32;
    /// The size of a `LinkSlot`, for indexing.
    pub const LINK_SIZE: u64 = std::mem::size_of::<LinkSlot>() as u64;
    /// `CpuState::gpr` (16 u64 in encoding order).
    pub const GPR: i32 = offset_of!(CpuState, gpr) as i32;
    /// `CpuState::rip`.
    pub const RIP: i32 = offset_of!(CpuState, rip) as i32;
    /// `CpuState::rflags`.
    pub const RFLAGS: i32 = offset_of!(CpuState, rflags) as i32;
    /// `CpuState::segs[FS].base`.
    pub const FS_BASE: i32 = (offset_of!(CpuState, segs) + seg::FS * std::mem::size_of::<Segment>() + offset_of!(Segment, base)) as i32;
    /// `CpuState::segs[GS].base`.
    pub const GS_BASE: i32 = (offset_of!(CpuState, segs) + seg::GS * std::mem::size_of::<Segment>() + offset_of!(Segment, base)) as i32;
    /// `CpuState::lazy.op` (a `FlagsOp` byte).
    pub const LAZY_OP: i32 = (offset_of!(CpuState, lazy) + offset_of!(LazyFlags, op)) as i32;
    /// `CpuState::lazy.size` (a byte).
    pub const LAZY_SIZE: i32 = (offset_of!(CpuState, lazy) + offset_of!(LazyFlags, size)) as i32;
    /// `CpuState::lazy.src1`.
    pub const LAZY_SRC1: i32 = (offset_of!(CpuState, lazy) + offset_of!(LazyFlags, src1)) as i32;
    /// `CpuState::lazy.src2`.
    pub const LAZY_SRC2: i32 = (offset_of!(CpuState, lazy) + offset_of!(LazyFlags, src2)) as i32;
    /// `CpuState::lazy.res`.
    pub const LAZY_RES: i32 = (offset_of!(CpuState, lazy) + offset_of!(LazyFlags, res)) as i32;
    /// `CpuState::lazy.aux`.
    pub const LAZY_AUX: i32 = (offset_of!(CpuState, lazy) + offset_of!(LazyFlags, aux)) as i32;
    /// `TlbEntry::read_tag`.
    pub const TLB_READ_TAG: i32 = offset_of!(TlbEntry, read_tag) as i32;
    /// `TlbEntry::write_tag`.
    pub const TLB_WRITE_TAG: i32 = offset_of!(TlbEntry, write_tag) as i32;
    /// `TlbEntry::addend`.
    pub const TLB_ADDEND: i32 = offset_of!(TlbEntry, addend) as i32;
    /// The size of a `TlbEntry`, for indexing.
    pub const TLB_ENTRY_SIZE: i64 = std::mem::size_of::<TlbEntry>() as i64;
}

/// Native code for one block: `entry(frame)`, with
/// `JitFrame::entry_index` set to `index`, returns an [`exit`] code.
#[derive(Clone, Copy, Debug)]
pub struct NativeBlock {
    /// The compiled function (of the block's region).
    pub entry: unsafe extern "C" fn(*mut JitFrame) -> u32,
    /// Which block of the region the function starts at: 0 for the
    /// block the region was formed from, `i` for its block `i`.
    pub index: u32,
    /// The translator generation the code belongs to; code of an older
    /// generation has been freed and is never called.
    pub generation: u64,
    /// A first-tier translation that calls the code in the request's
    /// `optimized_slot` once that is set: worth optimising when it runs
    /// hot.
    pub tiered: bool,
}

/// A decoded block offered for translation, with the facts the code may
/// assume while it runs.
#[derive(Debug)]
pub struct TranslationRequest<'a> {
    /// RIP of the first instruction.
    pub rip: u64,
    /// The decoding mode: 16, 32 or 64.
    pub bitness: u32,
    /// The instructions, in order; instruction `i` is `fallback(frame, i)`.
    pub instructions: &'a [Instruction],
    /// 64-bit mode: CS, DS, ES and SS have base 0 and no limit, FS and GS
    /// bases are in `CpuState::segs`, addresses must be canonical.
    pub long_mode: bool,
    /// The helpers' addresses.
    pub helpers: Helpers,
    /// The address of two [`LinkSlot`]s per region block (block `i`'s
    /// branch target at `2i`, its fall-through at `2i + 1`), valid as long
    /// as the code, or 0 for none. Native code may link only exits whose
    /// target is in the page of `rip`.
    pub links: usize,
    /// The region: the blocks `instructions` is made of, the first being
    /// the entry (at `rip`); all in the page of `rip`.
    pub blocks: &'a [RegionBlock],
    /// Every guest write must go through the write helper, none through
    /// the TLB inline (lockstep journals them there).
    pub journal_writes: bool,
    /// Tiered compilation, for a region that loops: the address of a
    /// word that holds 0 until the region's optimised code exists, then
    /// that code's `entry`. The translator may compile the region quickly
    /// and make its entry call the function there once it is set. 0: no
    /// second tier, compile the final code now.
    pub optimized_slot: usize,
    /// This is the second tier: compile with every optimisation, no slot.
    pub optimize: bool,
    /// The supervisor TLB's identity-mapped pages were worth a look when
    /// the code was asked for (`mmu::IdentityPages::worth_a_look`): loads
    /// may look there before the TLB.
    pub identity_pages: bool,
    /// A memory access that misses (the TLB, or the identity pages where
    /// loads look there) may leave the code with [`exit::MISS`] rather
    /// than call a helper and rejoin: the fast paths then run straight
    /// on, with nothing merging into them. Asked for the second tier until
    /// the region took [`MISS_EXITS_BEFORE_HELPERS`] miss exits.
    pub misses_to_interpreter: bool,
}

/// One block of a region: where its instructions are in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionBlock {
    /// RIP of its first instruction.
    pub rip: u64,
    /// Its first instruction's index in the request's instructions.
    pub start: usize,
    /// How many instructions it has.
    pub len: usize,
    /// Whether the fall-through at its end may be linked or followed: the
    /// last instruction does not change the mode, paging or interrupt
    /// state, or it ends the block only for the chain's checks
    /// ([`ends_block_for_the_chain`]).
    pub chain_fallthrough: bool,
    /// Whether native code may be entered at this block: the first block,
    /// the calls' return addresses and every block with no or several
    /// ways in from the region (joins, loop heads). Others are reached
    /// only from within and start with their predecessor's registers and
    /// flags. A block that becomes hot where a region holds it as an entry
    /// runs that code instead of a translation of its own.
    pub entry: bool,
}

/// Whether `ins` ends its block only so that what it makes a device do
/// (raise an interrupt, ask the machine to stop) is seen before the next
/// instruction: an OUT. The chain loop checks both between blocks, so a
/// block ending with it chains to its fall-through, but through the chain,
/// never into a block of its own region.
pub fn ends_block_for_the_chain(ins: &Instruction) -> bool {
    ins.mnemonic() == Mnemonic::Out
}

/// An owned [`TranslationRequest`], for a compiler thread: plain data (the
/// link address stays valid while the block lives, and native code made
/// from it is installed only into that block).
#[derive(Debug, Clone)]
pub struct TranslationJob {
    /// Names the request in its [`Finished`] answer.
    pub ticket: u64,
    /// See [`TranslationRequest`].
    pub rip: u64,
    /// See [`TranslationRequest`].
    pub bitness: u32,
    /// See [`TranslationRequest`].
    pub instructions: Vec<Instruction>,
    /// See [`TranslationRequest`].
    pub long_mode: bool,
    /// See [`TranslationRequest`].
    pub helpers: Helpers,
    /// See [`TranslationRequest`].
    pub links: usize,
    /// See [`TranslationRequest`].
    pub blocks: Vec<RegionBlock>,
    /// See [`TranslationRequest`].
    pub journal_writes: bool,
    /// See [`TranslationRequest`].
    pub optimized_slot: usize,
    /// See [`TranslationRequest`].
    pub optimize: bool,
    /// See [`TranslationRequest`].
    pub identity_pages: bool,
    /// See [`TranslationRequest`].
    pub misses_to_interpreter: bool,
}

impl TranslationJob {
    /// The request to translate.
    pub fn request(&self) -> TranslationRequest<'_> {
        TranslationRequest {
            rip: self.rip,
            bitness: self.bitness,
            instructions: &self.instructions,
            long_mode: self.long_mode,
            helpers: self.helpers,
            links: self.links,
            blocks: &self.blocks,
            journal_writes: self.journal_writes,
            optimized_slot: self.optimized_slot,
            optimize: self.optimize,
            identity_pages: self.identity_pages,
            misses_to_interpreter: self.misses_to_interpreter,
        }
    }
}

/// A background translation's answer.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// The job's ticket.
    pub ticket: u64,
    /// The code (`None`: refused or failed), with its generation.
    pub native: Option<NativeBlock>,
}

/// A translator from decoded blocks to native code (the JIT).
pub trait BlockTranslator: Send {
    /// Native code for the block, or `None` when the translator does not
    /// handle it (the block is then always interpreted).
    fn translate(&mut self, req: &TranslationRequest<'_>) -> Option<NativeBlock>;
    /// Queues a translation on a compiler thread; gives the job back when
    /// the translator works only synchronously (the default).
    // The job comes back at most once per translator (it then counts as
    // synchronous): not worth a box on every submission.
    #[allow(clippy::result_large_err)]
    fn submit(&mut self, job: TranslationJob) -> Result<(), TranslationJob> {
        Err(job)
    }
    /// Appends the background translations finished since the last call.
    fn finished(&mut self, _out: &mut Vec<Finished>) {}
    /// A flag the compiler thread raises when answers wait (`finished`
    /// lowers it), so the dispatcher need not ask at every block boundary;
    /// `None`: ask every time.
    fn results_flag(&self) -> Option<Arc<AtomicBool>> {
        None
    }
    /// Whether the translator wants its code memory freed (asked after
    /// translations arrive; the dispatcher then drops every block at the
    /// next boundary and calls `flush`).
    fn wants_flush(&self) -> bool;
    /// Drops all native code; later blocks belong to a new generation.
    fn flush(&mut self);
    /// The current generation.
    fn generation(&self) -> u64;
    /// The translator's own counters, for `--stats`.
    fn stats(&self) -> Vec<(String, u64)>;
    /// How many runs make a block hot: what the translator's compile cost
    /// earns back (`POPEK_JIT_THRESHOLD` overrides it).
    fn hot_threshold(&self) -> u32 {
        DEFAULT_HOT_THRESHOLD
    }
}

/// Runs that make a block hot for a translator that does not say: 1000
/// rather than 50 for a Cranelift-only JIT, where booting Linux compiled
/// 69k blocks at 50 (20 s of compile time, POPEK-INIT-OK at 36 s) and 11k
/// at 1000 (3 s, POPEK-INIT-OK at 24 s).
pub const DEFAULT_HOT_THRESHOLD: u32 = 1000;

/// The JIT tier attached to an interpreter.
pub(crate) struct Tier {
    pub(crate) translator: Box<dyn BlockTranslator>,
    /// Runs of a block before it is translated.
    pub(crate) threshold: u32,
    /// Translate regions of blocks (`POPEK_JIT_REGIONS=0`: one block each).
    pub(crate) regions: bool,
    /// The translator's "answers wait" flag, if it has one.
    results: Option<Arc<AtomicBool>>,
    /// Code was dropped while native code could run: free it at the next
    /// block boundary.
    pub(crate) flush_pending: bool,
    pub(crate) compiled: u64,
    pub(crate) refused: u64,
    pub(crate) native_runs: u64,
    pub(crate) fallbacks: u64,
    /// Fallbacks by mnemonic.
    pub(crate) fallback_by_mnemonic: Vec<u64>,
    /// Native runs entered from the dispatcher, through a link, and
    /// through the hop table; links filled.
    pub(crate) dispatched: u64,
    pub(crate) chained: u64,
    pub(crate) hopped: u64,
    pub(crate) linked: u64,
    /// Native runs that left a write to the interpreter
    /// (`exit::INTERPRET`).
    pub(crate) writes_interpreted: u64,
    /// Native runs that left a TLB miss to the interpreter (`exit::MISS`),
    /// and regions whose optimised code was dropped for taking too many.
    pub(crate) misses_interpreted: u64,
    pub(crate) miss_helpers_again: u64,
    /// Native entries by RIP, for control transfers whose target is only
    /// known at run time.
    hops: Box<[Hop]>,
    /// Instructions retired by native code (fallbacks included).
    pub(crate) native_retired: u64,
    /// Translate on the vCPU thread (`POPEK_JIT_SYNC=1`, threshold 0).
    sync: bool,
    /// Blocks waiting for a background translation, by address: the
    /// ticket and the block (weak: a dropped block is not kept alive).
    queued: rustc_hash::FxHashMap<usize, (u64, Weak<Block>)>,
    /// The regions holding each block, by the block's host address:
    /// a block that becomes hot inside a translated region enters that
    /// region's code instead of being translated again.
    covered: rustc_hash::FxHashMap<u64, Weak<Region>>,
    /// Regions whose optimised (second-tier) translation is in flight,
    /// by ticket.
    optimizing: rustc_hash::FxHashMap<u64, Weak<Region>>,
    /// Regions by the address of their `optimized` slot, which their
    /// first-tier code reports in `JitFrame::hot_loop`.
    tiered: rustc_hash::FxHashMap<usize, Weak<Region>>,
    /// `tiered`'s size after it was last pruned.
    tiered_pruned: usize,
    /// Regions whose optimised code was installed.
    pub(crate) optimized: u64,
    next_ticket: u64,
    finished: Vec<Finished>,
    pub(crate) submitted: u64,
    pub(crate) installed: u64,
    pub(crate) discarded: u64,
    /// The last `native_for` that answered `None` did so because the
    /// block's code is being compiled (not because the block is cold).
    pub(crate) waiting: bool,
    /// Instructions interpreted while their block's code was being
    /// compiled.
    pub(crate) waiting_retired: u64,
}

/// A native block by RIP, valid while the TLB epoch and CPL it was found
/// under hold (so RIP still maps to the block's page) and the block lives.
/// `#[repr(C)]`: native code probes it by the `HOP_*` offsets.
#[repr(C)]
#[derive(Clone)]
pub struct Hop {
    rip: u64,
    /// The value of `Tlb::epochs` at `epoch_offset` (bytes: 0 or 8) when
    /// the entry was made; it holds while that stays.
    epoch: u64,
    epoch_offset: u32,
    cpl: u8,
    /// The address of the block's `live` flag (an `AtomicBool`, one byte),
    /// kept allocated by `live`; [`DEAD`] for an empty entry, so native code
    /// needs no null check. An address: the table must stay `Send`.
    live_ptr: usize,
    /// The `Block` (an address, as above).
    block: usize,
    entry: usize,
    index: u32,
    /// Keeps the flag `live_ptr` names allocated; `None`: an empty entry.
    live: Option<Arc<AtomicBool>>,
}

/// The `live` flag of empty hop entries: never set.
static DEAD: AtomicBool = AtomicBool::new(false);

impl Default for Hop {
    fn default() -> Self {
        Self { rip: 0, epoch: 0, epoch_offset: 0, cpl: 0, live_ptr: std::ptr::from_ref(&DEAD) as usize, block: 0, entry: 0, index: 0, live: None }
    }
}

const HOPS: usize = 4096;

/// The run at which a block not yet hot looks for a translated region
/// that holds it.
const EARLY_LOOK: u32 = 16;

fn hop_index(rip: u64) -> usize {
    (rip ^ (rip >> 12)) as usize & (HOPS - 1)
}

impl Tier {
    fn new(translator: Box<dyn BlockTranslator>) -> Self {
        let threshold = std::env::var("POPEK_JIT_THRESHOLD").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| translator.hot_threshold());
        Self {
            results: translator.results_flag(),
            translator,
            threshold,
            regions: std::env::var_os("POPEK_JIT_REGIONS").is_none_or(|v| v != "0"),
            flush_pending: false,
            compiled: 0,
            refused: 0,
            native_runs: 0,
            fallbacks: 0,
            fallback_by_mnemonic: vec![0; Mnemonic::values().len()],
            dispatched: 0,
            writes_interpreted: 0,
            misses_interpreted: 0,
            miss_helpers_again: 0,
            chained: 0,
            hopped: 0,
            linked: 0,
            hops: vec![Hop::default(); HOPS].into_boxed_slice(),
            native_retired: 0,
            sync: std::env::var_os("POPEK_JIT_SYNC").is_some_and(|v| v == "1"),
            queued: rustc_hash::FxHashMap::default(),
            covered: rustc_hash::FxHashMap::default(),
            optimizing: rustc_hash::FxHashMap::default(),
            tiered: rustc_hash::FxHashMap::default(),
            tiered_pruned: 0,
            optimized: 0,
            next_ticket: 0,
            finished: Vec::new(),
            submitted: 0,
            installed: 0,
            discarded: 0,
            waiting: false,
            waiting_retired: 0,
        }
    }

    /// Installs the finished background translations into their blocks
    /// when the block is still the one queued, alive and cached, and the
    /// code of the current generation; discards the rest.
    fn install_finished(&mut self) {
        let mut done = std::mem::take(&mut self.finished);
        self.translator.finished(&mut done);
        let generation = self.translator.generation();
        for f in done.drain(..) {
            if let Some(region) = self.optimizing.remove(&f.ticket) {
                self.install_optimized(region.upgrade(), f.native);
                continue;
            }
            let Some(addr) = self.queued.iter().find(|(_, (t, _))| *t == f.ticket).map(|(&a, _)| a) else {
                self.discarded += 1;
                continue;
            };
            let Some((_, weak)) = self.queued.remove(&addr) else { continue };
            let block = weak.upgrade();
            let fresh = f.native.is_none_or(|n| n.generation == generation);
            match block {
                Some(block) if block.live.load(Ordering::Acquire) && fresh => {
                    if f.native.is_some() {
                        self.compiled += 1;
                        self.installed += 1;
                    } else {
                        self.refused += 1;
                    }
                    let _ = block.native.set(f.native);
                    if let Some(r) = block.region.get() {
                        let _ = r.installed.set(f.native);
                    }
                }
                Some(block) => {
                    self.discarded += 1;
                    if let Some(r) = block.region.get() {
                        let _ = r.installed.set(None);
                    }
                }
                None => self.discarded += 1,
            }
        }
        self.finished = done;
    }

    /// Hands `job` to the compiler thread when `background` (counting it),
    /// or gives it back to be translated here: when not `background`, or
    /// when the translator turns out to be synchronous (it is then asked
    /// no more).
    fn submit(&mut self, job: TranslationJob, background: bool) -> Option<TranslationJob> {
        if !background {
            return Some(job);
        }
        match self.translator.submit(job) {
            Ok(()) => {
                self.next_ticket += 1;
                self.submitted += 1;
                None
            }
            Err(job) => {
                self.sync = true;
                Some(job)
            }
        }
    }

    /// Records `region` under its `TierSlot`'s address. Dropped regions'
    /// entries go whenever the map has doubled since it was last pruned
    /// (a slot's address is reused only after its region is dropped, and
    /// then replaced here).
    fn note_tiered(&mut self, slot: usize, region: &Arc<Region>) {
        self.tiered.insert(slot, Arc::downgrade(region));
        if self.tiered.len() > 2 * self.tiered_pruned.max(1024) {
            self.tiered.retain(|_, r| r.strong_count() > 0);
            self.tiered_pruned = self.tiered.len();
        }
    }

    /// Makes `region`'s quickly compiled code call `native`, its optimised
    /// translation, from now on (when both are of the current generation).
    fn install_optimized(&mut self, region: Option<Arc<Region>>, native: Option<NativeBlock>) {
        let generation = self.translator.generation();
        let (Some(region), Some(native)) = (region, native) else { return };
        if native.generation != generation || !region.installed.get().is_some_and(|i| i.is_some_and(|q| q.generation == generation)) {
            self.discarded += 1;
            return;
        }
        region.optimized.entry.store(native.entry as usize, Ordering::Release);
        self.optimized += 1;
    }
}

impl Interpreter {
    /// Attaches a translator: hot blocks run as native code from now on.
    pub fn set_translator(&mut self, translator: Box<dyn BlockTranslator>) {
        self.tier = Some(Tier::new(translator));
    }

    /// Whether hot blocks are translated with the warm blocks they reach in
    /// their page (the default) or one at a time.
    pub fn set_jit_regions(&mut self, regions: bool) {
        if let Some(t) = &mut self.tier {
            t.regions = regions;
        }
    }

    /// Sets how many runs make a block hot (0: translate at first sight).
    pub fn set_jit_threshold(&mut self, threshold: u32) {
        if let Some(t) = &mut self.tier {
            t.threshold = threshold;
        }
    }

    /// Whether native code may run the whole block now: no instruction
    /// limit (none at all for a region of several blocks), no alignment checks, no debug breakpoints, 64-bit mode.
    fn native_allowed(&self, block: &Block, max: usize) -> bool {
        use crate::cpu::flags;
        // A region may loop: it runs only without an instruction limit.
        let multi = block.region.get().is_some_and(|r| r.blocks.len() > 1);
        (if multi { max == usize::MAX } else { max >= block.entries.len() })
            && self.s.dr[7] & 0xff == 0
            && !(self.s.cr0 & (1 << 18) != 0 && self.s.rflags & flags::AC != 0 && self.s.cpl() == 3)
            && self.in_64bit_mode()
    }

    /// Frees translated code at a block boundary if asked to, and
    /// installs finished background translations.
    pub(crate) fn tier_boundary(&mut self) {
        let Some(tier) = &mut self.tier else { return };
        if (!tier.queued.is_empty() || !tier.optimizing.is_empty()) && tier.results.as_ref().is_none_or(|f| f.load(Ordering::Acquire)) {
            tier.install_finished();
            tier.flush_pending |= tier.translator.wants_flush();
        }
        if tier.flush_pending {
            tier.flush_pending = false;
            self.code.clear();
            self.code.bury();
            if let Some(tier) = &mut self.tier {
                // Every block is dropped: results still in flight are of
                // the old generation and will be discarded.
                tier.queued.clear();
                tier.covered.clear();
                tier.optimizing.clear();
                tier.tiered.clear();
                tier.translator.flush();
            }
        }
    }

    /// The native code to run `block` with now, translating it if it just
    /// became hot (or queueing it for the compiler thread); `None` when it
    /// must be interpreted.
    pub(crate) fn native_for(&mut self, block: &Arc<Block>, max: usize) -> Option<NativeBlock> {
        if block.next_page != 0 {
            // Across a page boundary: interpreted (see `Block::next_page`).
            return None;
        }
        let tier = self.tier.as_mut()?;
        let native = match block.native.get() {
            Some(native) => (*native)?,
            None => {
                // Only this vCPU's thread counts its blocks' runs: a load
                // and a store, not a locked read-modify-write (a twentieth
                // of the dispatcher's time on cold code).
                let runs = block.runs.load(Ordering::Relaxed);
                block.runs.store(runs.saturating_add(1), Ordering::Relaxed);
                if runs < tier.threshold {
                    // A block that a translated region holds as an entry
                    // need not wait to be hot: that code exists. Looked
                    // for once, early, not on every interpreted run.
                    if runs == EARLY_LOOK && tier.regions {
                        if let Holding::Entry(native) = self.adopt_held_entry(block) {
                            return self.runnable(block, native, max);
                        }
                    }
                    return None;
                }
                let key = Arc::as_ptr(block) as usize;
                let background = !tier.sync && tier.threshold > 0;
                if background {
                    if let Some((_, weak)) = tier.queued.get(&key) {
                        if weak.strong_count() > 0 {
                            // In flight: interpret meanwhile.
                            tier.waiting = true;
                            return None;
                        }
                    }
                }
                // Inside a region already translated (or being translated):
                // enter its code there (or wait for it), or, where the
                // region only continues another block into this one,
                // translate this block alone.
                let mut alone = false;
                match self.adopt_held_entry(block) {
                    Holding::Entry(native) => return self.runnable(block, native, max),
                    Holding::Pending => {
                        if let Some(tier) = self.tier.as_mut() {
                            tier.waiting = true;
                        }
                        return None;
                    }
                    Holding::Inside => alone = true,
                    Holding::No => {}
                }
                let bitness = self.bitness();
                let long_mode = self.in_64bit_mode();
                let tier = self.tier.as_mut()?;
                // Blocks that ran a sixteenth as often as the hot one join its region.
                let warm = if tier.regions { tier.threshold / 16 } else { u32::MAX };
                let region = Arc::new(self.form_region(block, warm, if alone { 1 } else { super::region::MAX_BLOCKS }));
                let tier = self.tier.as_mut()?;
                if region.host_page != 0 {
                    for b in region.blocks.iter() {
                        tier.covered.insert(region.host_page + (b.rip & 0xfff), Arc::downgrade(&region));
                    }
                }
                let region = block.region.get_or_init(|| region);
                let job = self.translation_job(region, block.rip, bitness, long_mode, false)?;
                let tier = self.tier.as_mut()?;
                let ticket = job.ticket;
                tier.note_tiered(job.optimized_slot, region);
                let Some(job) = tier.submit(job, background) else {
                    tier.queued.insert(key, (ticket, Arc::downgrade(block)));
                    tier.waiting = true;
                    return None;
                };
                let native = tier.translator.translate(&job.request());
                tier.flush_pending |= tier.translator.wants_flush();
                if native.is_some() {
                    tier.compiled += 1;
                } else {
                    tier.refused += 1;
                }
                let _ = block.native.set(native);
                if let Some(r) = block.region.get() {
                    let _ = r.installed.set(native);
                }
                native?
            }
        };
        self.runnable(block, native, max)
    }

    /// `native` if it may run `block` now: of the current generation and
    /// allowed (see `native_allowed`).
    fn runnable(&self, block: &Block, native: NativeBlock, max: usize) -> Option<NativeBlock> {
        let generation = self.tier.as_ref()?.translator.generation();
        if native.generation != generation || !self.native_allowed(block, max) {
            return None;
        }
        Some(native)
    }

    /// What the live region holding `block` can do for it; where it has
    /// an entry there, the block takes that code (and the region).
    fn adopt_held_entry(&self, block: &Block) -> Holding {
        let Some(region) = self.region_holding(block) else { return Holding::No };
        let holding = region.holding(block.rip, &block.entries);
        if let Holding::Entry(native) = holding {
            let _ = block.region.set(region);
            let _ = block.native.set(Some(native));
        }
        holding
    }

    /// The live region holding `block` (by its host address), if any.
    fn region_holding(&self, block: &Block) -> Option<Arc<Region>> {
        if !self.in_64bit_mode() {
            return None;
        }
        let rip = block.rip;
        let host = self.tlb.lookup(rip & !0xfff, crate::mmu::Access::Execute, self.s.cpl() == 3)?;
        self.tier.as_ref()?.covered.get(&(host as u64 + (rip & 0xfff)))?.upgrade()
    }

    /// Records `block` (cached, native, found at the current RIP under the
    /// current TLB epoch and CPL) in the hop table.
    fn hop_insert(&mut self, block: &Block, entry: usize, index: u32) {
        let (rip, cpl) = (self.s.rip, self.s.cpl());
        let which = self.tlb.code_epoch(rip, cpl == 3);
        let (epoch, epoch_offset) = (self.tlb.epochs[which], 8 * which as u32);
        let Some(tier) = &mut self.tier else { return };
        let h = &mut tier.hops[hop_index(rip)];
        let addr = std::ptr::from_ref(block) as usize;
        if h.rip == rip && h.epoch == epoch && h.epoch_offset == epoch_offset && h.cpl == cpl && h.block == addr && h.live.is_some() {
            return;
        }
        // The pointer is taken from the Arc stored beside it, which keeps
        // it valid for as long as the entry holds it.
        let live = Arc::clone(&block.live);
        *h = Hop { rip, epoch, epoch_offset, cpl, live_ptr: Arc::as_ptr(&live) as usize, block: addr, entry, index, live: Some(live) };
        // Native code runs only in 64-bit mode (CS base 0), and a cached
        // block lies within one page.
        self.tlb.note_derived(rip);
    }

    /// The live native block recorded for the current RIP, if its
    /// mapping still holds.
    fn hop_lookup(&self, cpl: u8) -> Option<(*const Block, usize, u32)> {
        let rip = self.s.rip;
        let h = &self.tier.as_ref()?.hops[hop_index(rip)];
        let epoch = self.tlb.epochs.get(h.epoch_offset as usize / 8).copied();
        if h.rip != rip || Some(h.epoch) != epoch || h.cpl != cpl || !h.live.as_ref()?.load(Ordering::Acquire) {
            return None;
        }
        Some((h.block as *const Block, h.entry, h.index))
    }

    /// Whether a chain must return to the dispatcher now: a stop was
    /// requested or an interrupt may be deliverable.
    fn chain_interrupted(&self) -> bool {
        self.control.stop_requested() || (self.s.rflags & crate::cpu::flags::IF != 0 && self.interrupt_ready())
    }

    /// Runs `block`'s native code and the blocks it chains to. `block` is
    /// alive (held by the caller, or cached: dropped blocks wait in the
    /// graveyard until the next dispatcher entry); `cached` says whether
    /// links and the hop table may name it.
    pub(crate) fn run_native(&mut self, block: *const Block, native: NativeBlock, max: usize, cached: bool) -> super::fault::R<()> {
        let cpl = self.s.cpl();
        if cached {
            // SAFETY: the caller keeps `block` alive for this call.
            self.hop_insert(unsafe { &*block }, native.entry as usize, native.index);
        }
        let user = usize::from(cpl == 3);
        // No chaining under an instruction limit (single steps).
        let budget = if max == usize::MAX { CHAIN_BUDGET } else { 0 };
        let pending: *const AtomicBool = match &self.intr {
            Some(i) => Arc::as_ptr(&i.pending),
            None => &raw const DEAD,
        };
        let stopping: *const AtomicBool = self.control.stop_flag();
        // Native blocks exist only with a tier; its hop table (a boxed
        // slice, never reallocated while the tier lives) is probed by
        // native code at indirect exits.
        let Some(hops) = self.tier.as_ref().map(|t| t.hops.as_ptr()) else {
            return Err(Fault::stop(crate::control::StopReason::Error("jit: native code without a tier".into())));
        };
        let this: *mut Interpreter = self;
        // From here on the interpreter is used only through `this` (and
        // native code and helpers reach it through the frame), so no
        // reference outlives a call into native code.
        let fresh = JitFrame {
            // SAFETY: `this` is a live exclusive reference turned raw; the
            // fields' addresses are taken without creating references.
            state: unsafe { &raw mut (*this).s },
            // SAFETY: as above; the TLB's boxes are never reallocated.
            tlb: unsafe { (*this).tlb.sets[user].as_ptr() },
            identity: match user {
                // SAFETY: as for `state`: a field address, no reference made.
                0 => unsafe { &raw const (*this).tlb.identity },
                _ => &raw const crate::mmu::NO_IDENTITY_PAGES,
            },
            interp: this,
            block: block.cast(),
            hops,
            // SAFETY: as for `state`: a field address, no reference made.
            epoch: unsafe { &raw const (*this).tlb.epochs }.cast(),
            cpl: u32::from(cpl),
            budget,
            pending,
            stopping,
            entry_index: native.index,
            ..JitFrame::idle()
        };
        // SAFETY: as for `state`; the frame is the interpreter's own field.
        let frame: *mut JitFrame = unsafe { &raw mut (*this).frame };
        // SAFETY: `frame` is valid for writes (see above) and nothing else
        // refers to it.
        unsafe { frame.write(fresh) };
        let mut entry = native.entry;
        let (mut runs, mut chained, mut hopped, mut linked, mut retired) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let code = loop {
            // SAFETY: (so for every access to `*frame` in this loop) the
            // frame is the interpreter's field, used only through this
            // pointer here and by native code and helpers during the call.
            unsafe {
                (*frame).exit_link = std::ptr::null();
                (*frame).retired = 0;
            }
            // SAFETY: `entry` is native code of the current generation for
            // the block in `frame.block`, which is alive: the first came
            // from the caller, later ones from a link or hop whose `live`
            // flag was set (blocks are marked dead before the cache drops
            // them, and freed only at the next dispatcher entry; a module
            // is freed only after every block was dropped; so for the
            // entries native code tail-calls). It touches the state only
            // through the frame. Native code is compiled for Cranelift's
            // `tail` convention, which for this signature (one pointer in,
            // an i32 out, nothing on the stack) is System V's: the
            // argument in RDI, the result in RAX, the same callee-saved
            // registers, a plain `ret` (see `jit`'s `translate::chain_sig`).
            let code = unsafe { entry(frame) };
            runs += 1;
            // SAFETY: as above.
            let f = unsafe { &mut *frame };
            retired += f.retired;
            if (code != exit::CHAIN && code != exit::LOOKUP) || f.budget == 0 {
                break code;
            }
            f.budget -= 1;
            let (next_entry, exit_link) = (f.next, f.exit_link);
            // SAFETY: native code has returned; nothing else uses the
            // interpreter until the next call (`f` is not used past here).
            let cpu = unsafe { &*this };
            if cpu.chain_interrupted() {
                break code;
            }
            if code == exit::CHAIN {
                // SAFETY: native code stored the entry of a live link,
                // which a `NativeBlock::entry` was turned into.
                entry = unsafe { std::mem::transmute::<usize, unsafe extern "C" fn(*mut JitFrame) -> u32>(next_entry) };
                chained += 1;
                continue;
            }
            let Some((target, next, index)) = cpu.hop_lookup(cpl) else { break code };
            if !exit_link.is_null() {
                // SAFETY: native code names a link of the block it just
                // ran, which is alive (see above), and a link exit's
                // target is in that block's page, so the target found for
                // this RIP is the one the link must always lead to while
                // the source runs (it runs only where its page maps there).
                unsafe { (*exit_link).link(&*target, next, index) };
                linked += 1;
            }
            // SAFETY: as above.
            unsafe {
                (*frame).block = target.cast();
                (*frame).entry_index = index;
            }
            // SAFETY: as for CHAIN: `next` is a live block's entry.
            entry = unsafe { std::mem::transmute::<usize, unsafe extern "C" fn(*mut JitFrame) -> u32>(next) };
            hopped += 1;
        };
        self.retired += retired;
        // SAFETY: native code has returned.
        let (hot_loop, tail_chained) = unsafe { ((*frame).hot_loop, (*frame).tail_chained) };
        if hot_loop != 0 {
            self.optimize_hot_loop(hot_loop);
        }
        if let Some(tier) = &mut self.tier {
            tier.native_retired += retired;
            tier.native_runs += runs + tail_chained;
            tier.dispatched += 1;
            tier.chained += chained + tail_chained;
            tier.hopped += hopped;
            tier.linked += linked;
        }
        if code == exit::INTERPRET {
            self.interpret_next = true;
            if let Some(tier) = &mut self.tier {
                tier.writes_interpreted += 1;
            }
        }
        if code == exit::MISS {
            self.interpret_next = true;
            // SAFETY: the block that last ran is alive (see above).
            let block = unsafe { &*(*frame).block.cast::<Block>() };
            if let Some(tier) = &mut self.tier {
                tier.misses_interpreted += 1;
                if block.region.get().is_some_and(|r| r.note_miss_exit(self.retired)) {
                    tier.miss_helpers_again += 1;
                }
            }
        }
        if code == exit::FAULT {
            return Err(self.jit_fault.take().unwrap_or_else(|| Fault::stop(crate::control::StopReason::Error("jit: a fault without its exception".into()))));
        }
        Ok(())
    }

    /// The job that translates `region` entered at `rip` (see
    /// [`Region::job`]) under the interpreter's state now: with its writes
    /// journalled under lockstep, and its loads looking at identity pages
    /// where that is worth it. `None` without a tier.
    fn translation_job(&self, region: &Region, rip: u64, bitness: u32, long_mode: bool, optimize: bool) -> Option<TranslationJob> {
        let ticket = self.tier.as_ref()?.next_ticket;
        Some(region.job(ticket, rip, bitness, long_mode, self.lockstep_on(), optimize, self.identity_pages_usable()))
    }

    /// Whether code translated now may read identity-mapped pages past the
    /// TLB: only supervisor code uses the set they belong to, and code
    /// asked for while the pages are few or none (a kernel's own address
    /// space) does without the look that would mostly fail.
    fn identity_pages_usable(&self) -> bool {
        self.s.cpl() != 3 && self.tlb.identity.worth_a_look()
    }

    /// Asks for the optimised translation of the region whose first-tier
    /// code reported its loop hot, through its `TierSlot` at `slot`.
    fn optimize_hot_loop(&mut self, slot: usize) {
        let Some(region) = self.tier.as_ref().and_then(|t| t.tiered.get(&slot)).and_then(Weak::upgrade) else { return };
        if !region.installed.get().is_some_and(|i| i.is_some_and(|n| n.tiered)) || region.optimizing.swap(true, Ordering::Relaxed) {
            return;
        }
        // First-tier code runs only in 64-bit mode.
        let Some(job) = self.translation_job(&region, region.blocks.first().map_or(0, |b| b.rip), 64, true, true) else { return };
        let Some(tier) = self.tier.as_mut() else { return };
        let ticket = job.ticket;
        let background = !tier.sync;
        let Some(job) = tier.submit(job, background) else {
            tier.optimizing.insert(ticket, Arc::downgrade(&region));
            return;
        };
        let native = tier.translator.translate(&job.request());
        tier.flush_pending |= tier.translator.wants_flush();
        tier.install_optimized(Some(region), native);
    }

    /// The tier's counters for `--stats`.
    pub(crate) fn tier_stats(&self) -> Vec<(std::borrow::Cow<'static, str>, u64)> {
        let Some(tier) = &self.tier else { return Vec::new() };
        let mut v: Vec<(std::borrow::Cow<'static, str>, u64)> = vec![
            ("jit: blocks compiled".into(), tier.compiled),
            ("jit: blocks refused".into(), tier.refused),
            ("jit: native block runs".into(), tier.native_runs),
            ("jit: dispatcher entries".into(), tier.dispatched),
            ("jit: writes left to the interpreter".into(), tier.writes_interpreted),
            ("jit: TLB misses left to the interpreter".into(), tier.misses_interpreted),
            ("jit: loops compiled again for their misses".into(), tier.miss_helpers_again),
            ("jit: chained runs".into(), tier.chained),
            ("jit: hop-table runs".into(), tier.hopped),
            ("jit: links made".into(), tier.linked),
            ("jit: loops optimized".into(), tier.optimized),
            ("jit: fallbacks".into(), tier.fallbacks),
            ("jit: instructions native".into(), tier.native_retired),
            ("jit: instructions interpreted".into(), self.retired.saturating_sub(tier.native_retired)),
            ("jit: instructions interpreted awaiting code".into(), tier.waiting_retired),
            ("jit: background jobs".into(), tier.submitted),
            ("jit: background installed".into(), tier.installed),
            ("jit: background discarded".into(), tier.discarded),
        ];
        let mut by: Vec<(usize, u64)> = tier.fallback_by_mnemonic.iter().copied().enumerate().filter(|&(_, n)| n > 0).collect();
        by.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        let names: Vec<Mnemonic> = Mnemonic::values().collect();
        for (m, n) in by.into_iter().take(10) {
            if let Some(name) = names.get(m) {
                v.push((format!("jit: fallback {name:?}").into(), n));
            }
        }
        for (name, n) in tier.translator.stats() {
            v.push((format!("jit: {name}").into(), n));
        }
        v
    }
}
